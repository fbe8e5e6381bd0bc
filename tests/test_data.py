"""Data loaders: the shared files load; broken records name file, record and field."""

from __future__ import annotations

import json

import pytest

from searc.data import DataError, calibration_pairs, load_cases
from tests.conftest import require_shared_data


def test_shared_counterfact_and_zsre_load():
    data = require_shared_data()
    cases = load_cases(data / "counterfact" / "val.json", limit=50)
    assert len(cases) == 50
    first = cases[0]
    assert first.in_scope[0].prompt == first.edit.prompt and first.in_scope[0].answer == first.edit.target_new
    assert first.rephrases and first.out_of_scope and first.edit.subject
    zsre = load_cases(data / "zsre" / "train-1k.json", limit=10)
    assert zsre[0].edit.prompt.endswith("?") and zsre[0].out_of_scope[0].prompt.startswith("nq question")


def test_nested_counterfact_record(tmp_path):
    record = {
        "case_id": 0,
        "requested_rewrite": {
            "prompt": "The mother tongue of {} is",
            "subject": "Danielle Darrieux",
            "target_new": {"str": "English"},
            "target_true": {"str": "French"},
        },
        "paraphrase_prompts": ["Danielle Darrieux, a native"],
        "neighborhood_prompts": ["Michel Rocard is a native speaker of"],
    }
    path = tmp_path / "nested.json"
    path.write_text(json.dumps([record]))
    case = load_cases(path)[0]
    assert case.edit.prompt == "The mother tongue of Danielle Darrieux is"
    assert case.edit.target_true == "French"
    assert [p.answer for p in case.out_of_scope] == ["French"]


@pytest.mark.parametrize(
    "records, message",
    [
        ([{"prompt": "p", "target_new": "t", "rephrase_prompt": "r"}, {"prompt": "p2", "rephrase_prompt": "r", "target_new": ""}], "record 1: field 'target_new'"),
        ([{"src": "q", "alt": "a", "rephrase": "r"}], "record 0: missing field 'loc'"),
        ([{"hello": 1}], "record 0: unknown record format"),
        ([[1, 2]], "record 0: expected an object"),
        ({"not": "a list"}, "expected a JSON list"),
    ],
)
def test_malformed_records_name_file_record_and_field(tmp_path, records, message):
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(records))
    with pytest.raises(DataError, match=message) as info:
        load_cases(path)
    assert "broken.json" in str(info.value)


def test_invalid_json_and_encoding(tmp_path):
    (tmp_path / "bad.json").write_text("[{")
    with pytest.raises(DataError, match="bad.json: not valid UTF-8 JSON"):
        load_cases(tmp_path / "bad.json")
    (tmp_path / "latin.json").write_bytes('[{"prompt": "caf\xe9"}]'.encode("latin-1"))
    with pytest.raises(DataError, match="latin.json"):
        load_cases(tmp_path / "latin.json")


def test_calibration_pairs_have_both_labels():
    cases = load_cases(require_shared_data() / "counterfact" / "val.json", limit=5)
    pairs = calibration_pairs(cases)
    for case in cases:
        assert (case.edit, case.rephrases[0].prompt, True) in pairs
        assert (case.edit, case.out_of_scope[0].prompt, False) in pairs
    assert sum(label for *_, label in pairs) == sum(len(c.rephrases) for c in cases)
