"""The workbench's figures: what they plot, and empty charts that say what will fill them."""

from __future__ import annotations

from searc.charts import nll_chart, scope_heatmap, token_strips
from searc.editor import ProbeResult
from searc.memory import Edit


def result(prompt: str, scores: dict[str, float], edit: Edit, threshold: float = 0.5) -> ProbeResult:
    best = max(scores.values())
    return ProbeResult(prompt, scores, edit, best, best >= threshold, " base", " cf", " cf" if best >= threshold else " base", threshold)


def test_the_scope_heatmap_marks_scores_at_or_above_the_threshold():
    e1, e2 = Edit("The Eiffel Tower is in", "Rome", id="e1"), Edit("Tokyo is the capital of", "Korea", id="e2")
    results = [result("Where is the Eiffel Tower?", {"e1": 0.9, "e2": 0.1}, e1), result("The capital of Japan is", {"e1": 0.2, "e2": 0.5}, e2)]
    [heatmap] = scope_heatmap(results, [e1, e2], threshold=0.5).data
    assert [list(row) for row in heatmap.z] == [[0.9, 0.1], [0.2, 0.5]]
    assert [list(row) for row in heatmap.text] == [["0.90 ✓", "0.10"], ["0.20", "0.50 ✓"]]
    assert heatmap.x[0].startswith("e1: ") and heatmap.y[1] == "The capital of Japan is"


def test_empty_charts_have_no_axes_and_say_what_fills_them():
    edit = Edit("The Eiffel Tower is in", "Rome", id="e1")
    placeholders = {
        "no edits stored": scope_heatmap([], [], 0.5),
        "no probes yet": scope_heatmap([], [edit], 0.5),
        "pick a probe": nll_chart([]),
        "probe first": token_strips([]),
    }
    for note, figure in placeholders.items():
        assert not figure.data
        assert not figure.layout.xaxis.visible and not figure.layout.yaxis.visible
        assert note in figure.layout.annotations[0].text
