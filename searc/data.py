"""Edit datasets, normalised: each record becomes one `EditCase`.

Files: a JSON list of records, JSON Lines (one record per line, `.jsonl`), CSV with a header row
(`.csv`), or a JSON object of parallel lists as passed to EasyEdit's `editor.edit()`. Record
formats are detected from their fields:
- flat (EasyEdit's CounterFact release, and searc's own CSV/JSON/JSONL): `prompt`, `target_new`
  required; optional `subject`, `ground_truth` (the old answer), `rephrase_prompt` (text or list),
  `locality_prompt` and `locality_ground_truth`;
- CounterFact, nested (ROME): requested_rewrite {prompt with "{}", subject, target_new.str,
  target_true.str}, paraphrase_prompts, neighborhood_prompts;
- zsRE as released with MEND: src, alt, rephrase, loc, loc_ans (+ portability in EasyEdit's edit set);
- EasyEdit `editor.edit()` style: prompts, target_new, ground_truth, rephrase_prompts,
  locality_inputs {name: {prompt, ground_truth}}, subject;
- KnowEdit: prompt, target_new, ground_truth, rephrase_prompt, and groups of probes
  `locality` {Relation_Specificity, Forgetfulness, ...} (out of scope) and `portability`
  {Subject_Aliasing (in scope: the same fact, the subject named otherwise), Reasoning,
  Logical_Generalization, ...}; a ground truth is a text, a list of texts or a list of alias lists.
Loading is all or nothing: any bad record stops it with the file, record number and field.

A source may name a slice of a file's records, `PATH[START:STOP]` as in Python (records counted from
0, in file order): `zsre/train-1k.json[:900]` to train on and `zsre/train-1k.json[900:]` to validate
on split one file into two parts that share no record.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from searc.memory import Edit


@dataclass(frozen=True)
class Probe:
    prompt: str
    answer: str  # the expected answer (target_new in scope; the true answer out of scope); "" = unknown
    aliases: tuple[str, ...] = ()  # other answers that count as right (KnowEdit's alias lists)
    group: str = ""  # the data's category (KnowEdit: "Relation_Specificity", "Reasoning", ...)
    # a portability probe's second step, asked of the new object alone in several wordings
    # ("Volkswagen Group headquartered in" -> Wolfsburg): whether the unedited model knows it in any
    # of them bounds what an editor built on that model can port (zsRE's "Recalled Relation")
    second_steps: tuple[Probe, ...] = ()

    @property
    def answers(self) -> tuple[str, ...]:
        return (self.answer, *self.aliases)


@dataclass(frozen=True)
class EditCase:
    edit: Edit
    in_scope: tuple[Probe, ...]  # the edit prompt first, then its rephrases
    out_of_scope: tuple[Probe, ...]
    portability: tuple[Probe, ...] = field(default=())
    scope_only: bool = False  # trains the classifier alone: its edit has no answer to learn (searc.augment)

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


def _texts(record: dict, name: str, where: str) -> list[str]:
    """An optional field holding one text or a list of texts."""
    value = record.get(name)
    if value in (None, ""):
        return []
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) and v.strip() for v in values):
        raise DataError(f"{where}: field {name!r} must be text or a list of non-empty texts")
    return [v.strip() for v in values]


def _optional(record: dict, name: str, where: str) -> str | None:
    value = record.get(name)
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise DataError(f"{where}: field {name!r} must be text")
    return value.strip() or None


def _flat(record: dict, where: str) -> EditCase:
    prompt, target = _text(record, "prompt", where), _text(record, "target_new", where)
    edit = Edit(prompt, target, _optional(record, "subject", where), _optional(record, "ground_truth", where))
    rephrases = _texts(record, "rephrase_prompt", where)
    out = []
    if record.get("locality_prompt"):
        out.append(Probe(_text(record, "locality_prompt", where), _text(record, "locality_ground_truth", where)))
    return EditCase(edit, (Probe(prompt, target), *(Probe(r, target) for r in rephrases)), tuple(out))


def _easyedit(record: dict, where: str) -> EditCase:
    prompt, target = _text(record, "prompts", where), _text(record, "target_new", where)
    edit = Edit(prompt, target, _optional(record, "subject", where), _optional(record, "ground_truth", where))
    rephrases = _texts(record, "rephrase_prompts", where)
    out = []
    locality = record.get("locality_inputs") or {}
    if not isinstance(locality, dict):
        raise DataError(f"{where}: field 'locality_inputs' must be an object")
    for name, inputs in locality.items():
        prompts = _texts(inputs, "prompt", f"{where}.locality_inputs.{name}")
        answers = _texts(inputs, "ground_truth", f"{where}.locality_inputs.{name}")
        if len(prompts) != len(answers):
            raise DataError(f"{where}: locality_inputs.{name} has {len(prompts)} prompts but {len(answers)} answers")
        out += [Probe(p, a) for p, a in zip(prompts, answers)]
    return EditCase(edit, (Probe(prompt, target), *(Probe(r, target) for r in rephrases)), tuple(out))


IN_SCOPE_PORTABILITY = frozenset({"Subject_Aliasing"})  # KnowEdit groups that ask the edited fact itself


def _answers(value: Any, where: str) -> tuple[str, ...]:
    """A ground truth as text, list of texts or list of alias lists: every acceptable answer, first first."""
    values = value if isinstance(value, list) else [value]
    flat = [alias for v in values for alias in (v if isinstance(v, list) else [v])]
    if not flat or not all(isinstance(a, (str, int, float)) and str(a).strip() for a in flat):
        raise DataError(f"{where}: ground_truth must be text, a list of texts or a list of alias lists")
    return tuple(dict.fromkeys(str(a).strip() for a in flat))


def _groups(record: dict, name: str, where: str) -> list[Probe]:
    """KnowEdit's {group: [{prompt, ground_truth}, ...]} probes, each tagged with its group."""
    groups = record.get(name) or {}
    if not isinstance(groups, dict):
        raise DataError(f"{where}: field {name!r} must be an object of probe groups")
    probes = []
    for group, items in groups.items():
        items = [items] if isinstance(items, dict) else items
        if not isinstance(items, list):
            raise DataError(f"{where}: {name}.{group} must be a list of probes")
        for number, item in enumerate(items, start=1):
            at = f"{where}.{name}.{group}[{number}]"
            if not isinstance(item, dict):
                raise DataError(f"{at}: expected an object with prompt and ground_truth")
            prompts = _texts(item, "prompt", at)
            if not prompts:
                raise DataError(f"{at}: missing field 'prompt'")
            answers = _answers(_field(item, "ground_truth", at), at)
            answers = [answers] * len(prompts) if not isinstance(item["ground_truth"], list) or len(prompts) == 1 else [
                _answers(a, at) for a in item["ground_truth"]
            ]
            if len(answers) != len(prompts):
                raise DataError(f"{at}: {len(prompts)} prompts but {len(answers)} ground truths")
            probes += [Probe(p, a[0], a[1:], group) for p, a in zip(prompts, answers)]
    return probes


def _knowedit(record: dict, where: str) -> EditCase:
    prompt, target = _text(record, "prompt", where), _text(record, "target_new", where)
    old = _answers(record["ground_truth"], where)[0] if record.get("ground_truth") not in (None, "", []) else None
    edit = Edit(prompt, target, _optional(record, "subject", where), old)
    rephrases = [Probe(r, target, group="rephrase") for r in _texts(record, "rephrase_prompt", where)]
    portability = _groups(record, "portability", where)
    aliased = tuple(p for p in portability if p.group in IN_SCOPE_PORTABILITY)
    return EditCase(
        edit,
        (Probe(prompt, target), *rephrases, *aliased),
        tuple(_groups(record, "locality", where)),
        tuple(p for p in portability if p.group not in IN_SCOPE_PORTABILITY),
    )


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
        steps = _recalled_relation(portability.get("Recalled Relation"), portability["New Answer"])
        ported = (Probe(portability["New Question"], portability["New Answer"], group="New Question", second_steps=steps),)
    return EditCase(
        Edit(prompt, target, record.get("subject"), answers[0] if answers else None),
        (Probe(prompt, target), Probe(_text(record, "rephrase", where), target)),
        (Probe(_text(record, "loc", where), _text(record, "loc_ans", where)),),
        ported,
    )


def _recalled_relation(triple: object, new_answer: str) -> tuple[Probe, ...]:
    """zsRE's "(object, relation, answer)" as the second step in three wordings, a cloze, a noun
    phrase and a question ("Volkswagen Group headquartered in", "The headquartered in of Volkswagen
    Group is", "Question: What is the headquartered in of Volkswagen Group? Answer:"), since a
    relation label reads well in only some of them; the answer is "Wolfsburg, Germany" and the new
    answer also counts. No wording if the field is not such a triple."""
    if not isinstance(triple, str):
        return ()
    parts = [p.strip() for p in triple.strip().removeprefix("(").removesuffix(")").split(", ", 2)]
    if len(parts) != 3 or not all(parts):
        return ()
    subject, relation, answer = parts
    aliases = (new_answer,) if new_answer != answer else ()
    wordings = (f"{subject} {relation}", f"The {relation} of {subject} is", f"Question: What is the {relation} of {subject}? Answer:")
    return tuple(Probe(w, answer, aliases) for w in wordings)


FORMATS: dict[str, tuple[tuple[str, ...], Callable[[dict, str], EditCase]]] = {
    "counterfact-nested": (("requested_rewrite",), _counterfact_nested),
    "knowedit": (("prompt", "target_new", "locality"), _knowedit),
    "knowedit-portability": (("prompt", "target_new", "portability"), _knowedit),
    "zsre": (("src", "alt", "rephrase"), _zsre),
    "easyedit": (("prompts", "target_new"), _easyedit),
    "flat": (("prompt", "target_new"), _flat),
}
MAX_FILE_BYTES = 50_000_000
ARCHIVE_MAGIC = {b"PK\x03\x04": "ZIP", b"\x1f\x8b": "gzip", b"7z\xbc\xaf\x27\x1c": "7-Zip"}


def detect_format(record: dict, where: str) -> str:
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected an object, got {type(record).__name__}")
    for name, (keys, _) in FORMATS.items():
        if all(k in record for k in keys):
            return name
    raise DataError(f"{where}: unknown record format (fields: {', '.join(sorted(record)[:8])})")


def read_records(path: Path) -> list:
    """Raw records of a .json, .jsonl or .csv file."""
    if path.stat().st_size > MAX_FILE_BYTES:
        raise DataError(f"{path.name}: {path.stat().st_size / 1e6:.0f} MB is over the {MAX_FILE_BYTES / 1e6:.0f} MB limit")
    raw = path.read_bytes()
    for magic, kind in ARCHIVE_MAGIC.items():
        if raw.startswith(magic):
            raise DataError(f"{path.name}: a {kind} archive, not a {path.suffix or 'text'} file; unpack it first")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(f"{path.name}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        try:
            if not reader.fieldnames:
                raise DataError(f"{path.name}: a CSV file needs a header row")
            return [{k: v for k, v in row.items() if k is not None} for row in reader]
        except csv.Error as error:
            raise DataError(f"{path.name} line {reader.line_num}: not valid CSV ({error})") from None
    if path.suffix.lower() == ".jsonl":
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise DataError(f"{path.name} line {number}: not valid JSON ({error.msg})") from None
        return records
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{path.name}: not valid JSON ({error.msg} at line {error.lineno})") from None
    if isinstance(data, dict) and isinstance(data.get("prompts"), list):
        return _transpose_easyedit(data, path.name)
    if not isinstance(data, list):
        raise DataError(f"{path.name}: expected a JSON list of records")
    return data


def _transpose_easyedit(data: dict, name: str) -> list[dict]:
    """EasyEdit's editor.edit(prompts=[...], target_new=[...], ...) arguments, one record per edit."""
    n = len(data["prompts"])
    records = [{} for _ in range(n)]
    for key, values in data.items():
        if key == "locality_inputs":
            groups = values or {}
            if not isinstance(groups, dict) or not all(isinstance(inputs or {}, dict) for inputs in groups.values()):
                raise DataError(f"{name}: locality_inputs must map each group to its fields' lists")
            for group, inputs in groups.items():
                for field_name, items in (inputs or {}).items():
                    if not isinstance(items, list) or len(items) != n:
                        raise DataError(f"{name}: locality_inputs.{group}.{field_name} must be a list of {n} items")
                    for record, item in zip(records, items):
                        record.setdefault("locality_inputs", {}).setdefault(group, {})[field_name] = item
        elif isinstance(values, list):
            if len(values) != n:
                raise DataError(f"{name}: field {key!r} has {len(values)} items but 'prompts' has {n}")
            for record, value in zip(records, values):
                record[key] = value
    return records


_SLICE = re.compile(r"^(?P<path>.+)\[(?P<start>-?\d*):(?P<stop>-?\d*)\]$")


@dataclass(frozen=True)
class DataSource:
    """A data file, or the slice `records[start:stop]` of its records (`PATH[START:STOP]`)."""

    path: Path
    start: int | None = None
    stop: int | None = None

    @classmethod
    def parse(cls, text: str | Path) -> DataSource:
        """`PATH` or `PATH[START:STOP]`; a file whose own name ends in brackets is taken whole."""
        match = _SLICE.match(str(text))
        if match is None or Path(text).exists():
            return cls(Path(text))
        start, stop = (int(bound) if bound else None for bound in (match["start"], match["stop"]))  # "": an open end
        return cls(Path(match["path"]), start, stop)


def load_cases(source: str | Path | DataSource, limit: int | None = None, skipped: list[str] | None = None) -> list[EditCase]:
    """All cases of a file (or of a slice of its records, `DataSource`), all or nothing; errors
    name file, record and field. `limit` keeps the first records of the slice.

    With a `skipped` list, a malformed record is left out and its error appended there instead
    (real datasets have a few: zsRE's train split has records without a new target); a file
    that cannot be read at all still raises."""
    if limit is not None and limit < 1:
        raise DataError(f"ask for at least 1 case, not {limit}")
    source = source if isinstance(source, DataSource) else DataSource.parse(source)
    path = source.path
    records = read_records(path)
    indices = range(len(records))[source.start : source.stop][:limit]  # record numbers stay the file's
    cases = []
    for index in indices:
        record, where = records[index], f"{path.name} record {index + 1}"
        try:
            cases.append(FORMATS[detect_format(record, where)][1](record, where))
        except DataError as error:
            if skipped is None:
                raise
            skipped.append(str(error))
    return cases


def refuse_evaluation_files(sources: Sequence[str | Path | None]) -> None:
    """Training, its validation and tuning never read an evaluation file (`edit.json`), whole or sliced."""
    if any(DataSource.parse(str(source or "")).path.name == "edit.json" for source in sources):
        raise DataError("edit.json files are for evaluation only; use train/val splits")


def interleave(case_lists: Sequence[Sequence[EditCase]]) -> list[EditCase]:
    """The cases of several files in turn (first of each, second of each, ...), so that any prefix,
    such as the cases a validation or `--limit` keeps, mixes the files."""
    longest = max((len(cases) for cases in case_lists), default=0)
    return [cases[i] for i in range(longest) for cases in case_lists if i < len(cases)]


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
