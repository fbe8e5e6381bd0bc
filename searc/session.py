"""One workbench session: an editor with its own memory, plus the last probe results.

Everything the web UI shows is computed here, so it is tested without a browser; `searc.ui`
only lays it out. Each browser tab holds one `Session`; the `SeracSystem` under it is shared.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pandas as pd

from searc import scheduler
from searc.augment import with_other_facts
from searc.classifier import ClassifierConfig
from searc.data import EditCase
from searc.editor import Editor, ProbeResult, SeracSystem, TargetComparison, check_threshold, threshold_or
from searc.evaluate import EvalReport, comparison_rows, evaluate
from searc.inspection import OutputTokens, ScopeView, claimed_by, output_tokens, scope_view
from searc.lessons import Lesson, ProbeCheck, lesson_titled
from searc.memory import MAX_TEXT_CHARS, Edit, EditMemory, typed_edit, validate_text
from searc.sharing import SharedWorkspace
from searc.system import SystemPool
from searc.train import TrainConfig, TrainEvent, prepare_training, train

MAX_TARGETS = 8
MAX_SESSION_EDITS = 10_000  # per browser session: a shared workbench keeps every session light


# the columns of the workbench's tables (the page shows them before there is a row)
MEMORY_COLUMNS = ["id", "prompt", "target_new", "subject"]
RESULT_COLUMNS = ["probe", "best edit", "score", "routed", "base output", "counterfactual output", "final output"]
CLAIM_COLUMNS = ["probe", "score", "final output"]
NOT_ASKED = "(not asked: below the threshold)"  # a counterfactual answer is generated once a threshold routes the probe
FAILURE_COLUMNS = ["kind", "probe", "expected", "got", "score", "routed", "declined", "nearest edit"]


def split_lines(text: str | None) -> list[str]:
    """Non-empty, stripped lines of a text box."""
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


@dataclass
class TrainingCurves:
    """What the Train tab plots: losses per step and validation metrics per validation."""

    steps: list[int] = field(default_factory=list)
    losses: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in ("loss", "nll", "bce", "decline_nll")})
    val_steps: list[int] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in ("score", "classifier_auroc", "generalization")})

    def add(self, event: TrainEvent) -> None:
        if event.kind == "step":
            self.steps.append(event.step)
            for key, values in self.losses.items():
                values.append(event.losses.get(key, float("nan")))
        elif event.kind == "validation":
            self.val_steps.append(event.step)
            for key, values in self.metrics.items():
                values.append(event.metrics.get(key, float("nan")))


@dataclass
class Evaluation:
    """This editor beside the unedited model and the zero-shot editor, and this editor's full report."""

    rows: dict[str, dict[str, float]]
    report: EvalReport

    def table(self) -> pd.DataFrame:
        """One row per system, one column per category (this editor's categories)."""
        columns = list(self.rows["this editor"])
        data = [[name, *[round(scores.get(c, float("nan")), 3) for c in columns]] for name, scores in self.rows.items()]
        return pd.DataFrame(data, columns=["system", *columns])


@dataclass
class Session:
    system: SeracSystem
    results: list[ProbeResult] = field(default_factory=list)
    evaluation: Evaluation | None = None  # the last evaluation run in this session
    lesson: Lesson | None = None  # the lesson last loaded; its checks apply while the memory holds its edits

    def __post_init__(self) -> None:
        self.editor = Editor(self.system, memory=EditMemory(max_edits=MAX_SESSION_EDITS))  # the checkpoint's thresholds

    def use_system(self, system: SeracSystem) -> None:
        """Switch to another system (checkpoint), keeping the memory: it is re-keyed on next use."""
        self.system = system
        previous = self.editor
        self.editor = Editor(
            system, memory=previous.memory, threshold=previous.threshold, decline_threshold=previous.decline_threshold,
            finish_targets=previous.finish_targets,
        )
        self.results = []

    # -------------------------------------------------------------- memory
    def add_edit(self, prompt: str, target_new: str, subject: str | None = None) -> Edit:
        """A typed edit (`memory.typed_edit`: a subject must occur in its prompt)."""
        return self.editor.add_edits([typed_edit(prompt, target_new, subject)])[0]

    def replace_memory(self, edits: Sequence[Edit]) -> None:
        """A memory of exactly `edits` (all validated before anything is cleared); no results yet."""
        fresh = EditMemory(max_edits=MAX_SESSION_EDITS)
        fresh.add(list(edits), self.system.classifier)
        self.editor.memory = fresh
        self.results = []

    def load_lesson(self, lesson) -> None:
        """Replace the memory with a lesson's edits, and the threshold with the lesson's if it has one."""
        threshold = threshold_or(lesson.threshold, self.editor.threshold)
        self.replace_memory(lesson.edits)
        self.editor.threshold = threshold
        self.lesson = lesson

    @property
    def active_lesson(self) -> Lesson | None:
        """The loaded lesson while the memory holds exactly its edits (an edit added or removed
        makes it another experiment; putting them back makes it the lesson again)."""
        if self.lesson is None or len(self.editor.memory) != len(self.lesson.edits):  # no pass over a large memory
            return None
        stored = [(e.prompt, e.target_new) for e in self.editor.edits]
        return self.lesson if stored == [(e.prompt, e.target_new) for e in self.lesson.edits] else None

    def lesson_checks(self) -> list[ProbeCheck]:
        """The active lesson's probes among the current results, each checked against its label."""
        lesson = self.active_lesson
        return lesson.check(self.results) if lesson else []

    def shared_workspace(self, probes_text: str, threshold: float, decline_threshold: float | None = None) -> SharedWorkspace:
        """This workspace as a link carries it (`searc.sharing`): edits, probes, thresholds, decoding, lesson."""
        routing, declining = self._thresholds(threshold, decline_threshold)
        lesson = self.active_lesson
        return SharedWorkspace(
            [Edit(e.prompt, e.target_new, e.subject, e.target_true) for e in self.editor.edits], split_lines(probes_text),
            routing, declining, self.editor.finish_targets, lesson.title if lesson else None,
        )

    def open_shared(self, workspace: SharedWorkspace) -> list[ProbeResult]:
        """Become the shared workspace (a new session of its own) and probe its probes."""
        self.replace_memory(workspace.edits)
        self.editor.finish_targets = workspace.finish_targets
        self.lesson = lesson_titled(workspace.lesson)
        return self.reprobe("\n".join(workspace.probes), workspace.threshold, workspace.decline_threshold)

    def import_edits(self, path: str) -> list[Edit]:
        """Add every edit of a data file (any format `load_cases` reads), all or nothing."""
        from searc.data import load_cases

        cases = load_cases(path)
        if not cases:
            raise ValueError("the file holds no edits")
        return self.editor.add_edits([case.edit for case in cases])

    def remove_edit(self, edit_id: str) -> Edit:
        return self.editor.remove_edit((edit_id or "").strip())

    def clear(self) -> None:
        self.editor.clear()
        self.results = []

    def memory_table(self) -> pd.DataFrame:
        rows = [[e.id, e.prompt, e.target_new, e.subject or ""] for e in self.editor.edits]
        return pd.DataFrame(rows, columns=MEMORY_COLUMNS)

    def export_json(self) -> str:
        return json.dumps([e.to_dict() for e in self.editor.edits], indent=2, ensure_ascii=False)

    # -------------------------------------------------------------- probing
    def _thresholds(self, threshold: float, decline_threshold: float | None) -> tuple[float, float]:
        """Both checked before either moves; no decline threshold given: the session's stays."""
        return check_threshold(threshold), threshold_or(decline_threshold, self.editor.decline_threshold)

    def probe(self, probes_text: str, threshold: float, decline_threshold: float | None = None) -> list[ProbeResult]:
        """Probe every line. Counterfactual answers are generated for the routed probes only (for
        a class, that is most of the work saved); a threshold moved lower asks for the others'
        (`reroute`)."""
        prompts = split_lines(probes_text)
        if not prompts:
            raise ValueError("type at least one probe prompt (one per line)")
        thresholds = self._thresholds(threshold, decline_threshold)
        previous = self.editor.threshold, self.editor.decline_threshold
        self.editor.threshold, self.editor.decline_threshold = thresholds
        try:
            self.results = self.editor.probe(prompts)
        except ValueError:
            self.editor.threshold, self.editor.decline_threshold = previous  # bad input changes nothing
            raise
        return self.results

    def reprobe(self, probes_text: str, threshold: float, decline_threshold: float | None = None) -> list[ProbeResult]:
        """After the memory changed: probe the current probes again (none typed: no results)."""
        if not split_lines(probes_text):
            self.results = []
            return self.results
        return self.probe(probes_text, threshold, decline_threshold)

    def set_finish_targets(self, finish: bool, probes_text: str, threshold: float, decline_threshold: float | None = None) -> list[ProbeResult]:
        """Finish a begun target verbatim (`lm.FinishTargets`) or decode freely, and probe again.
        Bad probes or thresholds change nothing, this setting included."""
        previous = self.editor.finish_targets
        self.editor.finish_targets = bool(finish)
        try:
            return self.reprobe(probes_text, threshold, decline_threshold)
        except ValueError:
            self.editor.finish_targets = previous
            raise

    def answers_needed(self, threshold: float) -> int:
        """How many of the last results `threshold` would route that have no counterfactual answer yet."""
        return sum(r.lacks_answer_at(threshold) for r in self.results)

    def reroute(self, threshold: float, decline_threshold: float | None = None) -> list[ProbeResult]:
        """Apply new routing and decline thresholds to the last results; the model runs only for
        probes the new threshold routes that have no counterfactual answer yet (`answers_needed`)."""
        thresholds = self._thresholds(threshold, decline_threshold)
        answered = self.editor.answer_routable(self.results, thresholds[0])
        self.editor.threshold, self.editor.decline_threshold = thresholds
        self.results = [r.with_thresholds(*thresholds) for r in answered]
        return self.results

    def results_table(self) -> pd.DataFrame:
        rows = [
            [
                r.prompt,
                f"{r.best_edit.id} → {r.best_edit.target_new}" if r.best_edit else "",
                round(r.score, 3),
                ("declined" if r.declined else "yes") if r.routed else "no",
                r.base_output,
                # what it would answer, and whether it declines the best edit (routed or not)
                f"(declines, p(end) {r.decline_probability:.0%}) {r.counterfactual_output}" if r.counterfactual_declines
                else r.counterfactual_output if r.counterfactual_output is not None else NOT_ASKED if r.best_edit else "",
                r.output,
            ]
            for r in self.results
        ]
        return pd.DataFrame(rows, columns=RESULT_COLUMNS)

    def probe_summary(self) -> str:
        """One line over the results: how many were routed, and how the active lesson went."""
        if not self.results:
            return ""
        line = f"{len(self.results)} probes, {sum(r.routed for r in self.results)} routed to the counterfactual model"
        checks = self.lesson_checks()  # some only while the lesson is active
        return f"{line}. {self.lesson.summary(checks)}." if checks else line

    def explanations(self) -> str:
        """Why each probe was routed or not; under a lesson, each lesson probe's check first."""
        checks = self.lesson_checks()
        by_prompt = {c.probe.prompt: c for c in checks}
        lines = [
            f"- **{r.prompt}**: " + (f"{by_prompt[r.prompt].describe()}. " if r.prompt in by_prompt else "") + r.explanation()
            for r in self.results
        ]
        if checks:  # the same count as the probe line's
            lines.insert(0, f"{self.lesson.summary(checks)}:\n")
        return "\n".join(lines)

    def result_for(self, probe: str) -> ProbeResult:
        result = next((r for r in self.results if r.prompt == probe), None)
        if result is None:
            raise ValueError("probe first, then pick one of the probed prompts")
        return result

    def inspect(self, probe: str, targets_text: str = "") -> list[TargetComparison]:
        """Per-token NLL for one probe: on its generated output, and on each typed target."""
        result = self.result_for(probe)
        targets = [validate_text("target", t) for t in split_lines(targets_text)][:MAX_TARGETS]
        # the model's own output may hold control characters that typed text may not
        generated = "".join(c for c in result.output if c in "\t\n" or ord(c) >= 32).strip()[:MAX_TEXT_CHARS]
        candidates = list(dict.fromkeys(([generated] if generated else []) + targets))  # each target once, in order
        return [self.editor.score_target(result.prompt, target) for target in candidates]

    def probe_prompts(self) -> Sequence[str]:
        return [r.prompt for r in self.results]

    def output_tokens(self, probe: str) -> list[OutputTokens]:
        """The token view of one probed prompt's outputs (see `searc.inspection`)."""
        return output_tokens(self.system, self.result_for(probe))

    def scope_view(self, probe: str) -> ScopeView:
        """The nearest edits of one probed prompt, the decline probability and the decision."""
        return scope_view(self.system, self.result_for(probe), self.editor.edits)

    def inspection(self, probe: str, targets_text: str = "") -> tuple[str, list[OutputTokens], list[TargetComparison]]:
        """What the page shows of one probe: the scope inspector, the token view and each target's
        NLL, their model work handed to the scheduler together."""
        self.result_for(probe)  # a clear error before any work
        scope, tokens, targets = scheduler.together(
            lambda: self.scope_markdown(probe), lambda: self.output_tokens(probe), lambda: self.inspect(probe, targets_text)
        )
        return scope, tokens, targets

    def scope_markdown(self, probe: str) -> str:
        view = self.scope_view(probe)
        if not view.nearest:
            return f"**{view.prompt}**: {view.decision}"
        rows = "\n".join(
            f"| {n.edit.id} | {n.edit.prompt} → {n.edit.target_new} | {n.score:.3f} | {'yes' if n.passes else 'no'} |" for n in view.nearest
        )
        declining = (f"\n\nThe counterfactual model, the best edit in context, would decline (end at once) with probability "
                     f"{view.decline_probability:.1%}; it declines at {view.decline_threshold:.0%} or more.")
        return (f"**{view.prompt}**\n\n| edit | statement | score | ≥ threshold {view.threshold:.2f} |\n|---|---|---|---|\n{rows}"
                f"{declining}\n\n{view.decision}")

    def claims_table(self, edit_id: str) -> pd.DataFrame:
        """The current probes an edit answers (routed to it and not declined)."""
        if not any(e.id == edit_id for e in self.editor.edits):
            raise ValueError(f"no stored edit {edit_id!r}")
        rows = [[r.prompt, round(r.score, 3), r.output] for r in claimed_by(edit_id, self.results)]
        return pd.DataFrame(rows, columns=CLAIM_COLUMNS)

    # -------------------------------------------------------------- training and evaluation
    def train(
        self, pool: SystemPool, train_cases: Sequence[EditCase], val_cases: Sequence[EditCase], config: TrainConfig,
        variant: str, out: Path, stop: threading.Event, overwrite: bool = False,
    ) -> Iterator[tuple[TrainEvent, TrainingCurves]]:
        """Train a fresh system of its own (the shared one is never touched); the best checkpoint goes
        to `out`, which must be new or empty unless `overwrite`."""
        prepare_training(train_cases, val_cases, config, out, overwrite)  # before a fresh system is built
        curves = TrainingCurves()
        trainee = pool.fresh(ClassifierConfig(variant=variant))
        for event in train(trainee, train_cases, val_cases, config, out=out, stop=stop, overwrite=overwrite):
            curves.add(event)
            yield event, curves

    def evaluate(
        self, pool: SystemPool, cases: Sequence[EditCase], mode: str, progress: Callable[[str, int, int], None] | None = None,
        other_facts: int = 0,
    ) -> Evaluation:
        """Evaluate this session's editor, and the zero-shot (untrained) editor beside it, at this
        session's thresholds and decoding; `other_facts` probes a case about other facts of its
        subject are added (`augment.with_other_facts`)."""
        cases = with_other_facts(cases, other_facts)
        systems = {"this editor": self.system}
        zero_shot = pool.get(None)
        if zero_shot is not self.system:  # an untrained session is itself the zero-shot editor
            systems["zero-shot editor"] = zero_shot
        reports = {}
        for name, system in systems.items():
            step = (lambda done, total, name=name: progress(name, done, total)) if progress else None
            reports[name] = evaluate(
                system, cases, mode=mode, threshold=self.editor.threshold, decline_threshold=self.editor.decline_threshold,
                finish_targets=self.editor.finish_targets, progress=step,
            )
        self.evaluation = Evaluation(comparison_rows(reports["this editor"], reports.get("zero-shot editor")), reports["this editor"])
        return self.evaluation

    def failures_table(self) -> pd.DataFrame:
        """The last evaluation's failing probes, as an inspector reads them."""
        failures = self.evaluation.report.failures if self.evaluation else []
        rows = [
            [f.kind + (f"/{f.group}" if f.group else ""), f.prompt, f.expected, f.output, round(f.score, 3),
             "yes" if f.routed else "no", "yes" if f.declined else "no", f"{f.best_edit.prompt} → {f.best_edit.target_new}" if f.best_edit else ""]
            for f in failures
        ]
        return pd.DataFrame(rows, columns=FAILURE_COLUMNS)

    def load_failure(self, index: int) -> str:
        """Put failing probe `index` of the last evaluation into the workspace: its case's edit (and
        the edit it was wrongly routed to, if any) become the memory; returns the probe to ask."""
        failures = self.evaluation.report.failures if self.evaluation else []
        if not 0 <= index < len(failures):
            raise ValueError("run an evaluation, then pick one of its failing probes")
        failure = failures[index]
        edits = [failure.edit] + ([failure.best_edit] if failure.best_edit and failure.best_edit.prompt != failure.edit.prompt else [])
        self.replace_memory([Edit(e.prompt, e.target_new, e.subject, e.target_true) for e in edits])  # fresh ids
        return failure.prompt
