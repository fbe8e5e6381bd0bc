"""Data loaders: the shared files load; broken records name file, record and field."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from searc.data import DataError, DataSource, calibration_pairs, interleave, load_cases
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
        ([{"prompt": "p", "target_new": "t", "rephrase_prompt": "r"}, {"prompt": "p2", "rephrase_prompt": "r", "target_new": ""}], "record 2: field 'target_new'"),
        ([{"src": "q", "alt": "a", "rephrase": "r"}], "record 1: missing field 'loc'"),
        ([{"hello": 1}], "record 1: unknown record format"),
        ([[1, 2]], "record 1: expected an object"),
        ({"not": "a list"}, "expected a JSON list"),
        ({"prompts": ["p"], "target_new": ["t"], "locality_inputs": True}, "locality_inputs must map each group"),  # found by tests/test_fuzz.py
        ({"prompts": ["p"], "target_new": ["t"], "locality_inputs": {"neighborhood": [1]}}, "locality_inputs must map each group"),
    ],
)
def test_malformed_records_name_file_record_and_field(tmp_path, records, message):
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(records))
    with pytest.raises(DataError, match=message) as info:
        load_cases(path)
    assert "broken.json" in str(info.value)


def test_malformed_records_can_be_skipped_and_counted(tmp_path):
    path = tmp_path / "mixed.json"
    good = {"prompt": "The sky is", "target_new": "green"}
    path.write_text(json.dumps([good, {"prompt": "p2", "target_new": ""}, {"hello": 1}, {**good, "prompt": "Grass is"}]))
    skipped: list[str] = []
    cases = load_cases(path, skipped=skipped)
    assert [c.edit.prompt for c in cases] == ["The sky is", "Grass is"]
    assert len(skipped) == 2 and "record 2: field 'target_new'" in skipped[0] and "record 3" in skipped[1]
    path.write_text("not json")
    with pytest.raises(DataError, match="not valid JSON"):  # an unreadable file is not a record to skip
        load_cases(path, skipped=[])


def test_shared_zsre_train_split_has_two_records_without_a_new_target():
    skipped: list[str] = []
    cases = load_cases(require_shared_data() / "zsre" / "train-1k.json", skipped=skipped)
    assert len(cases) == 998 and len(skipped) == 2 and all("field 'alt'" in message for message in skipped)
    with pytest.raises(DataError, match="field 'alt'"):
        load_cases(require_shared_data() / "zsre" / "train-1k.json")


def test_a_slice_of_a_files_records(tmp_path):
    """`PATH[START:STOP]` reads records START..STOP-1 as Python slices them; error messages keep the
    file's own record numbers; the two halves of a split share no record."""
    path = tmp_path / "facts.json"
    path.write_text(json.dumps([{"prompt": f"Fact {i} is", "target_new": f"t{i}"} for i in range(5)] + [{"prompt": "", "target_new": "x"}]))
    prompts = lambda source, **kw: [case.edit.prompt for case in load_cases(source, **kw)]  # noqa: E731
    assert prompts(f"{path}[1:3]") == ["Fact 1 is", "Fact 2 is"]
    assert prompts(f"{path}[:2]") == ["Fact 0 is", "Fact 1 is"] and prompts(f"{path}[3:-1]") == ["Fact 3 is", "Fact 4 is"]
    assert prompts(f"{path}[1:]", limit=2) == ["Fact 1 is", "Fact 2 is"]  # the limit counts within the slice
    assert sorted(prompts(f"{path}[:3]") + prompts(f"{path}[3:5]")) == prompts(path, limit=5)
    for limit in (0, -2):  # a limit of none is a mistake, not "all" nor "all but the last two"
        with pytest.raises(DataError, match="at least 1 case"):
            load_cases(path, limit=limit)
    with pytest.raises(DataError, match="facts.json record 6"):
        load_cases(f"{path}[4:]")
    assert DataSource.parse(f"{path}[900:]") == DataSource(path, 900) and DataSource.parse(f"{path}[:9]") == DataSource(path, None, 9)
    bracketed = tmp_path / "odd[1:2]"  # a file whose own name looks like a slice is read whole
    bracketed.write_text(path.read_text())
    assert DataSource.parse(bracketed) == DataSource(bracketed) and len(load_cases(bracketed, limit=5)) == 5


def test_interleave_takes_each_file_in_turn():
    a, b = load_cases(require_shared_data() / "counterfact" / "val.json", limit=3), load_cases(require_shared_data() / "zsre" / "train-1k.json", limit=1)
    assert interleave([a, b]) == [a[0], b[0], a[1], a[2]] and interleave([]) == []


def test_invalid_json_and_encoding(tmp_path):
    (tmp_path / "bad.json").write_text("[{")
    with pytest.raises(DataError, match="bad.json: not valid JSON"):
        load_cases(tmp_path / "bad.json")
    (tmp_path / "latin.json").write_bytes('[{"prompt": "caf\xe9"}]'.encode("latin-1"))
    with pytest.raises(DataError, match="latin.json: not UTF-8"):
        load_cases(tmp_path / "latin.json")


def test_own_csv_and_jsonl(tmp_path):
    (tmp_path / "edits.csv").write_text(
        "prompt,target_new,subject,rephrase_prompt,locality_prompt,locality_ground_truth\n"
        "The Eiffel Tower is located in,Rome,Eiffel Tower,The Eiffel Tower stands in,The Louvre is in,Paris\n"
        "The capital of Japan is,Kyoto,,,,\n",
        encoding="utf-8",
    )
    cases = load_cases(tmp_path / "edits.csv")
    assert [c.edit.target_new for c in cases] == ["Rome", "Kyoto"]
    assert cases[0].rephrases[0].prompt == "The Eiffel Tower stands in" and cases[0].out_of_scope[0].answer == "Paris"
    assert cases[1].edit.subject is None and cases[1].rephrases == () and cases[1].out_of_scope == ()
    (tmp_path / "edits.jsonl").write_text('{"prompt": "A is", "target_new": "B"}\n\n{"prompt": "C is", "target_new": "D", "rephrase_prompt": ["C was", "C has been"]}\n')
    cases = load_cases(tmp_path / "edits.jsonl")
    assert [len(c.rephrases) for c in cases] == [0, 2]
    (tmp_path / "broken.jsonl").write_text('{"prompt": "A is", "target_new": "B"}\n{oops\n')
    with pytest.raises(DataError, match="broken.jsonl line 2"):
        load_cases(tmp_path / "broken.jsonl")


def test_easyedit_editor_arguments(tmp_path):
    arguments = {
        "prompts": ["The mother tongue of Danielle Darrieux is", "Toko Yasuda plays the"],
        "target_new": ["English", "piano"],
        "ground_truth": ["French", "guitar"],
        "subject": ["Danielle Darrieux", "Toko Yasuda"],
        "rephrase_prompts": ["Danielle Darrieux speaks", "Toko Yasuda is great at the"],
        "locality_inputs": {"neighborhood": {"prompt": ["Michel Rocard speaks", "John Lennon plays the"], "ground_truth": ["French", "guitar"]}},
    }
    (tmp_path / "easyedit.json").write_text(json.dumps(arguments))
    cases = load_cases(tmp_path / "easyedit.json")
    assert cases[1].edit.target_true == "guitar" and cases[1].out_of_scope[0].prompt == "John Lennon plays the"
    arguments["target_new"] = ["English"]
    (tmp_path / "easyedit.json").write_text(json.dumps(arguments))
    with pytest.raises(DataError, match="'target_new' has 1 items"):
        load_cases(tmp_path / "easyedit.json")


def test_oversized_files_are_refused(tmp_path, monkeypatch):
    import searc.data

    monkeypatch.setattr(searc.data, "MAX_FILE_BYTES", 100)
    (tmp_path / "big.json").write_text(json.dumps([{"prompt": "x" * 200, "target_new": "y"}]))
    with pytest.raises(DataError, match="big.json: .* limit"):
        load_cases(tmp_path / "big.json")


def test_calibration_pairs_have_both_labels():
    cases = load_cases(require_shared_data() / "counterfact" / "val.json", limit=5)
    pairs = calibration_pairs(cases)
    for case in cases:
        assert (case.edit, case.rephrases[0].prompt, True) in pairs
        assert (case.edit, case.out_of_scope[0].prompt, False) in pairs
    assert sum(label for *_, label in pairs) == sum(len(c.rephrases) for c in cases)


def test_knowedit_record_reads_every_group_and_alias(tmp_path):
    record = {
        "subject": "Butterfly Cluster", "target_new": "Orion", "prompt": "What constellation is home to Butterfly Cluster?",
        "ground_truth": ["Scorpius"], "rephrase_prompt": "What is the constellation where Butterfly Cluster is located?",
        "locality": {"Relation_Specificity": [
            {"prompt": "The constellation of Butterfly Cluster is", "ground_truth": ["Scorpius"]},
            {"prompt": "The country of Butterfly Cluster is", "ground_truth": [["Syria", "Syrian Arab Republic"]]},
        ]},
        "portability": {
            "Reasoning": [{"prompt": "Another name of the constellation of Butterfly Cluster is", "ground_truth": "Orion the Hunter"}],
            "Subject_Aliasing": [{"prompt": "What constellation is home to M6?", "ground_truth": "Orion"}],
            "Logical_Generalization": [{"prompt": "Is Butterfly Cluster in Scorpius?", "ground_truth": ["no", "No"]}],
        },
    }
    path = tmp_path / "knowedit.json"
    path.write_text(json.dumps([record]))
    case = load_cases(path)[0]
    assert case.edit.target_true == "Scorpius" and case.edit.subject == "Butterfly Cluster"
    assert [(p.group, p.answer) for p in case.in_scope] == [("", "Orion"), ("rephrase", "Orion"), ("Subject_Aliasing", "Orion")]
    assert [p.group for p in case.out_of_scope] == ["Relation_Specificity"] * 2
    assert case.out_of_scope[1].answers == ("Syria", "Syrian Arab Republic")
    assert [(p.group, p.answers) for p in case.portability] == [("Reasoning", ("Orion the Hunter",)), ("Logical_Generalization", ("no", "No"))]


def test_knowedit_bad_ground_truth_names_the_group(tmp_path):
    record = {"prompt": "Q?", "target_new": "A", "locality": {"Relation_Specificity": [{"prompt": "P", "ground_truth": [{"x": 1}]}]}}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([record]))
    with pytest.raises(DataError, match=r"record 1\.locality\.Relation_Specificity\[1\].*ground_truth"):
        load_cases(path)


def test_shared_knowedit_file_loads_every_group():
    data = require_shared_data()
    cases = load_cases(data / "knowedit" / "zsre-test.json")
    groups = Counter(p.group for c in cases for p in (*c.in_scope, *c.out_of_scope, *c.portability))
    assert len(cases) == 1304
    assert groups["Relation_Specificity"] == 2608 and groups["Reasoning"] == 771
    assert groups["Subject_Aliasing"] == 264 and groups["Logical_Generalization"] == 269


def test_zsre_portability_is_a_new_question_with_its_second_step(tmp_path):
    record = {
        "subject": "Volvo B12M", "src": "What company made Volvo B12M?", "alt": "Volkswagen Group", "answers": ["Volvo Buses"],
        "rephrase": "Volvo B12M's manufacturer was who?", "loc": "nq question: who sang it must have been love", "loc_ans": "Roxette",
        "portability": {
            "Recalled Relation": "(Volkswagen Group, headquartered in, Wolfsburg, Germany)",
            "New Question": "In which city is the headquarters of the company that made the Volvo B12M?", "New Answer": "Wolfsburg",
        },
    }
    broken = {**record, "portability": {**record["portability"], "Recalled Relation": "Volkswagen Group"}}
    path = tmp_path / "zsre.json"
    path.write_text(json.dumps([record, broken]))
    case, without_step = load_cases(path)
    (ported,) = case.portability
    assert (ported.group, ported.answers) == ("New Question", ("Wolfsburg",))
    assert [s.prompt for s in ported.second_steps] == [
        "Volkswagen Group headquartered in", "The headquartered in of Volkswagen Group is",
        "Question: What is the headquartered in of Volkswagen Group? Answer:",
    ]
    assert {s.answers for s in ported.second_steps} == {("Wolfsburg, Germany", "Wolfsburg")}  # the triple's answer, then the new answer
    assert without_step.portability[0].second_steps == ()
