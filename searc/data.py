"""Edit datasets, normalised: each record becomes one `EditCase`.

Formats are detected from the record's fields:
- CounterFact, flat (EasyEdit's release): prompt, target_new, subject, ground_truth,
  rephrase_prompt, locality_prompt, locality_ground_truth;
- CounterFact, nested (ROME): requested_rewrite {prompt with "{}", subject, target_new.str,
  target_true.str}, paraphrase_prompts, neighborhood_prompts;
- zsRE as released with MEND: src, alt, rephrase, loc, loc_ans (+ portability in EasyEdit's edit set).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from searc.memory import Edit


@dataclass(frozen=True)
class Probe:
    prompt: str
    answer: str  # the expected answer (target_new in scope; the true answer out of scope)


@dataclass(frozen=True)
class EditCase:
    edit: Edit
    in_scope: tuple[Probe, ...]  # the edit prompt first, then its rephrases
    out_of_scope: tuple[Probe, ...]
    portability: tuple[Probe, ...] = field(default=())

    @property
    def rephrases(self) -> tuple[Probe, ...]:
        return self.in_scope[1:]


class DataError(ValueError):
    """A record that cannot be read, naming file, record number and field."""


def _field(record: dict, name: str, where: str) -> Any:
    value = record.get(name)
    if value is None:
        raise DataError(f"{where}: missing field {name!r}")
    return value


def _text(record: dict, name: str, where: str) -> str:
    value = _field(record, name, where)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: field {name!r} must be non-empty text")
    return value.strip()


def _counterfact_flat(record: dict, where: str) -> EditCase:
    prompt, target = _text(record, "prompt", where), _text(record, "target_new", where)
    edit = Edit(prompt, target, record.get("subject"), record.get("ground_truth"))
    rephrases = record.get("rephrase_prompt") or []
    rephrases = [rephrases] if isinstance(rephrases, str) else rephrases
    out = []
    if record.get("locality_prompt"):
        out.append(Probe(_text(record, "locality_prompt", where), _text(record, "locality_ground_truth", where)))
    return EditCase(edit, (Probe(prompt, target), *(Probe(r, target) for r in rephrases)), tuple(out))


def _counterfact_nested(record: dict, where: str) -> EditCase:
    rewrite = _field(record, "requested_rewrite", where)
    if not isinstance(rewrite, dict):
        raise DataError(f"{where}: field 'requested_rewrite' must be an object")
    subject = _text(rewrite, "subject", f"{where}.requested_rewrite")
    template = _text(rewrite, "prompt", f"{where}.requested_rewrite")
    if "{}" not in template:
        raise DataError(f"{where}: field 'requested_rewrite.prompt' has no '{{}}' for the subject")
    target_new = _text(_field(rewrite, "target_new", where), "str", f"{where}.requested_rewrite.target_new")
    target_true = (rewrite.get("target_true") or {}).get("str")
    prompt = template.replace("{}", subject)
    neighbours = [Probe(p, target_true or "") for p in record.get("neighborhood_prompts", [])]
    return EditCase(
        Edit(prompt, target_new, subject, target_true),
        (Probe(prompt, target_new), *(Probe(p, target_new) for p in record.get("paraphrase_prompts", []))),
        tuple(neighbours),
    )


def _zsre(record: dict, where: str) -> EditCase:
    prompt, target = _text(record, "src", where), _text(record, "alt", where)
    answers = record.get("answers") or [record.get("pred")]
    portability = record.get("portability") or {}
    ported = ()
    if portability.get("New Question") and portability.get("New Answer"):
        ported = (Probe(portability["New Question"], portability["New Answer"]),)
    return EditCase(
        Edit(prompt, target, record.get("subject"), answers[0] if answers else None),
        (Probe(prompt, target), Probe(_text(record, "rephrase", where), target)),
        (Probe(_text(record, "loc", where), _text(record, "loc_ans", where)),),
        ported,
    )


FORMATS: dict[str, tuple[tuple[str, ...], Callable[[dict, str], EditCase]]] = {
    "counterfact-nested": (("requested_rewrite",), _counterfact_nested),
    "counterfact-flat": (("prompt", "target_new", "rephrase_prompt"), _counterfact_flat),
    "zsre": (("src", "alt", "rephrase"), _zsre),
}


def detect_format(record: dict, where: str) -> str:
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected an object, got {type(record).__name__}")
    for name, (keys, _) in FORMATS.items():
        if all(k in record for k in keys):
            return name
    raise DataError(f"{where}: unknown record format (fields: {', '.join(sorted(record)[:8])})")


def load_cases(path: str | Path, limit: int | None = None) -> list[EditCase]:
    """All cases of a JSON list file, all or nothing; errors name file, record and field."""
    path = Path(path)
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: not valid UTF-8 JSON ({error})") from None
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON list of records")
    records = records[:limit] if limit is not None else records
    cases = []
    for index, record in enumerate(records):
        where = f"{path.name} record {index}"
        cases.append(FORMATS[detect_format(record, where)][1](record, where))
    return cases


def calibration_pairs(cases: list[EditCase]) -> list[tuple[Edit, str, bool]]:
    """(edit, input, in_scope) pairs: each case's rephrases are positives; its out-of-scope probes
    (hard negatives sharing the relation) and the next case's prompt (an unrelated edit) are negatives."""
    pairs: list[tuple[Edit, str, bool]] = []
    for index, case in enumerate(cases):
        pairs += [(case.edit, probe.prompt, True) for probe in case.rephrases]
        pairs += [(case.edit, probe.prompt, False) for probe in case.out_of_scope]
        if len(cases) > 1:
            pairs.append((case.edit, cases[(index + 1) % len(cases)].edit.prompt, False))
    return pairs
