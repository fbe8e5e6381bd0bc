"""Fuzzing the data loaders: whatever a file holds, `load_cases` returns cases or raises DataError
(naming the file), never anything else."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from searc.data import DataError, EditCase, load_cases

SUFFIXES = st.sampled_from([".json", ".jsonl", ".csv"])
FIELDS = ["prompt", "target_new", "subject", "ground_truth", "rephrase_prompt", "locality_prompt", "locality_ground_truth",
          "src", "alt", "rephrase", "loc", "loc_ans", "prompts", "requested_rewrite", "paraphrase_prompts", "neighborhood_prompts",
          "case_id", "portability", "locality_inputs", "rephrase_prompts"]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), children, max_size=6),
    max_leaves=20,
)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def load(content: bytes, suffix: str):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"upload{suffix}"
        path.write_bytes(content)
        try:
            cases = load_cases(path)
        except DataError as error:
            assert path.name in str(error), f"the message must name the file: {error}"
            return None
    assert isinstance(cases, list) and all(isinstance(c, EditCase) for c in cases)
    return cases


@FUZZ
@given(content=st.binary(max_size=300), suffix=SUFFIXES)
def test_arbitrary_bytes(content, suffix):
    load(content, suffix)


@FUZZ
@given(value=JSON_VALUES, suffix=st.sampled_from([".json", ".jsonl"]))
def test_arbitrary_json_documents(value, suffix):
    text = json.dumps(value) if suffix == ".json" else "\n".join(json.dumps(v) for v in (value if isinstance(value, list) else [value]))
    load(text.encode(), suffix)


@FUZZ
@given(records=st.lists(st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=8), max_size=4))
def test_records_with_known_fields_and_arbitrary_values(records):
    load(json.dumps(records).encode(), ".json")


@FUZZ
@given(header=st.lists(st.sampled_from(FIELDS) | st.text(max_size=6), max_size=6), rows=st.lists(st.lists(st.text(max_size=12), max_size=7), max_size=4))
def test_arbitrary_csv(header, rows):
    text = "\n".join(",".join(json.dumps(cell) if "," in cell else cell for cell in row) for row in [header, *rows])
    load(text.encode("utf-8", "surrogatepass"), ".csv")


def test_a_zip_archive_renamed_to_json_is_named_as_such(tmp_path):
    import zipfile

    path = tmp_path / "edits.json"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("edits.json", "[]")
    try:
        load_cases(path)
    except DataError as error:
        assert "edits.json" in str(error) and "ZIP" in str(error)
    else:
        raise AssertionError("a ZIP file must be refused")
