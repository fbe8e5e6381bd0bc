"""Ready teaching scenarios (assets/lessons/*.json): edits, probes labelled in or out of scope, and
the one point each scenario makes.

A lesson is also a check of the system it runs on (`Lesson.check`): an in-scope probe must begin
with its answer (the edit's target, or a consequence the lesson names: "Italy"), an out-of-scope
probe must keep the base model's output exactly. The workbench marks each probe with it, `searc
lesson` prints it (`check_lesson`) and the integration tests assert it, so a point that a
checkpoint does not make shows as such instead of being told as if it held.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from searc.editor import Editor, ProbeResult, SeracSystem
from searc.memory import Edit
from searc.shipped import LESSONS_DIR


@dataclass(frozen=True)
class LabelledProbe:
    prompt: str
    in_scope: bool
    expected: str | None = None  # an in-scope answer other than the edit's target (a consequence: "Italy")

    def label(self) -> str:
        scope = "in scope" if self.in_scope else "out of scope"
        return f"{scope}, expect {self.expected}" if self.expected else scope


@dataclass(frozen=True)
class ProbeCheck:
    """Whether one probe of a lesson behaved as its label says."""

    probe: LabelledProbe
    answer: str | None  # what an in-scope probe must begin with; None out of scope (the base output must stand)
    result: ProbeResult

    @property
    def holds(self) -> bool:
        if self.answer is None:
            return self.result.output == self.result.base_output
        return self.result.output.strip().startswith(self.answer)

    def describe(self) -> str:
        """One line: the mark, what the label asks, and what came out when it does not hold."""
        mark = "✓" if self.holds else "✗"
        asked = f"in scope, expects “{self.answer}”" if self.answer is not None else "out of scope, keeps the base output"
        if self.holds:
            return f"{mark} as labelled ({asked})"
        got = _short(self.result.output) or "(nothing)"
        return f"{mark} not as labelled ({asked}): got “{got}”" + (
            f", the base model “{_short(self.result.base_output)}”" if self.answer is None else ""
        )


@dataclass(frozen=True)
class Lesson:
    title: str
    point: str
    threshold: float | None  # None: keep the session's (the checkpoint's tuned) threshold
    edits: tuple[Edit, ...]
    probes: tuple[LabelledProbe, ...]

    def probes_text(self) -> str:
        return "\n".join(p.prompt for p in self.probes)

    def preview(self) -> str:
        """What the scenario shows, before it is loaded: its point, its edits and its labelled probes."""
        edits = "\n".join(f"- {e.prompt} → **{e.target_new}**" for e in self.edits)
        probes = "\n".join(f"- {p.prompt} ({p.label()})" for p in self.probes)
        threshold = f"\n\nThreshold: {self.threshold:.2f}" if self.threshold is not None else ""
        return f"### {self.title}\n{self.point}\n\nEdits:\n{edits}\n\nProbes:\n{probes}{threshold}"

    def answer_for(self, probe: LabelledProbe) -> str | None:
        """What an in-scope probe must begin with: its named consequence, else the target of the one
        edit (or, with several, of the edit whose subject it names); None for an out-of-scope probe."""
        if not probe.in_scope:
            return None
        if probe.expected:
            return probe.expected
        named = self.edits if len(self.edits) == 1 else [e for e in self.edits if e.subject and e.subject.casefold() in probe.prompt.casefold()]
        if len(named) != 1:
            raise ValueError(f"lesson {self.title!r}: the in-scope probe {probe.prompt!r} names the subject of "
                             f"{len(named)} of its edits; give it an \"expected\" answer")
        return named[0].target_new

    def summary(self, checks: Sequence[ProbeCheck]) -> str:
        """"Lesson “…”: 3 of 4 probes as labelled"."""
        return f"Lesson “{self.title}”: {sum(c.holds for c in checks)} of {len(checks)} probes as labelled"

    def check(self, results: Sequence[ProbeResult]) -> list[ProbeCheck]:
        """The lesson's probes among `results` (in their order), each checked against its label."""
        labelled = {p.prompt: p for p in self.probes}
        return [ProbeCheck(labelled[r.prompt], self.answer_for(labelled[r.prompt]), r) for r in results if r.prompt in labelled]


def check_lesson(system: SeracSystem, lesson: Lesson, threshold: float | None = None) -> list[ProbeCheck]:
    """A lesson as the workbench runs it: its edits alone in a fresh memory, all its probes at once,
    routed at `threshold` if given, else at the lesson's own if it has one, else at the system's."""
    editor = Editor(system, threshold=threshold if threshold is not None else lesson.threshold)
    editor.add_edits(list(lesson.edits))
    return lesson.check(editor.probe([p.prompt for p in lesson.probes]))


def _short(text: str, limit: int = 60) -> str:
    """An output on one line (its line breaks as spaces), cut at `limit` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def load_lesson(path: Path) -> Lesson:
    data = json.loads(path.read_text(encoding="utf-8"))
    try:
        lesson = Lesson(
            title=data["title"],
            point=data["point"],
            threshold=float(data["threshold"]) if "threshold" in data else None,
            edits=tuple(Edit(e["prompt"], e["target_new"], e.get("subject")) for e in data["edits"]),
            probes=tuple(LabelledProbe(p["prompt"], bool(p["in_scope"]), p.get("expected")) for p in data["probes"]),
        )
    except (KeyError, TypeError) as error:
        raise ValueError(f"lesson {path.name}: missing or malformed field {error}") from None
    for probe in lesson.probes:
        lesson.answer_for(probe)  # every in-scope probe knows its answer before the lesson is offered
    return lesson


def load_lessons(directory: Path = LESSONS_DIR) -> list[Lesson]:
    return [load_lesson(path) for path in sorted(directory.glob("*.json"))]


def lesson_titled(title: str | None, directory: Path = LESSONS_DIR) -> Lesson | None:
    return next((lesson for lesson in load_lessons(directory) if lesson.title == title), None)
