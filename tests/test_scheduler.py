"""The scheduler: what a pass takes (bound, arrival order, fair shares), errors kept to their
request, and sessions probing at once getting what each gets alone (tiny models)."""

from __future__ import annotations

import threading
import time

import pytest

from searc import scheduler
from searc.editor import Editor
from searc.lm import GenerationLane, GenerationRow
from searc.memory import Edit
from searc.scheduler import Scheduler
from tests.conftest import make_system
from tests.test_editor import perturb_adapter


class RecordingLane:
    """Rows are strings; a pass upper-cases them, records itself, and may wait for a gate first."""

    def __init__(self, key: str = "lane", gate: threading.Event | None = None, priority: int = 1) -> None:
        self.key, self.gate, self.passes, self.priority = key, gate, [], priority

    def cost(self, rows):
        return len(rows) * max(len(r) for r in rows)

    def run(self, rows):
        if self.gate is not None:
            self.gate.wait(10)
        if "bad" in rows:
            raise ValueError("a bad row")
        self.passes.append(list(rows))
        return [r.upper() for r in rows]


def submit_in_order(sched: Scheduler, requests: list[tuple[RecordingLane, list[str]]]) -> tuple[list[threading.Thread], dict]:
    """Each request from its own thread, each queued before the next is sent."""
    results, threads = {}, []
    for index, (lane, rows) in enumerate(requests):
        def call(index=index, lane=lane, rows=rows):
            try:
                results[index] = sched.run(lane, rows)
            except Exception as error:  # noqa: BLE001
                results[index] = error
        before = sched.waiting()
        thread = threading.Thread(target=call)
        thread.start()
        threads.append(thread)
        deadline = time.monotonic() + 5
        while sched.waiting() == before and time.monotonic() < deadline:
            time.sleep(0.002)
    return threads, results


def held_scheduler(**settings) -> tuple[Scheduler, threading.Event, RecordingLane]:
    """A scheduler whose worker is busy with a gated pass until the gate opens."""
    sched, gate = Scheduler(**settings), threading.Event()
    holder = RecordingLane("holder", gate)
    thread = threading.Thread(target=sched.run, args=(holder, ["h"]))
    thread.start()
    while not sched.busy() or sched.waiting():
        time.sleep(0.002)
    return sched, gate, holder


def test_a_lone_request_runs_at_once_in_one_pass():
    sched, lane = Scheduler(), RecordingLane()
    assert sched.run(lane, ["ab", "c"]) == ["AB", "C"]
    assert lane.passes == [["ab", "c"]] and sched.stats.passes == 1


def test_waiting_requests_share_one_pass_in_arrival_order():
    sched, gate, _ = held_scheduler()
    lane = RecordingLane()
    threads, results = submit_in_order(sched, [(lane, ["a1", "a2"]), (lane, ["b1"]), (lane, ["c1", "c2", "c3"])])
    gate.set()
    for thread in threads:
        thread.join(5)
    assert lane.passes == [["a1", "a2", "b1", "c1", "c2", "c3"]]
    assert results == {0: ["A1", "A2"], 1: ["B1"], 2: ["C1", "C2", "C3"]}


def test_a_large_request_shares_passes_within_the_bound():
    """64 rows ahead of two small requests: each pass gives every request its share first, and no
    pass costs more than the bound."""
    sched, gate, _ = held_scheduler(max_batch_tokens=20, rows_per_request=3)
    lane = RecordingLane()
    big = [f"x{i:02d}" for i in range(64)]  # 3 characters each: at most 6 rows a pass
    threads, results = submit_in_order(sched, [(lane, big), (lane, ["s1"]), (lane, ["t1", "t2"])])
    gate.set()
    for thread in threads:
        thread.join(10)
    assert lane.passes[0] == ["x00", "x01", "x02", "s1", "t1", "t2"]
    assert all(lane.cost(rows) <= 20 for rows in lane.passes)
    assert results[0] == [row.upper() for row in big] and results[1] == ["S1"] and results[2] == ["T1", "T2"]


def test_each_lane_gets_its_own_passes_in_arrival_order():
    sched, gate, _ = held_scheduler()
    first, second = RecordingLane("first"), RecordingLane("second")
    threads, _ = submit_in_order(sched, [(second, ["s"]), (first, ["f"]), (second, ["t"])])
    gate.set()
    for thread in threads:
        thread.join(5)
    assert second.passes == [["s", "t"]] and first.passes == [["f"]]


def test_a_cheap_lane_goes_before_generation_that_arrived_earlier():
    sched, gate, _ = held_scheduler()
    slow, cheap, order = RecordingLane("slow"), RecordingLane("cheap", priority=0), []
    slow.run = lambda rows: order.append("slow") or [r.upper() for r in rows]
    cheap.run = lambda rows: order.append("cheap") or [r.upper() for r in rows]
    threads, _ = submit_in_order(sched, [(slow, ["s"]), (cheap, ["c"])])
    gate.set()
    for thread in threads:
        thread.join(5)
    assert order == ["cheap", "slow"]


def test_together_queues_independent_calls_at_once():
    sched = scheduler.shared()
    gate, lane = threading.Event(), RecordingLane("together")
    holder = threading.Thread(target=sched.run, args=(RecordingLane("hold", gate), ["h"]))
    holder.start()
    while not sched.busy() or sched.waiting():
        time.sleep(0.002)
    results = {}
    caller = threading.Thread(target=lambda: results.update(out=scheduler.together(lambda: sched.run(lane, ["a"]), lambda: sched.run(lane, ["b"]))))
    caller.start()
    deadline = time.monotonic() + 5
    while sched.waiting() < 2 and time.monotonic() < deadline:
        time.sleep(0.002)
    gate.set()
    caller.join(5)
    holder.join(5)
    assert results["out"] == [["A"], ["B"]] and sorted(lane.passes[0]) == ["a", "b"]  # both were queued before either ran


def test_an_error_stays_with_its_request():
    sched, gate, _ = held_scheduler()
    lane = RecordingLane()
    threads, results = submit_in_order(sched, [(lane, ["ok"]), (lane, ["bad"]), (lane, ["fine"])])
    gate.set()
    for thread in threads:
        thread.join(5)
    assert results[0] == ["OK"] and results[2] == ["FINE"]
    assert isinstance(results[1], ValueError)


def test_a_waiting_request_is_told_how_many_are_ahead():
    sched, gate, _ = held_scheduler()
    lane, seen = RecordingLane(), []
    threads, _ = submit_in_order(sched, [(lane, ["a"]), (lane, ["b"])])

    def reported():
        with sched.waiting_reported(seen.append):
            sched.run(lane, ["c"])

    watcher = threading.Thread(target=reported)
    watcher.start()
    time.sleep(0.6)
    gate.set()
    for thread in [*threads, watcher]:
        thread.join(5)
    assert seen and seen[0] == 3  # the running pass and the two queued before it


def test_background_work_waits_for_the_queue_and_not_forever():
    sched, gate, _ = held_scheduler()
    started = time.monotonic()
    sched.background_turn(patience=0.3)  # busy all along: it gives up waiting after its patience
    assert 0.25 <= time.monotonic() - started < 5
    gate.set()
    sched.background_turn(patience=5)
    assert not sched.busy()


def test_without_batching_each_request_runs_alone_in_its_thread():
    sched, lane = Scheduler(batching=False), RecordingLane()
    assert sched.run(lane, ["a"]) == ["A"] and sched.stats.passes == 0 and sched._worker is None


def test_configure_refuses_a_bound_below_one_token():
    with pytest.raises(ValueError, match="at least 1 token"):
        scheduler.configure(max_batch_tokens=0)


def test_generation_rows_of_other_callers_equal_each_caller_alone():
    """Budgets and finish targets per row: a merged pass cuts each row to its own budget."""
    system = make_system("llama", padding_side="left")
    perturb_adapter(system)
    cf = system.counterfactual
    requests = [
        (["The Eiffel Tower is located in", "The capital of Japan is"], 4, ["Rome", None]),
        (["Toko Yasuda plays the"], 9, ["piano"]),
        (["Michel Rocard is a native speaker of", "The Eiffel Tower is located in", "What is"], 6, None),
    ]
    alone = [cf.generate_pass(prompts, budget, True, finish) for prompts, budget, finish in requests]
    lane = GenerationLane(cf, True)
    rows = [GenerationRow(p, budget, (finish or [None] * len(prompts))[i], len(cf.encode(p)))
            for prompts, budget, finish in requests for i, p in enumerate(prompts)]
    merged = lane.run(rows)
    expected = [g for generations in alone for g in generations]
    assert [g.text for g in merged] == [g.text for g in expected]
    assert [len(g.token_ids) for g in merged] == [len(g.token_ids) for g in expected]
    assert [g.end_probability for g in merged] == pytest.approx([g.end_probability for g in expected], abs=1e-5)


def test_sessions_probing_at_once_get_what_each_gets_alone():
    system = make_system("llama", padding_side="left")
    perturb_adapter(system)
    system.classifier.bias.data.fill_(2.0)
    sessions = []
    for k in range(6):
        editor = Editor(system)
        editor.add_edits([Edit(f"The Eiffel Tower is located in the city of {k}", ["Rome", "Tokyo", "Paris"][k % 3], "Eiffel Tower"),
                          Edit("Toko Yasuda plays the", ["piano", "guitar"][k % 2])])
        probes = ["The Eiffel Tower stands in", f"Toko Yasuda is great at the {k}", "The capital of Japan is"][: 1 + k % 3]
        sessions.append((editor, probes))
    scheduler.configure(batching=False)
    try:
        alone = [editor.probe(probes, counterfactual_for_all=True) for editor, probes in sessions]
    finally:
        scheduler.configure(batching=True)
    system.kept_answers.clear()
    together: dict[int, list] = {}
    passes = scheduler.shared().stats.passes
    threads = [threading.Thread(target=lambda i=i, e=e, p=p: together.__setitem__(i, e.probe(p, counterfactual_for_all=True)))
               for i, (e, p) in enumerate(sessions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert scheduler.shared().stats.passes > passes
    for i, results in enumerate(alone):
        for one, many in zip(results, together[i]):
            assert (many.routed, many.declined, many.output, many.base_output, many.counterfactual_output) == (
                one.routed, one.declined, one.output, one.base_output, one.counterfactual_output)
            assert many.score == pytest.approx(one.score, abs=1e-5)
