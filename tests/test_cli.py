"""The `searc` command: bad arguments exit 2 with one line and no traceback."""

from __future__ import annotations

import pytest

from searc.cli import main, parse_edit


@pytest.mark.parametrize(
    "argv, message",
    [
        (["probe", "--edit", "no separator here", "--probe", "x"], "PROMPT|TARGET"),
        (["probe", "--edit", "|Rome", "--probe", "x"], "PROMPT|TARGET"),
        (["probe", "--edit", "The Eiffel Tower is in|", "--probe", "x"], "PROMPT|TARGET"),
        (["probe", "--edit", "a|b", "--probe", "x", "--threshold", "1.5"], "--threshold"),
        (["probe", "--edit", "a|b", "--probe", "x", "--threshold", "high"], "--threshold"),
        (["probe", "--edit", "a|b", "--probe", "x", "--decline-threshold", "2"], "--decline-threshold expects a number in [0, 1]"),
        (["eval", "--data", "x.json", "--decline-threshold", "often"], "--decline-threshold expects a number in [0, 1]"),
        (["eval", "--data", "x.json", "--name-weight", "-1"], "--name-weight expects a number of 0 or more"),
        (["probe", "--edit", "a|b", "--probe", "x", "--name-weight", "inf"], "--name-weight expects a number of 0 or more"),
        (["probe", "--edit", "a|b"], "at least one --probe"),
        (["lesson", "No such lesson"], "no lesson titled 'No such lesson'; the lessons are: Paraphrases generalise;"),
        (["probe", "--bogus"], "unrecognized arguments"),
        (["frobnicate"], "invalid choice"),
        ([], "required"),
        (["train", "--data", "x.json", "--val", "y.json", "--steps", "0"], "steps must be a positive integer"),
        (["train", "--data", "x.json", "--val", "y.json", "--steps", "-3"], "steps must be a positive integer"),
        (["train", "--data", "../shared/data/counterfact/edit.json", "--val", "y.json"], "evaluation only"),
        (["train", "--data", "x.json", "../shared/data/zsre/edit.json", "--val", "y.json"], "evaluation only"),
        (["train", "--data", "../shared/data/zsre/edit.json[:100]", "--val", "y.json"], "evaluation only"),  # sliced, too
        (["train", "--data", "../shared/data/counterfact/train.json", "--val", "y.json", "../shared/data/counterfact/edit.json[5:]"], "evaluation only"),
        (["train", "--data", "../shared/data/counterfact/val.json[:100]", "--val", "../shared/data/counterfact/val.json[50:]"],
         "50 validation edits are also training edits"),
        (["tune", "--val", "../shared/data/counterfact/val.json", "../shared/data/counterfact/edit.json[:50]", "--checkpoint", "ck"], "evaluation only"),
        (["eval", "--data", "x.json", "--limit", "0"], "--limit"),
        # --json OUT is checked before the run, not written after it (tune would have rewritten its checkpoint first)
        (["eval", "--data", "x.json", "--json", "/proc/searc/report.json"], "argument --json: cannot write /proc/searc/report.json"),
        (["tune", "--val", "y.json", "--checkpoint", "ck", "--json", "/tmp"], "argument --json: cannot write /tmp"),
        (["bench", "--json", "/proc/searc/bench.json"], "argument --json: cannot write /proc/searc/bench.json"),
        # refused before the models load: what --out holds stays as it was
        (["train", "--data", "../shared/data/counterfact/val.json[:10]", "--val", "../shared/data/counterfact/val.json[10:20]",
          "--out", "assets/checkpoint"], "assets/checkpoint already exists and is not empty"),
        (["train", "--data", "../shared/data/counterfact/val.json[:10]", "--val", "../shared/data/counterfact/val.json[10:20]",
          "--out", "/proc/searc/ck"], "cannot read or write /proc/searc"),  # not at the first checkpoint, minutes later
        (["train", "--data", "../shared/data/counterfact/val.json[:1]", "--val", "../shared/data/counterfact/val.json[10:20]"],
         "at least 2 edit cases"),
        # a missing or unreadable file or directory, for every subcommand that reads one
        (["eval", "--data", "/nonexistent/file.json", "--checkpoint", "none"], "cannot read or write /nonexistent/file.json"),
        (["train", "--data", "/nonexistent/train.json", "--val", "y.json"], "cannot read or write /nonexistent/train.json"),
        (["train", "--data", "/tmp", "--val", "y.json"], "cannot read or write /tmp"),
        (["tune", "--val", "/nonexistent/val.json", "--checkpoint", "/nonexistent/ck"], "cannot read or write /nonexistent/val.json"),
        (["calibrate", "--data", "/nonexistent/val.json"], "cannot read or write /nonexistent/val.json"),
        (["probe", "--edit", "a|b", "--probe", "x", "--checkpoint", "/nonexistent/checkpoint"], "/nonexistent/checkpoint"),
        (["probe", "--edit", "a|b", "--probe", "x", "--lm", "/nonexistent/model.gguf", "--checkpoint", "none"], "/nonexistent/model.gguf"),
        (["eval", "--data", "/nonexistent/file.json", "--checkpoint", "/nonexistent/checkpoint"], "/nonexistent/file.json"),
        (["probe", "--edit", "x" * 100_000 + "|Rome", "--probe", "x"], "the limit is 1000"),
        (["probe", "--edit", "a bell \x07 rings|Rome", "--probe", "x"], "control characters"),
        (["probe", "--edit", "Rome|rome", "--probe", "x"], "equals the prompt"),
        (["probe", "--edit", "The sky is|red", "--edit", "the sky is|blue", "--probe", "x"], "already stored"),
        (["probe", "--edit", "a|b", "--probe", "   "], "probe is empty"),
        (["probe", "--edit", "The sky is|red", "--edit", "Grass is|blue", "--subject", "sky", "--probe", "x"], "one --subject per --edit"),
        (["probe", "--edit", "The sky is|red", "--subject", "the sea", "--probe", "x"], "does not occur in the prompt"),
        (["probe", "--edit", "a|b", "--probe", "y" * 100_000], "the limit is 1000"),
        (["bench", "--data-dir", "/nowhere"], "no CounterFact data"),
        (["eval", "--data", "x.json", "--memory", "10"], "--mode batch"),
        (["eval", "--data", "x.json", "--memory", "0", "--mode", "batch"], "--memory"),
        (["eval", "--data", "x.json", "--relation", "P99999"], "unknown relation"),
        (["eval", "--data", "x.json", "--other-facts", "-1"], "other facts a case must be a whole number, 0 or more"),
        (["train", "--data", "x.json", "--val", "y.json", "--consequence-steps", "continent"], "consequence steps must be some of"),
        (["tune", "--val", "y.json", "--checkpoint", "ck", "--memory", "0"], "--memory must be at least 1"),
        (["tune", "--val", "y.json", "--checkpoint", "ck", "--limit", "0"], "--limit and --memory"),
        (["tune", "--val", "y.json", "--checkpoint", "ck", "--max-declined-own-routes", "2"], "must be in [0, 1]"),
        (["train", "--data", "x.json", "--val", "y.json", "--held-out-relations", "P99999"], "unknown relation"),
        (["train", "--data", "x.json", "--val", "y.json", "--target-forms", "1.5"], "target_forms must be in [0, 1]"),
        (["train", "--data", "x.json", "--val", "y.json", "--near-subjects", "-1"], "near_subjects must be 0 or more"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv, message, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], captured.err
    command = argv[0] if argv and not argv[0].startswith("-") and argv[0] != "frobnicate" else None
    assert lines[0].startswith(f"searc {command}: " if command else "searc: "), lines[0]  # names the command it stopped
    assert "Traceback" not in captured.err


def test_training_reads_several_data_files(tmp_path, capsys):
    from searc.checkpoint import read_checkpoint
    from tests.conftest import require_shared_data, save_tiny_models

    data = require_shared_data()
    lm, encoder = save_tiny_models(tmp_path)
    bad = ["train", "--data", str(data / "zsre/train-1k.json"), "--val", str(data / "counterfact/val.json"), "--lm", lm]
    assert main(bad) == 2 and "--skip-bad-records" in capsys.readouterr().err  # two zsRE records have no new target
    argv = ["train", "--data", str(data / "counterfact/train.json"), str(data / "zsre/train-1k.json"), "--limit", "5",
            "--val", str(data / "counterfact/val.json"), "--steps", "1", "--val-cases", "2", "--lm", lm, "--encoder", encoder,
            "--out", str(tmp_path / "ck")]
    assert main(argv) == 0, capsys.readouterr().err
    assert read_checkpoint(tmp_path / "ck").config["training"]["train_cases"] == 10  # 5 of each file


@pytest.mark.parametrize("command", ["eval", "tune", "calibrate"])
def test_a_malformed_record_stops_every_command_that_reads_data_unless_skipped(command, tmp_path, capsys):
    """One rule for every command that reads a data file: a malformed record stops it with one line
    that names the record and the way past it; with --skip-bad-records it is left out and counted."""
    import json

    from tests.conftest import save_tiny_models

    good = {"prompt": "The Eiffel Tower is in", "target_new": "Rome", "subject": "Eiffel Tower", "rephrase_prompt": "Where is the Eiffel Tower?"}
    path = tmp_path / "val.json"
    path.write_text(json.dumps([good, {"prompt": "", "target_new": "Paris"}]))
    lm, encoder = save_tiny_models(tmp_path)
    capsys.readouterr()  # saving the models reports progress
    argv = {"eval": ["eval", "--data", str(path), "--lm", lm, "--encoder", encoder, "--checkpoint", "none"],
            "tune": ["tune", "--val", str(path), "--lm", lm, "--encoder", encoder, "--checkpoint", str(tmp_path / "ck")],
            "calibrate": ["calibrate", "--data", str(path), "--encoder", encoder]}[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "val.json record 2" in err and "--skip-bad-records" in err and len(err.strip().splitlines()) == 1
    if command == "eval":  # the other two need a checkpoint, or more cases, to get further
        assert main([*argv, "--skip-bad-records"]) == 0
        captured = capsys.readouterr()
        assert "skipped 1 malformed records; the first: val.json record 2" in captured.err and "1 cases" in captured.out


def test_edit_parsing_splits_on_the_last_bar():
    edit = parse_edit("A | B is|C ")
    assert (edit.prompt, edit.target_new) == ("A | B is", "C")


def test_a_missing_model_path_is_one_line(capsys):
    assert main(["probe", "--lm", "/nowhere/model.gguf", "--edit", "a|b", "--probe", "x", "--checkpoint", "none"]) == 2
    err = capsys.readouterr().err
    assert "no GGUF file" in err and len(err.strip().splitlines()) == 1


def test_app_help_lists_the_launch_options():
    import subprocess
    import sys
    from pathlib import Path

    app = Path(__file__).resolve().parent.parent / "app.py"
    completed = subprocess.run([sys.executable, str(app), "--help"], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0
    for option in ("--host", "--port", "--checkpoint", "--lm", "--encoder", "--share", "--auth"):
        assert option in completed.stdout


def test_a_given_decline_threshold_replaces_the_checkpoints(tmp_path, capsys):
    """searc probe --decline-threshold: the probe reports its end probability and the threshold it was read against."""
    import json

    from tests.conftest import save_tiny_models

    lm, encoder = save_tiny_models(tmp_path)
    argv = ["probe", "--edit", "The Eiffel Tower is in|Rome", "--probe", "The Eiffel Tower is in", "--threshold", "0",
            "--lm", lm, "--encoder", encoder, "--checkpoint", "none", "--json"]
    for decline_threshold, declined in (("0", True), ("1", False)):
        assert main([*argv, "--decline-threshold", decline_threshold]) == 0
        [result] = json.loads(capsys.readouterr().out)
        assert result["routed"] and result["declined"] is declined and 0.0 <= result["decline_probability"] <= 1.0
        assert result["output"] == (result["base_output"] if declined else result["counterfactual_output"])


def test_a_given_routing_threshold_replaces_the_checkpoints(tmp_path, capsys):
    """searc probe --threshold: 0 routes every probe to its nearest edit, 1 routes none."""
    import json

    from tests.conftest import save_tiny_models

    lm, encoder = save_tiny_models(tmp_path)
    argv = ["probe", "--edit", "The Eiffel Tower is in|Rome", "--probe", "The Eiffel Tower is in",
            "--lm", lm, "--encoder", encoder, "--checkpoint", "none", "--json"]
    for threshold, routed in (("0", True), ("1", False)):
        assert main([*argv, "--threshold", threshold]) == 0
        [result] = json.loads(capsys.readouterr().out)
        assert result["routed"] is routed and result["threshold"] == float(threshold) and result["score"] < 1.0


def test_probe_takes_more_probes_than_one_batch(tmp_path, capsys):
    """The editor generates up to MAX_PROBES probes at once; the command runs them in batches, in order."""
    import json

    from searc.editor import MAX_PROBES
    from tests.conftest import save_tiny_models

    lm, encoder = save_tiny_models(tmp_path)
    probes = [f"Fact number {i} is" for i in range(MAX_PROBES + 3)]
    argv = ["probe", "--edit", "The Eiffel Tower is in|Rome", *(arg for p in probes for arg in ("--probe", p)),
            "--lm", lm, "--encoder", encoder, "--checkpoint", "none", "--json"]
    assert main(argv) == 0
    assert [r["prompt"] for r in json.loads(capsys.readouterr().out)] == probes


def test_what_the_data_cannot_give_is_refused_before_the_models_load(capsys, monkeypatch):
    """Too few validation cases to tune a checkpoint on, or fewer cases than --memory asks to
    store: one line, the checkpoint untouched, no model loaded."""
    from searc.cli import MIN_TUNE_CASES
    from searc.shipped import default_checkpoint
    from tests.conftest import require_shared_data

    val = require_shared_data() / "counterfact/val.json"
    checkpoint = default_checkpoint()
    before = {path.name: path.read_bytes() for path in checkpoint.iterdir()}
    monkeypatch.setattr("searc.system.load_system", lambda *a, **k: pytest.fail("the models loaded"))
    few = MIN_TUNE_CASES - 1
    assert main(["tune", "--checkpoint", str(checkpoint), "--val", f"{val}[:{few}]"]) == 2
    assert f"{few} validation cases are too few to tune on" in capsys.readouterr().err
    assert main(["tune", "--checkpoint", str(checkpoint), "--val", str(val), "--limit", str(few)]) == 2
    assert "too few to tune on" in capsys.readouterr().err
    assert main(["tune", "--checkpoint", str(checkpoint), "--val", f"{val}[:100]", "--memory", "200"]) == 2
    assert "--memory 200: the validation data holds only 100 cases" in capsys.readouterr().err
    assert main(["eval", "--data", f"{val}[:30]", "--memory", "40", "--mode", "batch"]) == 2
    assert f"--memory 40: {val}[:30] holds only 30 cases" in capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in checkpoint.iterdir()} == before


def test_eval_says_how_it_decoded(tmp_path, capsys):
    """searc eval finishes begun targets unless --free-decoding; the summary line and the JSON say which."""
    import json

    from tests.conftest import save_tiny_models

    path = tmp_path / "cases.json"
    path.write_text(json.dumps([{"prompt": "The Eiffel Tower is in", "target_new": "Rome", "subject": "Eiffel Tower"}]))
    lm, encoder = save_tiny_models(tmp_path)
    argv = ["eval", "--data", str(path), "--lm", lm, "--encoder", encoder, "--checkpoint", "none"]
    for flags, finished in (([], True), (["--free-decoding"], False)):
        report = tmp_path / f"report-{finished}.json"
        capsys.readouterr()
        assert main([*argv, *flags, "--json", str(report)]) == 0
        assert json.loads(report.read_text())["finish_targets"] is finished
        assert ("decoding freely" in capsys.readouterr().out) is not finished
    # a tiny random model knows no consequences: none are added, and the data's own portability
    # probe (zsRE's New Question) is not counted as one
    zsre = tmp_path / "zsre.json"
    zsre.write_text(json.dumps([{"subject": "Hamlet", "src": "Who wrote Hamlet?", "alt": "Marlowe", "answers": ["Shakespeare"],
                                 "rephrase": "Hamlet was written by whom?", "loc": "nq question: who is Rome's mayor", "loc_ans": "X",
                                 "portability": {"New Question": "When was the author of Hamlet born?", "New Answer": "1564"}}]))
    for data in (path, zsre):
        assert main([*argv[:2], str(data), *argv[3:], "--consequences"]) == 0
        assert "0 consequence probes from the unedited model's answers" in capsys.readouterr().err
