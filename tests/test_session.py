"""The workbench session logic (what the web page shows), on a tiny model."""

from __future__ import annotations

import json

import pytest

from searc.data import EditCase, Probe
from searc.editor import DEFAULT_DECLINE_THRESHOLD
from searc.memory import Edit
from searc.session import Session
from searc.system import SystemPool
from tests.conftest import make_system
from tests.test_editor import perturb_adapter


@pytest.fixture(scope="module")
def system():
    system = make_system("llama")
    perturb_adapter(system)
    system.classifier.scale.data.fill_(0.0)
    system.classifier.bias.data.fill_(0.0)  # every score is exactly 0.5
    return system


def test_add_probe_reroute_inspect(system):
    session = Session(system)
    session.add_edit("The Eiffel Tower is located in the city of", "Rome", "Eiffel Tower")
    session.add_edit("The capital of Japan is", "Kyoto", "")
    assert session.memory_table()["id"].tolist() == ["e1", "e2"]
    results = session.probe("The Eiffel Tower stands in\n\n  The capital of Japan is  \n", 0.5)
    assert [r.prompt for r in results] == ["The Eiffel Tower stands in", "The capital of Japan is"]
    assert all(r.routed and r.counterfactual_output is not None for r in results)
    table = session.results_table()
    assert table["routed"].tolist() == ["yes", "yes"] and table["final output"].tolist() == [r.output for r in results]
    rerouted = session.reroute(0.6)
    assert not any(r.routed for r in rerouted)
    assert [r.output for r in rerouted] == [r.base_output for r in rerouted]
    assert "below the threshold 0.60" in session.explanations()
    comparisons = session.inspect("The capital of Japan is", "Tokyo\nKyoto\nTokyo")
    assert [c.target for c in comparisons][-2:] == ["Tokyo", "Kyoto"]  # a target typed twice is scored once
    assert all(len(c.base_nll) == len(c.edited_nll) == len(c.tokens) for c in comparisons)


def test_the_results_table_shows_what_a_declining_counterfactual_model_would_have_answered(system, monkeypatch):
    from searc.lm import Generation

    session = Session(system)
    session.add_edit("The Eiffel Tower is located in the city of", "Rome", "Eiffel Tower")
    monkeypatch.setattr(system.counterfactual, "generate", lambda prompts, max_new_tokens=None, answer=False, finish=None: [Generation(" Rome", [5], 0.9) for _ in prompts])
    session.probe("The Eiffel Tower was designed by", 0.5)
    row = session.results_table().iloc[0]
    assert row["routed"] == "declined" and row["counterfactual output"] == "(declines, p(end) 90%)  Rome"
    assert row["final output"] == row["base output"]
    session.reroute(0.6)  # not routed: the column still says that it would decline
    row = session.results_table().iloc[0]
    assert row["routed"] == "no" and row["counterfactual output"].startswith("(declines, p(end) 90%)")


def test_a_session_moves_its_decline_threshold_without_running_a_model_or_touching_the_shared_system(system, monkeypatch):
    from searc.lm import Generation

    session, other = Session(system), Session(system)
    session.add_edit("The Eiffel Tower is located in the city of", "Rome", "Eiffel Tower")
    monkeypatch.setattr(system.counterfactual, "generate", lambda prompts, max_new_tokens=None, answer=False, finish=None: [Generation(" Rome", [5], 0.9) for _ in prompts])
    [declined] = session.probe("The Eiffel Tower was designed by", 0.0, 0.6)
    assert declined.declined and declined.output == declined.base_output

    def no_model(*args, **kwargs):
        raise AssertionError("moving a threshold must not run a model")

    monkeypatch.setattr(system.counterfactual, "generate", no_model)
    monkeypatch.setattr(system.base, "generate", no_model)
    [answered] = session.reroute(0.0, 0.95)
    assert answered.routed and not answered.declined and answered.output == " Rome" and answered.decline_threshold == 0.95
    assert session.editor.decline_threshold == 0.95 and session.reroute(0.0)[0].decline_threshold == 0.95  # kept when not given
    assert system.decline_threshold == DEFAULT_DECLINE_THRESHOLD and other.editor.decline_threshold == DEFAULT_DECLINE_THRESHOLD
    before = (session.editor.threshold, session.editor.decline_threshold, list(session.results))
    for bad in (lambda: session.reroute(0.3, 1.5), lambda: session.reroute(1.5, 0.3), lambda: session.probe("x", 0.3, -0.1)):
        with pytest.raises(ValueError, match="threshold"):
            bad()
        assert (session.editor.threshold, session.editor.decline_threshold, list(session.results)) == before


def test_a_session_decodes_freely_or_finishes_targets_without_touching_the_shared_system(system, monkeypatch):
    from searc.lm import LanguageModel

    finishes, generate = [], LanguageModel.generate

    def recorded(self, prompts, max_new_tokens=None, answer=False, finish=None):
        if self is system.counterfactual:
            finishes.append(finish)
        return generate(self, prompts, max_new_tokens, answer, finish)

    monkeypatch.setattr(LanguageModel, "generate", recorded)
    system.kept_answers.clear()  # other tests of the module probed the same: what is asked of generation here is the point
    session, other = Session(system), Session(system)
    session.add_edit("The Eiffel Tower is located in the city of", "Rome", "Eiffel Tower")
    [finished] = session.probe("The Eiffel Tower stands in", 0.5)
    [free] = session.set_finish_targets(False, "The Eiffel Tower stands in", 0.5)
    assert finishes == [["Rome"], [None]] and free.prompt == finished.prompt  # probed again, decoding freely
    assert not session.editor.finish_targets and system.finish_targets and other.editor.finish_targets
    before = list(session.results)
    with pytest.raises(ValueError, match="threshold"):
        session.set_finish_targets(True, "The Eiffel Tower stands in", 1.5)
    assert not session.editor.finish_targets and session.results == before  # bad input changes nothing
    session.use_system(system)
    assert not session.editor.finish_targets, "another checkpoint keeps the session's decoding"
    session.evaluate(SystemPool(system), [EditCase(Edit("The Eiffel Tower is located in the city of", "Rome"), (Probe("The Eiffel Tower stands in", "Rome"),), ())], "batch")
    assert not any(finishes[-1] or []) and session.evaluation.report.finish_targets is False


def test_sessions_do_not_share_memory(system):
    first, second = Session(system), Session(system)
    first.add_edit("The Eiffel Tower is located in the city of", "Rome")
    assert len(second.editor.edits) == 0
    assert second.probe("The Eiffel Tower stands in", 0.5)[0].best_edit is None


def test_bad_input_leaves_the_session_unchanged(system):
    session = Session(system)
    session.add_edit("The Eiffel Tower is located in the city of", "Rome")
    session.probe("The Eiffel Tower stands in", 0.5)
    before = (session.export_json(), list(session.results))
    for action in (
        lambda: session.add_edit("", "Rome"),
        lambda: session.add_edit("The Eiffel Tower is located in the city of", "Paris"),
        lambda: session.add_edit("The Louvre is located in the city of", "Rome", "Eiffel Tower"),  # a subject not in the prompt
        lambda: session.probe("   \n  ", 0.5),
        lambda: session.probe("ok", 1.5),
        lambda: session.reroute(-1),
        lambda: session.inspect("never probed", ""),
    ):
        with pytest.raises(ValueError):
            action()
        assert (session.export_json(), list(session.results)) == before
    with pytest.raises(KeyError):
        session.remove_edit("e99")


def test_export_is_reloadable_json(system):
    session = Session(system)
    session.add_edit("The Eiffel Tower is located in the city of", "Rome", "Eiffel Tower")
    exported = json.loads(session.export_json())
    assert exported == [{"prompt": "The Eiffel Tower is located in the city of", "target_new": "Rome", "subject": "Eiffel Tower", "id": "e1"}]


def test_every_lesson_loads_and_replaces_the_memory(system):
    from searc.lessons import load_lessons

    lessons = load_lessons()
    assert len(lessons) >= 4
    assert any(p.in_scope for lesson in lessons for p in lesson.probes)
    assert any(not p.in_scope for lesson in lessons for p in lesson.probes)
    session = Session(system)
    session.add_edit("Something unrelated is", "here")
    before = session.editor.threshold
    assert any(lesson.threshold is None for lesson in lessons) and any(lesson.threshold is not None for lesson in lessons)
    for lesson in lessons:
        session.load_lesson(lesson)
        assert [e.prompt for e in session.editor.edits] == [e.prompt for e in lesson.edits]
        expected = lesson.threshold if lesson.threshold is not None else before
        assert session.editor.threshold == expected
        before = session.editor.threshold
        assert len(session.probe(lesson.probes_text(), session.editor.threshold)) == len(lesson.probes)


def test_import_edits_from_a_file_is_all_or_nothing(system, tmp_path):
    session = Session(system)
    session.add_edit("Toko Yasuda plays the", "piano")
    path = tmp_path / "edits.json"
    path.write_text(json.dumps([{"prompt": "The capital of Japan is", "target_new": "Kyoto"}, {"prompt": "Toko Yasuda plays the", "target_new": "drums"}]))
    with pytest.raises(ValueError, match="already stored"):
        session.import_edits(str(path))
    assert [e.target_new for e in session.editor.edits] == ["piano"]
    path.write_text(json.dumps([{"prompt": "The capital of Japan is", "target_new": "Kyoto", "subject": "Japan"}]))
    assert [e.subject for e in session.import_edits(str(path))] == ["Japan"]


def test_training_and_evaluation_run_from_the_session_without_a_browser(system, tmp_path):
    import threading

    from searc.train import TrainConfig
    from tests.test_ui import tiny_loader

    cases = [
        EditCase(Edit(f"The colour of object {i} is", "blue", subject=f"object {i}"),
                 (Probe(f"The colour of object {i} is", "blue"), Probe(f"Object {i} is coloured", "blue")),
                 (Probe(f"The colour of object {i + 10} is", "red"),))
        for i in range(3)
    ]
    session, pool = Session(system), SystemPool(system, loader=tiny_loader)
    config = TrainConfig(steps=2, batch_edits=2, val_every=1, val_cases=2)
    events = list(session.train(pool, cases, cases, config, "dense", tmp_path / "ck", threading.Event()))
    kinds = [event.kind for event, _ in events]
    assert kinds[-1] == "done" and kinds.count("step") == 2 and kinds.count("validation") == 2
    curves = events[-1][1]
    assert curves.steps == [1, 2] and curves.val_steps == [1, 2] and len(curves.losses["loss"]) == 2
    assert session.system is system, "training works on a system of its own"
    assert list(session.evaluate(pool, cases[:2], "batch").rows) == ["unedited model", "this editor"]  # untrained: it is the zero-shot editor
    session.use_system(pool.get(tmp_path / "ck"))
    seen = []
    evaluation = session.evaluate(pool, cases[:2], "batch", progress=lambda name, done, total: seen.append(name))
    assert list(evaluation.rows) == ["unedited model", "zero-shot editor", "this editor"]
    assert evaluation.report.n_cases == 2 and {"this editor", "zero-shot editor"} <= set(seen)
    with pytest.raises(ValueError, match="other facts a case"):
        session.evaluate(pool, cases[:2], "batch", other_facts=-1)
    assert session.evaluation is evaluation, "bad input keeps the last evaluation"
    speakers = [EditCase(Edit(f"The mother tongue of Person {i} is", "English", subject=f"Person {i}"),
                         (Probe(f"The mother tongue of Person {i} is", "English"),), ()) for i in range(2)]
    report = session.evaluate(pool, speakers, "batch", other_facts=2).report
    assert report.group_sizes == {"locality/other_fact": 4}  # two other facts of each speaker, as locality apart


def test_token_view_scope_view_and_claims_of_a_probe(system):
    session = Session(system)
    session.add_edit("The Eiffel Tower is located in the city of", "Rome", "Eiffel Tower")
    session.add_edit("The capital of Japan is", "Kyoto", "")
    session.probe("The Eiffel Tower stands in\nThe capital of Japan is", 0.5)  # every score is 0.5: all routed
    result = session.results[0]
    strips = session.output_tokens(result.prompt)
    names = [s.name for s in strips]
    assert names[0] == "base output" and strips[0].producer == "base model"
    for strip in strips:
        assert strip.tokens and strip.text.strip()
        for token in strip.tokens:
            assert token.nll >= 0 and len(token.alternatives) == 5
            assert sum(p for _, p in token.alternatives) <= 1.0 + 1e-5
            assert token.other_nll is None or token.other_nll >= 0
    if result.routed and not result.declined:
        assert names == ["base output", "final output"] and strips[1].producer == "counterfactual model"
    view = session.scope_view(result.prompt)
    assert [n.edit.id for n in view.nearest] == ["e1", "e2"] and all(n.passes for n in view.nearest)
    assert 0.0 <= view.decline_probability <= 1.0 and view.decision == result.explanation()
    assert "would decline" in session.scope_markdown(result.prompt)
    claimed = session.claims_table(result.best_edit.id)
    assert set(claimed["probe"]) == {r.prompt for r in session.results if r.routed and not r.declined and r.best_edit.id == result.best_edit.id}
    with pytest.raises(ValueError, match="no stored edit"):
        session.claims_table("e9")
    with pytest.raises(ValueError, match="probe first"):
        session.output_tokens("never probed")
