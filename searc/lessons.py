"""Ready teaching scenarios (assets/lessons/*.json): edits, probes labelled in or out of scope, and
the one point each scenario makes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

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


def load_lesson(path: Path) -> Lesson:
    data = json.loads(path.read_text(encoding="utf-8"))
    try:
        return Lesson(
            title=data["title"],
            point=data["point"],
            threshold=float(data["threshold"]) if "threshold" in data else None,
            edits=tuple(Edit(e["prompt"], e["target_new"], e.get("subject")) for e in data["edits"]),
            probes=tuple(LabelledProbe(p["prompt"], bool(p["in_scope"]), p.get("expected")) for p in data["probes"]),
        )
    except (KeyError, TypeError) as error:
        raise ValueError(f"lesson {path.name}: missing or malformed field {error}") from None


def load_lessons(directory: Path = LESSONS_DIR) -> list[Lesson]:
    return [load_lesson(path) for path in sorted(directory.glob("*.json"))]


def lesson_titled(title: str | None, directory: Path = LESSONS_DIR) -> Lesson | None:
    return next((lesson for lesson in load_lessons(directory) if lesson.title == title), None)
