"""Lessons as checks: what each labelled probe must answer, whether a result holds, and the
session's and the command's view of it (tiny random models; the bundled models' lessons are
in test_integration)."""

from __future__ import annotations

import json

import pytest

from searc.cli import main
from searc.editor import ProbeResult
from searc.lessons import LabelledProbe, Lesson, ProbeCheck, check_lesson, load_lesson, load_lessons
from searc.memory import Edit
from searc.session import Session
from tests.conftest import make_system, save_tiny_models

EIFFEL = Edit("The Eiffel Tower is located in the city of", "Rome", "Eiffel Tower")
DARRIEUX = Edit("The mother tongue of Danielle Darrieux is", "English", "Danielle Darrieux")


@pytest.fixture(scope="module")
def system():
    return make_system()


def result(prompt: str, output: str, base_output: str, routed: bool = True) -> ProbeResult:
    return ProbeResult(prompt, {"e1": 0.9}, EIFFEL, 0.9, routed, base_output, output, output, 0.5)


def lesson(*probes: LabelledProbe, edits: tuple[Edit, ...] = (EIFFEL,)) -> Lesson:
    return Lesson("A lesson", "Its point.", None, edits, probes)


def test_an_in_scope_probe_expects_its_consequence_else_the_target_of_the_edit_it_names():
    single = lesson()
    assert single.answer_for(LabelledProbe("Where is the Eiffel Tower? It is in", True)) == "Rome"
    assert single.answer_for(LabelledProbe("The Eiffel Tower is in the country of", True, "Italy")) == "Italy"
    assert single.answer_for(LabelledProbe("The capital of Japan is", False)) is None
    several = lesson(edits=(EIFFEL, DARRIEUX))
    assert several.answer_for(LabelledProbe("Danielle Darrieux speaks the language", True)) == "English"
    with pytest.raises(ValueError, match="names the subject of 0 of its edits"):
        several.answer_for(LabelledProbe("The tower stands in the city of", True))


def test_a_lesson_whose_in_scope_probe_has_no_answer_is_refused_when_loaded(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({
        "title": "Ambiguous", "point": "p", "edits": [EIFFEL.to_dict(), DARRIEUX.to_dict()],
        "probes": [{"prompt": "Where is it?", "in_scope": True}],
    }))
    with pytest.raises(ValueError, match="'Where is it\\?' names the subject of 0 of its edits; give it an \"expected\" answer"):
        load_lesson(path)
    assert all(l.answer_for(p) or not p.in_scope for l in load_lessons() for p in l.probes)  # the shipped ones all load


def test_a_check_holds_when_in_scope_begins_with_the_answer_and_out_of_scope_keeps_the_base_output():
    in_scope = LabelledProbe("The Eiffel Tower stands in the city of", True)
    out_of_scope = LabelledProbe("The Eiffel Tower was designed by", False)
    assert ProbeCheck(in_scope, "Rome", result(in_scope.prompt, " Rome", " Paris")).holds
    wrong = ProbeCheck(in_scope, "Italy", result(in_scope.prompt, " Rome", " Paris"))
    assert not wrong.holds and wrong.describe() == "✗ not as labelled (in scope, expects “Italy”): got “Rome”"
    kept = ProbeCheck(out_of_scope, None, result(out_of_scope.prompt, " Gustave Eiffel", " Gustave Eiffel", routed=False))
    assert kept.holds and kept.describe() == "✓ as labelled (out of scope, keeps the base output)"
    parroted = ProbeCheck(out_of_scope, None, result(out_of_scope.prompt, " Rome", " Gustave Eiffel"))
    assert not parroted.holds and parroted.describe().endswith("got “Rome”, the base model “Gustave Eiffel”")
    # an output of several lines is shown on one
    assert ProbeCheck(in_scope, "Rome", result(in_scope.prompt, " the city of Rome.\n\nIt", " Paris")).describe().endswith("got “the city of Rome. It”")
    # the base output must stand exactly, not just begin the same way
    assert not ProbeCheck(out_of_scope, None, result(out_of_scope.prompt, " Gustave", " Gustave Eiffel")).holds


def test_check_lesson_probes_them_all_at_the_lessons_threshold_unless_one_is_given(system):
    scenario = Lesson("T", "p", 0.0, (EIFFEL,), (LabelledProbe(EIFFEL.prompt, True), LabelledProbe("The capital of Japan is", False)))
    checks = check_lesson(system, scenario)
    assert [c.probe for c in checks] == list(scenario.probes)
    assert all(c.result.routed and c.result.threshold == 0.0 for c in checks)  # the lesson's own threshold
    never = check_lesson(system, scenario, threshold=1.0)
    assert not any(c.result.routed for c in never)
    assert [c.holds for c in never] == [False, True]  # unrouted, the in-scope probe gets the base answer


def test_a_session_checks_the_lesson_while_its_memory_holds_the_lessons_edits(system):
    scenario = load_lessons()[0]
    session = Session(system)
    session.load_lesson(scenario)
    session.probe(scenario.probes_text(), 0.0)
    checks = session.lesson_checks()
    assert [c.probe for c in checks] == list(scenario.probes)
    held = sum(c.holds for c in checks)
    assert session.probe_summary().endswith(f"Lesson “{scenario.title}”: {held} of {len(checks)} probes as labelled.")
    explanations = session.explanations()
    assert explanations.startswith(f"Lesson “{scenario.title}”") and explanations.count("as labelled (") == len(checks)
    # probes typed beside the lesson's are explained, not checked
    session.probe(scenario.probes_text() + "\nSomething else entirely is", 0.0)
    assert len(session.lesson_checks()) == len(checks) and len(session.results) == len(checks) + 1
    # another edit makes it another experiment; taking it out again makes it the lesson again
    added = session.add_edit("The capital of Japan is", "Kyoto")
    assert session.active_lesson is None and session.lesson_checks() == [] and "Lesson" not in session.probe_summary()
    session.remove_edit(added.id)
    assert session.active_lesson is scenario


def test_searc_lesson_prints_each_check_and_exits_1_when_one_does_not_hold(tmp_path, capsys):
    lm, encoder = save_tiny_models(tmp_path)
    title = load_lessons()[0].title
    models = ["--lm", lm, "--encoder", encoder, "--checkpoint", "none"]
    assert main(["lesson", title, "--threshold", "1", *models]) == 1  # nothing routed: the edit's paraphrases keep the base answers
    out = capsys.readouterr().out
    assert f"Lesson “{title}”:" in out and "✗ not as labelled (in scope, expects “Rome”)" in out and "not routed" in out
    assert out.rstrip().splitlines()[-1].startswith("0 of 1 lessons hold;")
