"""The Gradio workbench. Layout in one `Blocks`; handlers are plain functions above it that call
into `searc.session.Session` (where all the logic lives and is tested).

Each browser tab gets its own `Session` in a `gr.State` (its own edit memory and results); the
models are shared read-only by all tabs.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr

from searc.charts import nll_chart, scope_heatmap
from searc.editor import SeracSystem
from searc.session import Session

EXAMPLE_PROBES = "\n".join(
    [
        "The Eiffel Tower is located in the city of",
        "Where is the Eiffel Tower? It is in",
        "The Louvre is located in the city of",
        "The capital of Japan is",
    ]
)


def _session(state: Session | None, system: SeracSystem) -> Session:
    return state if state is not None else Session(system)


def _fail(error: Exception) -> None:
    """Bad input: a clear message in the page; the session is left exactly as it was."""
    raise gr.Error(str(error).strip("'\""))


def memory_outputs(session: Session, message: str):
    return session, session.memory_table(), message


def probe_outputs(session: Session, message: str):
    probes = session.probe_prompts()
    return (
        session,
        session.results_table(),
        scope_heatmap(session.results, session.editor.edits, session.editor.threshold),
        session.explanations(),
        gr.update(choices=list(probes), value=probes[0] if probes else None),
        message,
    )


def make_handlers(system: SeracSystem):
    """Handlers bound to the shared system."""

    def add_edit(state, prompt, target, subject):
        session = _session(state, system)
        try:
            edit = session.add_edit(prompt, target, subject)
        except ValueError as error:
            _fail(error)
        return memory_outputs(session, f"Stored {edit.id}: {edit.prompt} → {edit.target_new}")

    def remove_edit(state, edit_id):
        session = _session(state, system)
        try:
            edit = session.remove_edit(edit_id)
        except KeyError as error:
            _fail(error)
        return memory_outputs(session, f"Removed {edit.id}")

    def clear_edits(state):
        session = _session(state, system)
        session.clear()
        return memory_outputs(session, "Memory cleared")

    def export_edits(state):
        session = _session(state, system)
        path = Path(tempfile.mkdtemp(prefix="searc-export-")) / "edits.json"
        path.write_text(session.export_json(), encoding="utf-8")
        return str(path)

    def probe(state, probes_text, threshold):
        session = _session(state, system)
        try:
            session.probe(probes_text, threshold)
        except ValueError as error:
            _fail(error)
        routed = sum(r.routed for r in session.results)
        return probe_outputs(session, f"{len(session.results)} probes, {routed} routed to the counterfactual model")

    def reroute(state, threshold):
        session = _session(state, system)
        session.reroute(threshold)
        return probe_outputs(session, f"Re-routed at threshold {threshold:.2f} (no model was run)")

    def inspect(state, probe_prompt, targets_text):
        session = _session(state, system)
        if not probe_prompt:
            return nll_chart([])
        try:
            return nll_chart(session.inspect(probe_prompt, targets_text))
        except ValueError as error:
            _fail(error)

    return add_edit, remove_edit, clear_edits, export_edits, probe, reroute, inspect


def build_app(system: SeracSystem) -> gr.Blocks:
    add_edit, remove_edit, clear_edits, export_edits, probe, reroute, inspect = make_handlers(system)
    checkpoint = system.info.get("checkpoint") or "none (untrained: calibrated encoder + instruct model)"
    with gr.Blocks(title="searc — SERAC edit workbench") as app:
        state = gr.State(None)
        gr.Markdown(
            "# searc — memory-based model editing (SERAC)\n"
            f"Base model `{system.info.get('lm')}`, classifier encoder `{system.info.get('encoder')}`, "
            f"checkpoint `{checkpoint}`. The base model is never changed: edits live in a memory, a scope "
            "classifier decides which probes they cover, and a counterfactual model answers those."
        )
        with gr.Tab("Edit"):
            with gr.Row():
                prompt = gr.Textbox(label="Prompt", value="The Eiffel Tower is located in the city of", scale=3)
                target = gr.Textbox(label="New target", value="Rome", scale=1)
                subject = gr.Textbox(label="Subject (optional)", value="Eiffel Tower", scale=1)
            with gr.Row():
                add_button = gr.Button("Add edit", variant="primary")
                clear_button = gr.Button("Clear memory")
                export_button = gr.Button("Export memory as JSON")
            memory = gr.Dataframe(label="Edit memory", headers=["id", "prompt", "target_new", "subject"], interactive=False)
            with gr.Row():
                remove_id = gr.Textbox(label="Edit id to remove", placeholder="e1", scale=1)
                remove_button = gr.Button("Remove edit", scale=1)
                export_file = gr.File(label="Exported memory", scale=2)
            edit_status = gr.Markdown()
        with gr.Tab("Probe"):
            with gr.Row():
                probes = gr.Textbox(label="Probe prompts (one per line)", value=EXAMPLE_PROBES, lines=5, scale=3)
                with gr.Column(scale=1):
                    threshold = gr.Slider(0.0, 1.0, value=0.5, step=0.01, label="Routing threshold")
                    probe_button = gr.Button("Probe", variant="primary")
            probe_status = gr.Markdown()
            results = gr.Dataframe(label="Results", interactive=False, wrap=True, elem_id="results")
            heatmap = gr.Plot(label="Scope scores", elem_id="heatmap")
            why = gr.Markdown(label="Why was each probe routed or not?")
            with gr.Row():
                inspect_probe = gr.Dropdown(label="Probe to inspect", choices=[], scale=2)
                targets = gr.Textbox(label="Targets to score (one per line), e.g. old and new answer", value="Paris\nRome", lines=2, scale=2)
                inspect_button = gr.Button("Show per-token NLL", scale=1)
            nll = gr.Plot(label="Per-token NLL", elem_id="nll")

        add_button.click(add_edit, [state, prompt, target, subject], [state, memory, edit_status], api_name="add_edit")
        remove_button.click(remove_edit, [state, remove_id], [state, memory, edit_status], api_name="remove_edit")
        clear_button.click(clear_edits, [state], [state, memory, edit_status], api_name="clear_edits")
        export_button.click(export_edits, [state], [export_file], api_name="export_edits")
        probe_outputs_list = [state, results, heatmap, why, inspect_probe, probe_status]
        probe_button.click(probe, [state, probes, threshold], probe_outputs_list, api_name="probe").then(
            inspect, [state, inspect_probe, targets], [nll], api_name=False
        )
        threshold.release(reroute, [state, threshold], probe_outputs_list, api_name="reroute")
        inspect_button.click(inspect, [state, inspect_probe, targets], [nll], api_name="inspect")
    return app
