"""One scheduler for the shared models: every session's model work, batched.

A class shares one server, and in a batched greedy pass a row costs about half what it costs
alone (on two cores, counterfactual rows: 0.25 s alone, 0.13 s a row in a pass of 8 or 32;
`python -m tests.pass_costs`). So sessions do not run their own
generation under the model's lock one after another: they hand their rows to the scheduler and
wait, and one worker thread runs whatever is waiting as few passes as it can, as serving systems
batch whatever is queued (vLLM, TGI).

- A *lane* is one kind of pass over one model: greedy generation by one model view (base or
  counterfactual, answering or not), teacher-forced scoring by one view (the token view, the
  per-target NLL), or the classifier's encoder over probes and new edits. Rows of one
  lane from any number of requests share a pass; each row keeps its own settings (its own
  prompt and edit in context, its own target to finish, its own token budget, cut to it after the
  pass), so a session gets what it gets alone.
- A pass has a bound (`max_batch_tokens`: rows times padded tokens), so one request of 64 probes
  cannot hold 19 others for long. Requests are served in arrival order: a pass takes first up to
  `rows_per_request` rows of each waiting request of the head's lane, oldest first, then fills
  what the bound leaves with their other rows; the rest wait for the next pass, at the head.
- Nothing waits for company: a request that finds the worker idle starts at once. Cheap lanes
  (the encoder: milliseconds a pass) go before generation, so routing never waits for seconds.
- A caller with independent work (a probe's routing and its base answers) hands both in at
  once with `together`, so they queue together instead of one after the other.
- A failing pass is run again request by request, so one request's error is its own.
- Training and evaluation run for minutes; between steps they take `background_turn()`, which
  waits (up to a patience) until no request is queued or running, so they give the cores back.

`shared()` is the process's scheduler (the cores are the process's, whichever system of the pool
a session uses); `configure(batching=False)` makes every request run alone in its caller's thread
under the model's lock, as before, so the load test measures the speed-up in one run.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Hashable, Iterator, Protocol, Sequence

MAX_BATCH_TOKENS = 2048  # about 32 counterfactual rows of 64 padded tokens: a pass of about 4 s on two cores
ROWS_PER_REQUEST = 8  # what a request takes of a shared pass before the others' rows (then the bound fills up)
BACKGROUND_PATIENCE_S = 30.0  # training and evaluation wait for idle cores at most this long a step


class Lane(Protocol):
    """One kind of batched pass; rows of one lane from many requests share a pass."""

    key: Hashable
    priority: int  # lower goes first: a pass of milliseconds (the encoder) does not wait behind seconds of generation

    def cost(self, rows: Sequence) -> int:
        """What a pass over `rows` costs, in padded tokens (rows x the longest)."""

    def run(self, rows: Sequence) -> list:
        """One pass: a result per row, in order."""


@dataclass(eq=False)
class _Request:
    lane: Lane
    rows: list
    arrival: int
    results: list = field(init=False)
    next_row: int = 0  # rows before it are in a pass already
    finished_rows: int = 0
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.results = [None] * len(self.rows)

    @property
    def waiting_rows(self) -> int:
        return len(self.rows) - self.next_row


@dataclass
class SchedulerStats:
    """What the worker has done since the process started (the load test reads it)."""

    passes: int = 0
    rows: int = 0
    requests: int = 0
    busy_s: float = 0.0  # seconds the worker spent in passes


class Scheduler:
    def __init__(self, batching: bool = True, max_batch_tokens: int = MAX_BATCH_TOKENS, rows_per_request: int = ROWS_PER_REQUEST) -> None:
        self.batching = batching
        self.max_batch_tokens = max_batch_tokens
        self.rows_per_request = rows_per_request
        self.stats = SchedulerStats()
        self._queue: list[_Request] = []  # arrival order; a request leaves it when its last row is in a pass
        self._running: list[_Request] = []  # requests with rows in the pass now running
        self._arrivals = 0
        self._condition = threading.Condition()
        self._worker: threading.Thread | None = None
        self._local = threading.local()  # the caller's waiting reporter, if any

    # ------------------------------------------------------------------ callers
    def run(self, lane: Lane, rows: Sequence) -> list:
        """The lane's result for every row, batched with whatever else is waiting."""
        rows = list(rows)
        if not rows:
            return []
        if not self.batching or threading.current_thread() is self._worker:  # alone, or a pass's own nested work
            return lane.run(rows)
        with self._condition:
            self._arrivals += 1
            request = _Request(lane, rows, self._arrivals)
            self._queue.append(request)
            self.stats.requests += 1
            self._start_worker()
            self._condition.notify_all()
        report = getattr(self._local, "report", None)
        while not request.done.wait(0.25 if report else None):
            report(self.ahead_of(request))
        if request.error is not None:
            raise request.error
        return request.results

    def ahead_of(self, request: _Request) -> int:
        """Requests before this one: in the running pass, or queued earlier."""
        with self._condition:
            if request in self._running:
                return len([r for r in self._running if r is not request])
            earlier = [r for r in self._queue if r.arrival < request.arrival]
            return len({id(r) for r in earlier + self._running})

    @contextlib.contextmanager
    def waiting_reported(self, report: Callable[[int], None]) -> Iterator[None]:
        """Inside, a request of this thread that waits calls `report(requests ahead)` about four times a second."""
        previous = getattr(self._local, "report", None)
        self._local.report = report
        try:
            yield
        finally:
            self._local.report = previous

    def waiting(self) -> int:
        """Requests with rows not yet in a pass."""
        with self._condition:
            return len(self._queue)

    def busy(self) -> bool:
        with self._condition:
            return bool(self._queue or self._running)

    def background_turn(self, patience: float = BACKGROUND_PATIENCE_S) -> None:
        """Long work (a training step, an evaluation batch) waits here until no request is queued
        or running, or `patience` seconds have passed, so that probes get the cores first."""
        if not self.batching:
            return
        deadline = time.monotonic() + patience
        with self._condition:
            while (self._queue or self._running) and time.monotonic() < deadline:
                self._condition.wait(min(0.1, max(0.0, deadline - time.monotonic())))

    # ------------------------------------------------------------------ the worker
    def _start_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._serve, name="searc-scheduler", daemon=True)
            self._worker.start()

    def _serve(self) -> None:
        while True:
            with self._condition:
                while not self._queue:
                    self._condition.wait()
                lane, taken = self._take()
                self._running = list(dict.fromkeys(request for request, _ in taken))
                self._queue = [r for r in self._queue if r.waiting_rows]
            self._pass(lane, taken)
            with self._condition:
                self._running = []
                self._condition.notify_all()

    def _take(self) -> tuple[Lane, list[tuple[_Request, int]]]:
        """The next pass: (request, row index) pairs of the head request's lane, within the bound.
        The head is the oldest request of the most urgent lane waiting. First up to
        `rows_per_request` of each waiting request, oldest first, then more of theirs."""
        lane = min(self._queue, key=lambda r: (r.lane.priority, r.arrival)).lane
        waiting = [r for r in self._queue if r.lane.key == lane.key]
        taken: list[tuple[_Request, int]] = []
        rows: list = []  # the pass's rows so far, in `taken`'s order
        in_pass = {id(r): 0 for r in waiting}
        for share in (self.rows_per_request if len(waiting) > 1 else None, None):
            for request in waiting:
                while request.waiting_rows and (share is None or in_pass[id(request)] < share):
                    row = request.rows[request.next_row]
                    if taken and lane.cost([*rows, row]) > self.max_batch_tokens:
                        return lane, taken
                    taken.append((request, request.next_row))
                    rows.append(row)
                    request.next_row += 1
                    in_pass[id(request)] += 1
        return lane, taken

    def _pass(self, lane: Lane, taken: list[tuple[_Request, int]]) -> None:
        by_request: dict[_Request, list[int]] = {}  # each request's row indices in this pass
        for request, i in taken:
            by_request.setdefault(request, []).append(i)
        started = time.perf_counter()
        try:
            outputs = lane.run([request.rows[i] for request, i in taken])
            self.stats.passes += 1
            self.stats.rows += len(taken)
        except BaseException:  # noqa: BLE001 (each request alone, so that an error is its own)
            outputs = None
        finally:
            self.stats.busy_s += time.perf_counter() - started
        if outputs is None:
            for request, indices in by_request.items():
                try:
                    for i, output in zip(indices, lane.run([request.rows[i] for i in indices])):
                        request.results[i] = output
                except BaseException as error:  # noqa: BLE001 (handed to the request's caller)
                    request.error = error
                self._finish(request, len(indices))
            return
        for (request, i), output in zip(taken, outputs):
            request.results[i] = output
        for request, indices in by_request.items():
            self._finish(request, len(indices))

    def _finish(self, request: _Request, rows: int) -> None:
        request.finished_rows += rows
        if request.error is not None or request.finished_rows == len(request.rows):
            with self._condition:
                if request.error is not None and request in self._queue:  # its other rows need not run
                    self._queue.remove(request)
            request.done.set()


def together(*calls: Callable[[], object]) -> list:
    """Run independent calls at once (each may wait on the scheduler) and return their results
    in order; the first runs in the caller's thread, so its waiting is the one reported. Without
    batching they run one after another, as before."""
    if len(calls) < 2 or not _shared.batching:
        return [call() for call in calls]
    results: list = [None] * len(calls)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            results[index] = calls[index]()
        except BaseException as error:  # noqa: BLE001 (raised in the caller's thread below)
            errors.append(error)

    helpers = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(1, len(calls))]
    for helper in helpers:
        helper.start()
    run(0)
    for helper in helpers:
        helper.join()
    if errors:
        raise errors[0]
    return results


_shared = Scheduler()


def shared() -> Scheduler:
    """The process's scheduler."""
    return _shared


def configure(batching: bool | None = None, max_batch_tokens: int | None = None, rows_per_request: int | None = None) -> Scheduler:
    """Set the process's scheduler (app and load test: `--no-batching`, the bound)."""
    if batching is not None:
        _shared.batching = batching
    if max_batch_tokens is not None:
        if max_batch_tokens < 1:
            raise ValueError(f"the batch bound must be at least 1 token, got {max_batch_tokens}")
        _shared.max_batch_tokens = max_batch_tokens
    if rows_per_request is not None:
        _shared.rows_per_request = max(1, rows_per_request)
    return _shared
