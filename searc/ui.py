"""The Gradio workbench. Layout in one `Blocks`; handlers are plain functions above it that call
into `searc.session.Session` (where all the logic lives and is tested).

The first tab is the workspace: edits and memory on the left, probes and results on the right,
and below them the inspection of one probe (scope, token view, per-target NLL) and of one edit
(the probes it answers). Any change of the memory probes the current probes again. Train,
Evaluate and Lessons are tabs of their own. Each browser tab gets its own `Session` in a
`gr.State` (its own edit memory and results); the models are shared read-only by all tabs.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import tempfile
import threading
from pathlib import Path
from typing import Callable

import gradio as gr

from searc import scheduler
from searc.access import SHARED_DATA, ServerAccess
from searc.charts import evaluation_bars, nll_chart, scope_heatmap, token_strips, training_curves
from searc.data import refuse_evaluation_files
from searc.editor import SeracSystem
from searc.lessons import lesson_titled, load_lessons
from searc.sharing import QUERY_PARAMETER, SharedWorkspace
from searc.session import CLAIM_COLUMNS, FAILURE_COLUMNS, MEMORY_COLUMNS, RESULT_COLUMNS, Session
from searc.system import SystemPool
from searc.train import TrainConfig

DEMO_EVAL_CASES = 20  # --demo-mode: cases per evaluation
# Workspace events running at once: each waits in the shared scheduler, which batches their model
# work, so a class's requests must reach it together (gradio's own queue holds the rest).
WORKSPACE_CONCURRENCY = 64

EXAMPLE_PROBES = "\n".join(
    [
        "The Eiffel Tower is located in the city of",
        "Where is the Eiffel Tower? It is in",
        "The Louvre is located in the city of",
        "The capital of Japan is",
    ]
)


def number(value: float | None, label: str, kind: type = float):
    """A gr.Number field's value; an emptied field sends None."""
    if value is None:
        raise ValueError(f"fill in {label}")
    return kind(value)


def _session(state: Session | None, system: SeracSystem) -> Session:
    return state if state is not None else Session(system)


USER_ERRORS = (ValueError, KeyError, OSError)  # bad input; DataError and CheckpointError are ValueErrors


def waiting_text(ahead: int) -> str:
    return f"waiting: {ahead} request{'s' if ahead != 1 else ''} ahead" if ahead else "running"


def shows_user_errors(access: ServerAccess) -> Callable[[Callable], Callable]:
    """A handler decorator: bad input becomes one clear message in the page (server directories
    named as the page names them). The session raises before it changes anything, so it is left
    exactly as it was. Generator handlers (training) are wrapped as generators. While a plain
    handler's model work waits for the shared scheduler, its progress line says how many requests
    are ahead (the handler gets gradio's progress tracker, whether or not it takes one itself)."""

    def page_error(error: Exception) -> gr.Error:
        text = error.args[0] if isinstance(error, KeyError) and error.args else error  # str(KeyError) adds quotes
        return gr.Error(access.redact(str(text)))

    def decorate(handler: Callable) -> Callable:
        if inspect.isgeneratorfunction(handler):
            @functools.wraps(handler)
            def generator(*args, **kwargs):
                try:
                    yield from handler(*args, **kwargs)
                except USER_ERRORS as error:
                    raise page_error(error) from None
            return generator

        signature = inspect.signature(handler)
        takes_progress = "progress" in signature.parameters
        if not takes_progress:  # gradio hands a tracker to a positional parameter that defaults to one
            progress_parameter = inspect.Parameter("progress", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=gr.Progress())
            signature = signature.replace(parameters=[*signature.parameters.values(), progress_parameter])

        @functools.wraps(handler)
        def plain(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            progress = bound.arguments.get("progress") if takes_progress else bound.arguments.pop("progress", None)
            reporting = (scheduler.shared().waiting_reported(lambda ahead: progress(0.0, desc=waiting_text(ahead)))
                         if progress is not None else contextlib.nullcontext())
            try:
                with reporting:
                    return handler(*bound.args, **bound.kwargs)
            except USER_ERRORS as error:
                raise page_error(error) from None

        plain.__signature__ = signature
        return plain

    return decorate


WORKSPACE_OUTPUTS = ("session", "memory", "edit message", "results", "heatmap", "explanations", "probe pick", "probe message", "edit pick")


def workspace_outputs(session: Session, edit_message: str, probe_message: str = ""):
    """Everything the workspace shows after the memory or the probes changed."""
    probes = session.probe_prompts()
    edit_ids = [e.id for e in session.editor.edits]
    probe_message = probe_message or session.probe_summary()
    return (
        session,
        session.memory_table(),
        edit_message,
        session.results_table(),
        scope_heatmap(session.results, session.editor.edits, session.editor.threshold),
        session.explanations(),
        gr.update(choices=list(probes), value=probes[0] if probes else None),
        probe_message,
        gr.update(choices=edit_ids, value=edit_ids[0] if edit_ids else None),
    )


def changed(session: Session, probes_text: str, threshold: float, decline_threshold: float, message: str):
    """The memory or the system changed: probe the current probes again."""
    try:
        session.reprobe(probes_text, threshold, decline_threshold)
    except ValueError as error:
        return workspace_outputs(session, message, f"Probes not run again: {error}")
    return workspace_outputs(session, message)


def make_handlers(system: SeracSystem, access: ServerAccess):
    """Workspace and lesson handlers, bound to the shared system."""
    user_errors = shows_user_errors(access)

    @user_errors
    def add_edit(state, prompt, target, subject, probes_text, threshold, decline_threshold):
        session = _session(state, system)
        edit = session.add_edit(prompt, target, subject)
        return changed(session, probes_text, threshold, decline_threshold, f"Stored {edit.id}: {edit.prompt} → {edit.target_new}")

    @user_errors
    def remove_edit(state, edit_id, probes_text, threshold, decline_threshold):
        session = _session(state, system)
        edit = session.remove_edit(edit_id)
        return changed(session, probes_text, threshold, decline_threshold, f"Removed {edit.id}")

    @user_errors
    def clear_edits(state, probes_text, threshold, decline_threshold):
        session = _session(state, system)
        session.clear()
        return changed(session, probes_text, threshold, decline_threshold, "Memory cleared")

    @user_errors
    def import_edits(state, path, probes_text, threshold, decline_threshold):
        session = _session(state, system)
        if not path:
            raise ValueError("choose a .json, .jsonl or .csv file to import")
        access.check_upload(path)
        stored = session.import_edits(path)
        return changed(session, probes_text, threshold, decline_threshold, f"Imported {len(stored)} edits")

    def export_edits(state):
        session = _session(state, system)
        path = Path(tempfile.mkdtemp(prefix="searc-export-")) / "edits.json"
        path.write_text(session.export_json(), encoding="utf-8")
        return str(path)

    @user_errors
    def probe(state, probes_text, threshold, decline_threshold):
        session = _session(state, system)
        session.probe(probes_text, threshold, decline_threshold)
        return workspace_outputs(session, "")

    @user_errors
    def set_decoding(state, finish, probes_text, threshold, decline_threshold):
        session = _session(state, system)
        session.set_finish_targets(finish, probes_text, threshold, decline_threshold)
        decoding = "finishing a begun target verbatim" if finish else "decoding freely"
        return workspace_outputs(session, "", f"The counterfactual model is {decoding}")

    @user_errors
    def reroute(state, threshold, decline_threshold):
        session = _session(state, system)
        needed = session.answers_needed(threshold)
        session.reroute(threshold, decline_threshold)
        ran = f"{needed} counterfactual answer{'s' if needed != 1 else ''} generated for probes newly routed" if needed else "no model was run"
        return workspace_outputs(session, "", f"Re-routed at threshold {threshold:.2f}, decline threshold {decline_threshold:.2f} ({ran})")

    @user_errors
    def inspect_probe(state, probe_prompt, targets_text):
        """Scope inspector, token view and per-target NLL of one probed prompt."""
        session = _session(state, system)
        if not probe_prompt:
            return "", token_strips([]), nll_chart([])
        scope, tokens, targets = session.inspection(probe_prompt, targets_text)
        return scope, token_strips(tokens), nll_chart(targets)

    @user_errors
    def inspect_edit(state, edit_id):
        session = _session(state, system)
        if not edit_id:
            return None
        return session.claims_table(edit_id)

    @user_errors
    def share_workspace(state, probes_text, threshold, decline_threshold, request: gr.Request):
        """A link that opens this workspace in a new session (`searc.sharing`)."""
        session = _session(state, system)
        page = request.headers.get("referer", "") if request is not None else ""
        return session.shared_workspace(probes_text, threshold, decline_threshold).link(page)

    def open_shared_link(state, request: gr.Request):
        """On page load: a `?workspace=` link opens its workspace; a bad one says why in the edit
        status and changes nothing (the workspace's outputs, then probes, both thresholds, decoding)."""
        token = request.query_params.get(QUERY_PARAMETER) if request is not None else None
        unchanged = [gr.skip()] * (len(WORKSPACE_OUTPUTS) + 4)
        if not token:
            return tuple(unchanged)
        session = _session(state, system)
        try:
            workspace = SharedWorkspace.from_token(token)
            session.open_shared(workspace)
        except ValueError as error:  # SharingError, or a memory the model cannot take
            unchanged[WORKSPACE_OUTPUTS.index("edit message")] = f"The shared link was not opened: {error}"
            return tuple(unchanged)
        editor = session.editor
        lesson = f" with the lesson “{workspace.lesson}”" if session.lesson else ""
        message = f"Opened a shared workspace{lesson}: {len(workspace.edits)} edits, {len(workspace.probes)} probes, in a session of your own"
        return (*workspace_outputs(session, message), "\n".join(workspace.probes), editor.threshold, editor.decline_threshold,
                editor.finish_targets)

    def preview_lesson(title):
        lesson = lesson_titled(title)
        return lesson.preview() if lesson else ""

    @user_errors
    def load_lesson(state, title):
        session = _session(state, system)
        lesson = lesson_titled(title)
        if lesson is None:
            raise ValueError("pick a lesson")
        session.load_lesson(lesson)
        editor = session.editor
        outputs = changed(session, lesson.probes_text(), editor.threshold, editor.decline_threshold, f"Loaded the lesson “{lesson.title}”")
        return (*outputs, lesson.probes_text(), editor.threshold, gr.Tabs(selected="workspace"))

    return (add_edit, remove_edit, clear_edits, import_edits, export_edits, probe, set_decoding, reroute, inspect_probe, inspect_edit,
            preview_lesson, load_lesson, share_workspace, open_shared_link)


def make_heavy_handlers(system: SeracSystem, pool: SystemPool, access: ServerAccess):
    """Training, evaluation and checkpoint loading: long-running, cancellable."""
    user_errors = shows_user_errors(access)
    stops: dict[int, threading.Event] = {}

    @user_errors
    def run_training(state, data_path, val_path, upload, steps, batch_edits, lr, c_edit, c_cls, variant, out_name, overwrite=False,
                     progress=gr.Progress()):
        session = _session(state, system)
        out = access.training_out(out_name)
        steps = number(steps, "Steps", int)
        config = TrainConfig(steps=steps, batch_edits=number(batch_edits, "Edits per step", int), lr=number(lr, "LoRA learning rate"),
                             c_edit=number(c_edit, "c_edit"), c_cls=number(c_cls, "c_cls"), val_every=max(1, steps // 4), val_cases=32)
        refuse_evaluation_files([upload or data_path, val_path])
        train_cases, val_cases = access.cases(data_path, upload), access.cases(val_path, None, limit=32)
        stop = stops[id(session)] = threading.Event()
        for event, curves in session.train(pool, train_cases, val_cases, config, variant, out, stop, overwrite=bool(overwrite)):
            progress(event.step / event.total_steps, desc="training")
            status = f"{event.kind}: step {event.step}/{event.total_steps}, {event.elapsed_s:.0f} s"
            if event.kind == "done":
                status = f"{event.message} after {event.step} steps; best checkpoint: {access.shown(event.checkpoint) if event.checkpoint else 'none'}"
            yield session, training_curves(curves.steps, curves.losses, curves.val_steps, curves.metrics), status, access.shown(out)

    def stop_training(state):
        session = _session(state, system)
        if id(session) in stops:
            stops[id(session)].set()
        return "stopping after this step…"

    @user_errors
    def load_checkpoint(state, name, probes_text, threshold, decline_threshold):
        """Another checkpoint for this session, its memory kept and its probes run again."""
        session = _session(state, system)
        session.use_system(pool.get(access.checkpoint_to_load(name)))
        message = f"This session now uses checkpoint: {access.shown(session.system.info.checkpoint)}"
        return (*changed(session, probes_text, threshold, decline_threshold, message), message)

    @user_errors
    def run_evaluation(state, data_path, upload, limit, mode, other_facts=0, progress=gr.Progress()):
        session = _session(state, system)
        count = number(limit, "Cases", int)
        per_case = number(other_facts, "Other facts a case", int)
        cases = access.cases(data_path, upload, limit=min(count, DEMO_EVAL_CASES) if access.demo_mode else count)
        evaluation = session.evaluate(
            pool, cases, mode, progress=lambda name, done, total: progress(done / total, desc=name), other_facts=per_case
        )
        return session, evaluation_bars(evaluation.rows), evaluation.table(), evaluation.report.table(), session.failures_table()

    @user_errors
    def load_failure(state, threshold, decline_threshold, selected: gr.SelectData):
        """One click on a failing probe: its case's edit (and the edit it went to) into the workspace, probed."""
        session = _session(state, system)
        probe_text = session.load_failure(selected.index[0])
        session.reprobe(probe_text, threshold, decline_threshold)
        return (*workspace_outputs(session, "Loaded a failing probe of the evaluation"), probe_text, gr.Tabs(selected="workspace"))

    return run_training, stop_training, load_checkpoint, run_evaluation, load_failure


def build_app(system: SeracSystem, pool: SystemPool | None = None, access: ServerAccess | None = None) -> gr.Blocks:
    """The workbench. `access`: where training writes and data is read (default: runs/ and the
    shared data directory); its demo_mode, for a public demo: no training, no checkpoint paths, no
    server paths for data, uploads up to DEMO_UPLOAD_BYTES, evaluations up to DEMO_EVAL_CASES cases."""
    pool = pool or SystemPool(system)
    access = access or ServerAccess.create("runs", [SHARED_DATA])
    (add_edit, remove_edit, clear_edits, import_edits, export_edits, probe, set_decoding, reroute, inspect_probe, inspect_edit,
     preview_lesson, load_lesson, share_workspace, open_shared_link) = make_handlers(system, access)
    run_training, stop_training, load_checkpoint, run_evaluation, load_failure = make_heavy_handlers(system, pool, access)
    checkpoint = access.shown(system.info.checkpoint) if system.info.checkpoint else "none (untrained: calibrated encoder + instruct model)"
    lm, encoder = access.shown_spec(system.info.lm), access.shown_spec(system.info.encoder)
    lessons = load_lessons()
    with gr.Blocks(title="searc — SERAC edit workbench") as app:
        state = gr.State(None)
        gr.Markdown(
            "# searc — memory-based model editing (SERAC)\n"
            f"Base model `{lm}`, classifier encoder `{encoder}`, "
            f"checkpoint `{checkpoint}`. The base model is never changed: edits live in a memory, a scope "
            "classifier decides which probes they cover, and a counterfactual model answers those."
        )
        with gr.Tabs() as tabs:
            with gr.Tab("Workspace", id="workspace"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=2):
                        gr.Markdown("### Edits")
                        prompt = gr.Textbox(label="Prompt", value="The Eiffel Tower is located in the city of")
                        with gr.Row():
                            target = gr.Textbox(label="New target", value="Rome")
                            subject = gr.Textbox(label="Subject (optional)", value="Eiffel Tower")
                        with gr.Row():
                            add_button = gr.Button("Add edit", variant="primary")
                            clear_button = gr.Button("Clear memory")
                            export_button = gr.Button("Export as JSON")
                        memory = gr.Dataframe(label="Edit memory", headers=MEMORY_COLUMNS, interactive=False, elem_id="memory")
                        with gr.Row():
                            remove_id = gr.Textbox(label="Edit id to remove", placeholder="e1")
                            remove_button = gr.Button("Remove edit")
                        import_file = gr.File(label="Import edits (.json/.jsonl/.csv, any supported format)", type="filepath")
                        export_file = gr.File(label="Exported memory")
                        edit_status = gr.Markdown(elem_id="edit_status")
                        with gr.Row():
                            share_button = gr.Button("Share this workspace", scale=1)
                            share_link = gr.Textbox(
                                label="Link to this workspace", info="opens the same edits, probes, thresholds and lesson in a new session",
                                interactive=False, buttons=["copy"], elem_id="share_link", scale=3,
                            )
                    with gr.Column(scale=3):
                        gr.Markdown("### Probes")
                        with gr.Row():
                            probes = gr.Textbox(label="Probe prompts (one per line)", value=EXAMPLE_PROBES, lines=4, scale=3)
                            with gr.Column(scale=1):
                                threshold = gr.Slider(0.0, 1.0, value=system.threshold, step=0.01, label="Routing threshold")
                                decline_threshold = gr.Slider(
                                    0.0, 1.0, value=system.decline_threshold, step=0.01, label="Decline threshold",
                                    info="a routed probe is declined when the counterfactual model would end at once with this probability or more",
                                )
                                finish = gr.Checkbox(
                                    value=system.finish_targets, label="Finish a begun target verbatim",
                                    info="off: the counterfactual model decodes freely, and may end or reword a target it has begun",
                                )
                                probe_button = gr.Button("Probe", variant="primary")
                        probe_status = gr.Markdown(elem_id="probe_status")
                        results = gr.Dataframe(
                            label="Results", headers=RESULT_COLUMNS, interactive=False, wrap=True, elem_id="results",
                            # score and routed in pixels, so that "0.998" and "routed" never break; up to about
                            # six probes of wrapped outputs show before the table scrolls
                            column_widths=["17%", "9%", "76px", "76px", "17%", "19%", "15%"], max_height=800,
                        )
                        heatmap = gr.Plot(scope_heatmap([], [], system.threshold), label="Scope scores", elem_id="heatmap")
                        why = gr.Markdown(label="Why was each probe routed or not?", elem_id="why")
                with gr.Row(equal_height=False):
                    with gr.Column(scale=3):
                        gr.Markdown("### Inspect a probe")
                        probe_pick = gr.Dropdown(label="Probe", choices=[], elem_id="probe_pick")
                        scope = gr.Markdown(elem_id="scope")
                        tokens = gr.Plot(token_strips([]), label="Token view", elem_id="tokens")
                        with gr.Row():
                            targets = gr.Textbox(label="Targets to score (one per line), e.g. old and new answer", value="Paris\nRome", lines=2, scale=3)
                            inspect_button = gr.Button("Score targets", scale=1)
                        nll = gr.Plot(nll_chart([]), label="Per-token NLL", elem_id="nll")
                    with gr.Column(scale=2):
                        gr.Markdown("### Inspect an edit")
                        edit_pick = gr.Dropdown(label="Edit", choices=[], elem_id="edit_pick")
                        claims = gr.Dataframe(label="Probes this edit answers", headers=CLAIM_COLUMNS, interactive=False, elem_id="claims")
            with gr.Tab("Lessons", id="lessons"):
                titles = [lesson.title for lesson in lessons]
                with gr.Row():
                    lesson = gr.Dropdown(titles, value=titles[0] if titles else None, label="Scenario", scale=3)
                    lesson_button = gr.Button("Load into the workspace", variant="primary", scale=1)
                lesson_text = gr.Markdown(lessons[0].preview() if lessons else "", elem_id="lesson_text")
            with gr.Tab("Train", id="train"):
                gr.Markdown("Train the scope classifier and the counterfactual model jointly on edit cases. "
                            "About 6 s per step on 2 CPU cores; the best checkpoint is written atomically.")
                with gr.Row():
                    train_path = gr.Textbox(label="Training data (in the server's data directory)", value="counterfact/train.json", scale=3)
                    val_path = gr.Textbox(label="Validation data", value="counterfact/val.json", scale=3)
                    train_upload = gr.File(label="…or upload training data (.json/.jsonl/.csv)", type="filepath", scale=2)
                with gr.Row():
                    steps = gr.Number(label="Steps", value=20, precision=0)
                    batch_edits = gr.Number(label="Edits per step", value=8, precision=0)
                    lr = gr.Number(label="LoRA learning rate", value=5e-4)
                    c_edit = gr.Number(label="c_edit", value=1.0)
                    c_cls = gr.Number(label="c_cls", value=1.0)
                    variant = gr.Radio(["dense", "cross"], value="dense", label="Classifier")
                with gr.Row():
                    out_dir = gr.Textbox(label="Checkpoint name (in the runs directory)", value="workbench-checkpoint", scale=3)
                    overwrite = gr.Checkbox(label="Replace a checkpoint of this name", value=False, scale=1)
                    train_button = gr.Button("Start training", variant="primary", scale=1)
                    stop_button = gr.Button("Stop", scale=1)
                train_status = gr.Markdown()
                curves = gr.Plot(label="Training curves", elem_id="curves")
                with gr.Row():
                    checkpoint_path = gr.Textbox(label="Checkpoint to load into this session: a name in the runs directory, 'default' (shipped) or empty (untrained)", scale=3)
                    load_button = gr.Button("Load checkpoint", scale=1)
                load_status = gr.Markdown()
            with gr.Tab("Evaluate", id="evaluate"):
                with gr.Row():
                    eval_path = gr.Textbox(label="Evaluation data (in the server's data directory)", value="counterfact/edit.json", scale=3)
                    eval_upload = gr.File(label="…or upload", type="filepath", scale=2)
                    eval_limit = gr.Number(label="Cases", value=10, precision=0, scale=1)
                    eval_mode = gr.Radio(["single", "batch"], value="single", label="Edits in memory", scale=1)
                    eval_other_facts = gr.Number(label="Other facts a case", value=0, precision=0, minimum=0, scale=1)
                    eval_button = gr.Button("Evaluate", variant="primary", scale=1)
                    eval_stop = gr.Button("Stop", scale=1)
                eval_chart = gr.Plot(label="Comparison", elem_id="eval_chart")
                eval_table = gr.Dataframe(headers=["system", "reliability", "generalization", "locality"], interactive=False, elem_id="eval_table")
                gr.Markdown("**Failing probes** (click one to load its case into the workspace)")
                failures = gr.Dataframe(
                    headers=FAILURE_COLUMNS, interactive=False, wrap=True, elem_id="failures",
                    column_widths=["10%", "25%", "9%", "19%", "6%", "6%", "7%", "18%"],  # a long probe wraps instead of hiding the rest
                )
                eval_report = gr.Code(label="Full report (this editor)", language=None)

        workspace = [state, memory, edit_status, results, heatmap, why, probe_pick, probe_status, edit_pick]
        changes = [  # each changes the memory, the probes or their routing
            add_button.click(add_edit, [state, prompt, target, subject, probes, threshold, decline_threshold], workspace, api_name="add_edit"),
            remove_button.click(remove_edit, [state, remove_id, probes, threshold, decline_threshold], workspace, api_name="remove_edit"),
            clear_button.click(clear_edits, [state, probes, threshold, decline_threshold], workspace, api_name="clear_edits"),
            import_file.upload(import_edits, [state, import_file, probes, threshold, decline_threshold], workspace, api_name="import_edits"),
            probe_button.click(probe, [state, probes, threshold, decline_threshold], workspace, api_name="probe"),
            finish.input(set_decoding, [state, finish, probes, threshold, decline_threshold], workspace, api_name="set_decoding"),
            *(slider.release(reroute, [state, threshold, decline_threshold], workspace, api_name="reroute" if slider is threshold else False)
              for slider in (threshold, decline_threshold)),
            lesson_button.click(load_lesson, [state, lesson], [*workspace, probes, threshold, tabs], api_name="load_lesson"),
            load_button.click(load_checkpoint, [state, checkpoint_path, probes, threshold, decline_threshold], [*workspace, load_status],
                              api_name="load_checkpoint"),
            failures.select(load_failure, [state, threshold, decline_threshold], [*workspace, probes, tabs], api_name=False),
        ]
        for change in changes:  # inspect the picked probe and edit again: the pick may be the same, its results are not
            change.success(inspect_probe, [state, probe_pick, targets], [scope, tokens, nll], api_name=False).success(
                inspect_edit, [state, edit_pick], [claims], api_name=False)
        export_button.click(export_edits, [state], [export_file], api_name="export_edits")
        share_button.click(share_workspace, [state, probes, threshold, decline_threshold], [share_link], api_name="share_workspace")
        app.load(open_shared_link, [state], [*workspace, probes, threshold, decline_threshold, finish], api_name=False).success(
            inspect_probe, [state, probe_pick, targets], [scope, tokens, nll], api_name=False)
        probe_pick.input(inspect_probe, [state, probe_pick, targets], [scope, tokens, nll], api_name="inspect")
        inspect_button.click(inspect_probe, [state, probe_pick, targets], [scope, tokens, nll], api_name=False)
        edit_pick.input(inspect_edit, [state, edit_pick], [claims], api_name="inspect_edit")
        lesson.change(preview_lesson, [lesson], [lesson_text], api_name="preview_lesson")
        train_button.click(
            run_training,
            [state, train_path, val_path, train_upload, steps, batch_edits, lr, c_edit, c_cls, variant, out_dir, overwrite],
            [state, curves, train_status, checkpoint_path],
            api_name="train", concurrency_limit=1, concurrency_id="heavy",
        )
        stop_button.click(stop_training, [state], [train_status], api_name=False)
        evaluation = eval_button.click(
            run_evaluation, [state, eval_path, eval_upload, eval_limit, eval_mode, eval_other_facts], [state, eval_chart, eval_table, eval_report, failures],
            api_name="evaluate", concurrency_limit=1, concurrency_id="heavy",
        )
        eval_stop.click(None, None, None, cancels=[evaluation], api_name=False)
    return app


def serve(app: gr.Blocks, **launch: object) -> gr.Blocks:
    """Queue and launch the workbench as a class shares it: up to WORKSPACE_CONCURRENCY workspace
    events at once (training and evaluation keep their own limit of one), threads enough for them."""
    app.queue(default_concurrency_limit=WORKSPACE_CONCURRENCY)
    app.launch(max_threads=2 * WORKSPACE_CONCURRENCY, **launch)
    return app
