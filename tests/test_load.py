"""The load harness against the tiny app in `make test`: a class of 20 sessions (half of them on
a lesson) while another evaluates, batched: no errors, nobody sees another's edits, and the
scheduler did put several sessions' rows in one pass."""

from __future__ import annotations

from tests.load import Scenario, run_scenario
from tests.test_ui import server_dirs, url  # noqa: F401  (the launched tiny app and its directories)


def test_a_class_of_twenty_stays_isolated_and_error_free_and_is_batched(url):  # noqa: F811
    measured = run_scenario(url, Scenario("classroom-20+eval", 20, seconds=8, pause=(0.1, 0.5), evaluation=True))
    print(measured.summary())
    assert not measured.errors, measured.errors[:3]
    assert not measured.leaks, measured.leaks[:3]
    assert {"load_lesson", "add_edit", "probe", "inspect", "evaluate"} <= set(measured.latencies_ms)
    assert measured.calls >= 60, "every session must get through its lesson, an edit and a probe"
    assert measured.scheduler["requests"] > measured.scheduler["passes"] > 0  # passes held several requests


def test_today_s_edit_and_probe_loop_unbatched_stays_isolated(url):  # noqa: F811
    measured = run_scenario(url, Scenario("edit-probe-20", 20, seconds=5, pause=(0.0, 0.0), kind="edit-probe", batching=False))
    assert not measured.errors and not measured.leaks, (measured.errors + measured.leaks)[:3]
    assert measured.calls >= 40 and measured.scheduler["passes"] == 0
