"""Load test: concurrent gradio_client sessions against the workbench, as a class uses it.

    python -m tests.load                                   # the whole matrix on the real bundled models (`make load-test`)
    python -m tests.load --only classroom-20 --seconds 60  # one scenario of it
    python -m tests.load --url http://127.0.0.1:7860/ ...  # or drive an app that is running

Scenarios:
- edit-probe: each session adds an edit and probes one prompt, again and again, no pause;
- classroom: every other session loads the same lesson, the rest start empty; each then adds
  edits of its own with 4-6 probes typed (some shared by the class, some its own), so the
  workspace probes them again, and probes them once more, pausing 5-15 s between actions as a
  student reading results and typing would; after each, the page's inspection of the first probe
  (scope view, token view, per-target NLL) runs too, as the browser chains it;
- saturation: the classroom without pauses (the throughput the server gives);
- with evaluation: the classroom while one more session runs evaluations all along.
Each scenario in the app's own process runs batched and, where the matrix says so, again with
batching switched off (`scheduler.configure(batching=False)`), so a speed-up is a ratio of one run.

Every session checks after every call that it sees only its own edits (and the lesson's) and
that no probe went to another session's edit. The report gives per endpoint p50 / p90 / p99,
throughput, errors, isolation violations and the scheduler's passes; `--json` writes it all.
tests/test_load.py runs a short classroom against a tiny app in `make test`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gradio_client import Client

from searc import scheduler
from searc.lessons import lesson_titled

LESSON = "An edit has consequences"
SHARED_PROMPTS = [
    "The Eiffel Tower is located in the city of",
    "The Eiffel Tower is located in the country of",
    "The Louvre is located in the city of",
    "The capital of Japan is",
    "The mother tongue of Danielle Darrieux is",
    "Toko Yasuda plays the",
]


@dataclass(frozen=True)
class Scenario:
    name: str
    sessions: int
    seconds: float
    pause: tuple[float, float] = (5.0, 15.0)  # seconds between a session's actions; (0, 0): none
    kind: str = "classroom"  # or "edit-probe"
    evaluation: bool = False  # one more session evaluates all along
    batching: bool = True
    inspect: bool = True  # after each change, the inspection the page chains (gradio_client alone does not run it)


@dataclass
class Measured:
    scenario: Scenario
    calls: int = 0
    probe_rows: int = 0  # probe prompts answered (a re-probe after an edit counts its prompts)
    errors: list[str] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)  # a session saw another session's edits or routes
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    scheduler: dict = field(default_factory=dict)  # the app process's scheduler during the run, where it is in this process

    def percentile(self, endpoint: str, q: float) -> float:
        values = sorted(self.latencies_ms.get(endpoint, []))
        return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")

    def to_json(self) -> dict:
        return {
            "scenario": asdict(self.scenario), "calls": self.calls, "probe_rows": self.probe_rows,
            "probes_per_minute": self.probes_per_minute, "errors": self.errors, "leaks": self.leaks,
            "endpoints": {name: {"n": len(v), "p50_ms": self.percentile(name, 0.5), "p90_ms": self.percentile(name, 0.9),
                                 "p99_ms": self.percentile(name, 0.99), "mean_ms": statistics.fmean(v)}
                          for name, v in sorted(self.latencies_ms.items())},
            "scheduler": self.scheduler,
        }

    @property
    def probes_per_minute(self) -> float:
        return 60 * self.probe_rows / self.scenario.seconds

    def summary(self) -> str:
        s = self.scenario
        batching = "batched" if s.batching else "unbatched"
        passes = self.scheduler.get("passes")
        pass_text = (f", {passes} passes of {self.scheduler['rows'] / passes:.1f} rows on average, the worker busy "
                     f"{self.scheduler['busy_s'] / s.seconds:.0%} of the time") if passes else ""
        lines = [f"{s.name} ({batching}, {s.sessions} sessions, {s.seconds:.0f} s): {self.calls} calls, "
                 f"{self.probes_per_minute:.0f} probes a minute, {len(self.errors)} errors, {len(self.leaks)} isolation violations{pass_text}"]
        for endpoint, values in sorted(self.latencies_ms.items()):
            lines.append(f"  {endpoint:<10} n={len(values):<5} p50={self.percentile(endpoint, 0.5) / 1000:7.2f} s  "
                         f"p90={self.percentile(endpoint, 0.9) / 1000:7.2f} s  p99={self.percentile(endpoint, 0.99) / 1000:7.2f} s")
        return "\n".join(lines)


class _Session:
    """One student: a gradio_client session that records every call into `measured`."""

    def __init__(self, url: str, index: int, scenario: Scenario, measured: Measured, lock: threading.Lock, thresholds: tuple[float, float],
                 run: int = 0):
        self.url, self.index, self.scenario, self.measured, self.lock = url, index, scenario, measured, lock
        self.mark = f"r{run}s{index}x"  # each run's own facts: nothing one run generated is kept for another
        self.thresholds = thresholds
        self.rng = random.Random(index)
        self.lesson_targets: set[str] = set()

    def call(self, client: Client, endpoint: str, *args, rows: int = 0):
        started = time.perf_counter()
        result = client.predict(*args, api_name=f"/{endpoint}")
        with self.lock:
            self.measured.latencies_ms.setdefault(endpoint, []).append((time.perf_counter() - started) * 1000)
            self.measured.calls += 1
            self.measured.probe_rows += rows
        return result

    def problem(self, kind: str, text: str) -> None:
        with self.lock:
            getattr(self.measured, kind).append(f"session {self.index}: {text}")

    def check(self, memory: dict, results: dict, own: int) -> None:
        """Only this session's edits (and the lesson's) in its memory and its routes."""
        targets = [row[2] for row in memory["data"]]
        mine = [t for t in targets if t not in self.lesson_targets]
        if mine != [f"{self.mark}{k}" for k in range(own)]:
            self.problem("leaks", f"memory {targets}")
        foreign = [row[1] for row in results["data"] if row[1] and self.mark not in row[1]
                   and row[1].split(" → ", 1)[-1] not in self.lesson_targets]
        if foreign:
            self.problem("leaks", f"routed to a foreign edit: {foreign}")

    def pause(self, deadline: float) -> None:
        low, high = self.scenario.pause
        if high:
            time.sleep(max(0.0, min(self.rng.uniform(low, high), deadline - time.monotonic())))

    def probes(self, count: int) -> str:
        """4-6 probes: some the class shares, the rest about this session's newest fact."""
        n = self.rng.randint(4, 6)
        shared = self.rng.sample(SHARED_PROMPTS, n // 2)
        own = [f"Fact number {count} kept by {self.mark} is", f"What does {self.mark} keep as fact {count}?",
               f"{self.mark} keeps as fact {count} the value", f"The fact {count} that {self.mark} keeps is"]
        return "\n".join(shared + own[: n - len(shared)])

    def run(self, deadline: float) -> None:
        try:
            client = Client(self.url, verbose=False)
        except Exception as error:  # noqa: BLE001 (any failure to connect is an error of the run)
            self.problem("errors", f"could not connect: {error}")
            return
        threshold, decline = self.thresholds
        count = 0
        try:
            if self.scenario.kind == "classroom" and self.index % 2 == 0:
                lesson = lesson_titled(LESSON)
                self.lesson_targets = {e.target_new for e in lesson.edits}
                self.call(client, "load_lesson", LESSON, rows=len(lesson.probes))
            time.sleep(self.rng.uniform(0, min(self.scenario.pause[1], 5.0)))  # students do not all click at once
            while time.monotonic() < deadline:
                if self.scenario.kind == "edit-probe":
                    probes = f"Fact number {count} kept by {self.mark} is"
                    memory, *_ = self.call(client, "add_edit", probes, f"{self.mark}{count}", "", "", threshold, decline)
                    results = self.call(client, "probe", probes, threshold, decline, rows=1)[2]
                    count += 1
                    self.check(memory, results, count)
                    continue
                probes = self.probes(count)
                rows = len(probes.splitlines())
                out = self.call(client, "add_edit", f"Fact number {count} kept by {self.mark} is", f"{self.mark}{count}", "", probes,
                                threshold, decline, rows=rows)
                count += 1
                self.check(out[0], out[2], count)
                if str(out[6]).startswith("Probes not run again"):  # the page's status line: the re-probe failed
                    self.problem("errors", f"add_edit: {out[6]}")
                    return
                self.inspect(client, probes)
                self.pause(deadline)
                if time.monotonic() >= deadline:
                    break
                out = self.call(client, "probe", probes, threshold, decline, rows=rows)
                self.check(out[0], out[2], count)
                self.inspect(client, probes)
                self.pause(deadline)
        except Exception as error:  # noqa: BLE001
            self.problem("errors", f"{type(error).__name__}: {error}")

    def inspect(self, client: Client, probes: str) -> None:
        """What the page runs after every change: the picked (first) probe's scope view, token view and per-target NLL."""
        if self.scenario.inspect:
            self.call(client, "inspect", probes.splitlines()[0], "Paris\nRome")

    def evaluate(self, deadline: float, data: str, cases: int) -> None:
        client = Client(self.url, verbose=False)
        while time.monotonic() < deadline:
            try:
                self.call(client, "evaluate", data, None, cases, "batch", 0)
            except Exception as error:  # noqa: BLE001
                self.problem("errors", f"evaluate: {type(error).__name__}: {error}")
                return


_runs = iter(range(1, 1 << 30))


def run_scenario(url: str, scenario: Scenario, thresholds: tuple[float, float] = (0.5, 0.5), eval_data: str = "cases.json",
                 eval_cases: int = 3, system=None) -> Measured:
    """One scenario against the app at `url`; the scheduler's switch and stats are this process's.
    `system`, the app's when it runs in this process: its kept answers are cleared first, so that
    every scenario starts as a fresh server would (the class's shared prompts are then kept within it)."""
    measured, lock, run = Measured(scenario), threading.Lock(), next(_runs)
    if system is not None:
        system.kept_answers.clear()
    previous = scheduler.shared().batching
    scheduler.configure(batching=scenario.batching)
    before = asdict(scheduler.shared().stats)
    deadline = time.monotonic() + scenario.seconds
    sessions = [_Session(url, i, scenario, measured, lock, thresholds, run) for i in range(scenario.sessions)]
    threads = [threading.Thread(target=s.run, args=(deadline,)) for s in sessions]
    if scenario.evaluation:
        evaluator = _Session(url, scenario.sessions, scenario, measured, lock, thresholds, run)
        threads.append(threading.Thread(target=evaluator.evaluate, args=(deadline, eval_data, eval_cases)))
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        scheduler.configure(batching=previous)
    after = asdict(scheduler.shared().stats)
    measured.scheduler = {key: after[key] - before[key] for key in ("passes", "rows", "requests", "busy_s")}
    return measured


def matrix(seconds: float) -> list[Scenario]:
    """What `make load-test` measures (README "Performance", SECURITY.md)."""
    none = (0.0, 0.0)
    return [
        Scenario("edit-probe-20", 20, seconds, pause=none, kind="edit-probe"),
        Scenario("edit-probe-20", 20, seconds, pause=none, kind="edit-probe", batching=False),
        Scenario("alone", 1, seconds, pause=(1.0, 2.0)),
        Scenario("alone", 1, seconds, pause=(1.0, 2.0), batching=False),
        Scenario("classroom-20", 20, seconds),
        Scenario("classroom-20", 20, seconds, batching=False),
        Scenario("classroom-20-api", 20, seconds, inspect=False),
        Scenario("classroom-20-api", 20, seconds, inspect=False, batching=False),
        Scenario("classroom-50", 50, seconds),
        Scenario("saturation-20", 20, seconds, pause=none),
        Scenario("saturation-20", 20, seconds, pause=none, batching=False),
        Scenario("classroom-20+eval", 20, seconds, evaluation=True),
    ]


def comparison(results: list[Measured]) -> list[str]:
    """The ratios the targets are stated in, each from one run of this process."""
    def find(name: str, batching: bool = True) -> Measured | None:
        return next((m for m in results if m.scenario.name == name and m.scenario.batching == batching), None)

    lines = []
    for name in ("edit-probe-20", "alone", "classroom-20", "classroom-20-api", "saturation-20"):
        on, off = find(name), find(name, False)
        if on and off:
            endpoint = "probe" if name == "edit-probe-20" else "add_edit"
            lines.append(f"{name}: probes a minute batched / unbatched {on.probes_per_minute:.0f} / {off.probes_per_minute:.0f} = "
                         f"{on.probes_per_minute / max(off.probes_per_minute, 1e-9):.2f}x; {endpoint} p50 {on.percentile(endpoint, 0.5) / 1000:.2f} s / "
                         f"{off.percentile(endpoint, 0.5) / 1000:.2f} s")
    busy, quiet = find("classroom-20+eval"), find("classroom-20")
    if busy and quiet:
        for endpoint in ("add_edit", "probe"):
            lines.append(f"classroom-20 {endpoint} p50 with an evaluation running / without: {busy.percentile(endpoint, 0.5) / 1000:.2f} s / "
                         f"{quiet.percentile(endpoint, 0.5) / 1000:.2f} s = {busy.percentile(endpoint, 0.5) / quiet.percentile(endpoint, 0.5):.2f}x")
    return lines


def markdown(report: dict) -> str:
    """The report as the Markdown table of docs/performance.md (`--render FILE`)."""
    def seconds(endpoint: dict | None) -> str:
        return " / ".join(f"{endpoint[k] / 1000:.2f}" for k in ("p50_ms", "p90_ms", "p99_ms")) if endpoint else "–"

    lines = [
        f"`{report['command']}`, {report['date']}, {report['cores']} cores, {report['runs'][0]['scenario']['seconds']:.0f} s a scenario, real bundled models:",
        "",
        "| scenario | sessions | batching | add an edit and re-probe, s (p50 / p90 / p99) | probe, s (p50 / p90 / p99) | probes a minute | calls | errors | isolation violations | rows a pass | worker busy |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in report["runs"]:
        scenario, endpoints, sched = run["scenario"], run["endpoints"], run["scheduler"]
        passes = sched.get("passes", 0)
        batched = f"{sched['rows'] / passes:.1f} | {sched['busy_s'] / scenario['seconds']:.0%}" if passes else "– | –"
        lines.append(
            f"| {scenario['name']} | {scenario['sessions']} | {'on' if scenario['batching'] else 'off'} | {seconds(endpoints.get('add_edit'))} | "
            f"{seconds(endpoints.get('probe'))} | {run['probes_per_minute']:.0f} | {run['calls']} | {len(run['errors'])} | {len(run['leaks'])} | "
            f"{batched} |"
        )
    return "\n".join(lines + [""] + [f"- {line}" for line in report["comparison"]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60, help="each scenario's length")
    parser.add_argument("--only", action="append", help="scenarios of the matrix by name (repeatable)")
    parser.add_argument("--url", default=None, help="a running app; default: start the real one on a free port")
    parser.add_argument("--json", default="runs/load.json", help="the report as JSON")
    parser.add_argument("--render", metavar="FILE", help="print a report written by --json as Markdown, and run nothing")
    args = parser.parse_args()
    if args.render:
        print(markdown(json.loads(Path(args.render).read_text())))
        return
    app, url, thresholds, system = None, args.url, (0.9, 0.6), None
    if url is None:
        import socket

        from searc.cli import quiet_libraries
        from searc.system import load_system
        from searc.ui import build_app, serve

        quiet_libraries()
        system = load_system()
        thresholds = (system.threshold, system.decline_threshold)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        app = serve(build_app(system), server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        url = f"http://127.0.0.1:{port}/"
    scenarios = [s for s in matrix(args.seconds) if not args.only or s.name in args.only]
    results = []
    try:
        for scenario in scenarios:
            measured = run_scenario(url, scenario, thresholds, eval_data="counterfact/edit.json", eval_cases=30, system=system)
            results.append(measured)
            print(measured.summary(), flush=True)
    finally:
        if app is not None:
            app.close()
    for line in comparison(results):
        print(line)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count(),
                                           "command": "make load-test", "runs": [m.to_json() for m in results],
                                           "comparison": comparison(results)}, indent=1))


if __name__ == "__main__":
    main()
