"""20 concurrent browser sessions against one app: no errors, nobody sees another's edits."""

from __future__ import annotations

from tests.load import run_load
from tests.test_ui import server_dirs, url  # noqa: F401  (the launched tiny app and its directories)


def test_twenty_concurrent_sessions_stay_isolated_and_error_free(url):  # noqa: F811
    report = run_load(url, clients=20, seconds=8)
    print(report.summary())
    assert not report.errors, report.errors[:3]
    assert not report.leaks, report.leaks[:3]
    assert report.calls >= 40, "every client must get through at least one add and one probe"
    assert {"add_edit", "probe"} <= set(report.latencies_ms)
