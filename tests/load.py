"""Load test: N concurrent gradio_client sessions, each adding its own edits and probing.

    python -m tests.load --clients 20 --seconds 60            # starts the real app (bundled models)
    python -m tests.load --url http://127.0.0.1:7860/ ...     # or drives one that is running

Every session checks after every call that it sees only its own edits and outputs; the run
reports errors, isolation violations, throughput and latency percentiles. tests/test_load.py
runs it against a tiny app in `make test`.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from dataclasses import dataclass, field

from gradio_client import Client


@dataclass
class LoadReport:
    clients: int
    seconds: float
    calls: int = 0
    errors: list[str] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)  # a session saw another session's edits or outputs
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)

    def percentile(self, endpoint: str, q: float) -> float:
        values = sorted(self.latencies_ms.get(endpoint, []))
        return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")

    def summary(self) -> str:
        lines = [f"{self.clients} clients, {self.seconds:.0f} s: {self.calls} calls ({self.calls / self.seconds:.2f}/s), "
                 f"{len(self.errors)} errors, {len(self.leaks)} isolation violations"]
        for endpoint, values in sorted(self.latencies_ms.items()):
            lines.append(f"  {endpoint:<10} n={len(values):<5} p50={self.percentile(endpoint, 0.5):8.0f} ms  "
                         f"p90={self.percentile(endpoint, 0.9):8.0f} ms  p99={self.percentile(endpoint, 0.99):8.0f} ms  "
                         f"mean={statistics.fmean(values):8.0f} ms")
        return "\n".join(lines)


def _client_loop(url: str, index: int, deadline: float, report: LoadReport, lock: threading.Lock) -> None:
    mark = f"client{index}x"
    try:
        client = Client(url, verbose=False)
    except Exception as error:  # noqa: BLE001 (any failure to connect is an error of the run)
        with lock:
            report.errors.append(f"client {index} could not connect: {error}")
        return
    count = 0

    def call(endpoint: str, *args):
        started = time.perf_counter()
        result = client.predict(*args, api_name=f"/{endpoint}")
        with lock:
            report.latencies_ms.setdefault(endpoint, []).append((time.perf_counter() - started) * 1000)
            report.calls += 1
        return result

    while time.monotonic() < deadline:
        try:
            memory, *_ = call("add_edit", f"Fact number {count} kept by {mark} is", f"{mark}{count}", "", "", 0.5)
            targets = [row[2] for row in memory["data"]]
            if targets != [f"{mark}{k}" for k in range(count + 1)]:
                with lock:
                    report.leaks.append(f"client {index} memory: {targets}")
            table = call("probe", f"Fact number {count} kept by {mark} is", 0.5)[2]  # memory, status, then the results
            best = [row[1] for row in table["data"]]
            if any(cell and mark not in cell for cell in best):
                with lock:
                    report.leaks.append(f"client {index} probe routed to a foreign edit: {best}")
            count += 1
        except Exception as error:  # noqa: BLE001
            with lock:
                report.errors.append(f"client {index}: {type(error).__name__}: {error}")
            return


def run_load(url: str, clients: int, seconds: float) -> LoadReport:
    report, lock = LoadReport(clients, seconds), threading.Lock()
    deadline = time.monotonic() + seconds
    threads = [threading.Thread(target=_client_loop, args=(url, i, deadline, report, lock)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--url", default=None, help="a running app; default: start the real one on a free port")
    args = parser.parse_args()
    app = None
    url = args.url
    if url is None:
        import socket

        from searc.cli import quiet_libraries
        from searc.system import load_system
        from searc.ui import build_app

        quiet_libraries()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        app = build_app(load_system())
        app.queue(default_concurrency_limit=2).launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        url = f"http://127.0.0.1:{port}/"
    try:
        print(run_load(url, args.clients, args.seconds).summary())
    finally:
        if app is not None:
            app.close()


if __name__ == "__main__":
    main()
