"""A class at once on the bundled models: sessions probing together through the shared scheduler
get what each gets alone. The six lessons and 100 CounterFact probes (validation cases, each
session holding its own ten edits) are probed by each session alone, then by all at once; scores
agree to float precision, routing, declines and every output text exactly. A batch of another
shape can move a logit in its last bits, and the test counts any greedy token that flips (there
was none in these probes when it was written; README "Performance" says so)."""

from __future__ import annotations

import threading

import pytest

from searc import scheduler
from searc.data import load_cases
from searc.lessons import load_lessons
from searc.session import Session
from searc.system import load_system
from tests.conftest import require_shared_data

pytestmark = pytest.mark.integration


def classroom(system) -> list[tuple[Session, str]]:
    """(session, probes) for each lesson, and five sessions of ten CounterFact edits, 20 probes each."""
    sessions = []
    for lesson in load_lessons():
        session = Session(system)
        session.load_lesson(lesson)
        sessions.append((session, lesson.probes_text()))
    cases = load_cases(require_shared_data() / "counterfact" / "val.json")[:50]
    for start in range(0, 50, 10):
        session = Session(system)
        session.editor.add_edits([case.edit for case in cases[start : start + 10]])
        probes = [" ".join(p.prompt.split()) for case in cases[start : start + 10] for p in (case.in_scope[-1], *case.out_of_scope[:1])]
        sessions.append((session, "\n".join(probes)))
    return sessions


def test_sessions_at_once_answer_as_each_alone():
    system = load_system()
    sessions = classroom(system)
    assert sum(len(probes.splitlines()) for _, probes in sessions[-5:]) == 100
    alone = [session.probe(probes, session.editor.threshold) for session, probes in sessions]
    system.kept_answers.clear()  # together, everything is generated again, in shared passes
    passes = scheduler.shared().stats.passes
    together: dict[int, list] = {}
    threads = [threading.Thread(target=lambda i=i, s=s, p=p: together.__setitem__(i, s.probe(p, s.editor.threshold)))
               for i, (s, p) in enumerate(sessions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    assert len(together) == len(sessions)
    shared_passes = scheduler.shared().stats.passes - passes
    flipped, compared = [], 0
    for i, results in enumerate(alone):
        for one, many in zip(results, together[i], strict=True):
            compared += 1
            assert many.score == pytest.approx(one.score, abs=1e-4), one.prompt
            assert (many.best_edit.prompt if many.best_edit else None) == (one.best_edit.prompt if one.best_edit else None)
            assert many.decline_probability == pytest.approx(one.decline_probability, abs=1e-4)
            if (many.base_output, many.counterfactual_output) != (one.base_output, one.counterfactual_output):
                flipped.append((one.prompt, one.base_output, many.base_output, one.counterfactual_output, many.counterfactual_output))
            elif (many.routed, many.declined, many.output) != (one.routed, one.declined, one.output):
                flipped.append((one.prompt, "routing", one.routed, many.routed))
    print(f"{compared} probes in {len(sessions)} sessions, {shared_passes} shared passes; {len(flipped)} differ")
    assert shared_passes < sum(1 for _ in sessions) * 3  # the sessions' rows did share passes
    assert not flipped, flipped[:5]
