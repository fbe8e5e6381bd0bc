"""Past one process: two workbench processes behind Debian's nginx with the sticky-cookie route of
docs/nginx-sticky.conf, and a class of 20 sessions through it: no errors, nobody sees another's
edits, and both processes served sessions."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import save_tiny_models
from tests.load import Scenario, run_scenario
from tests.test_ui import free_port

ROOT = Path(__file__).resolve().parents[1]
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def nginx_config(directory: Path, listen: int, backends: list[int]) -> Path:
    """The documented snippet with this test's ports, in a whole config that runs from `directory`."""
    snippet = (ROOT / "docs" / "nginx-sticky.conf").read_text()
    snippet = snippet.replace("listen 127.0.0.1:8080;", f"listen 127.0.0.1:{listen};")
    snippet = snippet.replace("    server 127.0.0.1:7861;\n    server 127.0.0.1:7862;\n", "".join(f"    server 127.0.0.1:{p};\n" for p in backends))
    assert all(f"127.0.0.1:{p}" in snippet for p in [listen, *backends]), "the documented config changed shape"
    temp = "\n".join(f"    {kind}_temp_path {directory}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    config = directory / "nginx.conf"
    config.write_text(
        f"{'user root;' if os.geteuid() == 0 else ''}\nworker_processes 1;\npid {directory}/nginx.pid;\nerror_log {directory}/error.log;\n"
        f"events {{ worker_connections 1024; }}\nhttp {{\n    log_format routed '$upstream_addr $request';\n"
        f"    access_log {directory}/access.log routed;\n{temp}\n{snippet}\n}}\n"
    )
    return config


def wait_for(url: str, processes: list[subprocess.Popen], seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise AssertionError(f"a process ended early: {process.args}: {process.stderr.read()[-2000:] if process.stderr else ''}")
        try:
            with urllib.request.urlopen(url + "config", timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not come up in {seconds:.0f} s")


@pytest.fixture
def nginx_binary() -> str:
    if NGINX is None:
        if os.environ.get("CI"):
            pytest.fail("nginx is missing under CI: .ci/run must install Debian's nginx")
        pytest.skip("Debian's nginx is not installed (apt-get install nginx), so the proxy cannot be tested here")
    return NGINX


def test_two_processes_behind_nginx_keep_each_session_on_its_own(tmp_path, nginx_binary):
    lm, encoder = save_tiny_models(tmp_path)
    (tmp_path / "data").mkdir()
    ports = [free_port(), free_port()]
    apps = [
        subprocess.Popen([sys.executable, "app.py", "--lm", lm, "--encoder", encoder, "--checkpoint", "none", "--port", str(port),
                          "--runs-dir", str(tmp_path / f"runs{port}"), "--data-dir", str(tmp_path / "data")],
                         cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for port in ports
    ]
    proxy = None
    try:
        for port in ports:
            wait_for(f"http://127.0.0.1:{port}/", apps)
        listen = free_port()
        config = nginx_config(tmp_path, listen, ports)
        proxy = subprocess.Popen([nginx_binary, "-p", str(tmp_path), "-c", str(config), "-e", str(tmp_path / "error.log"), "-g", "daemon off;"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wait_for(f"http://127.0.0.1:{listen}/", [proxy, *apps], seconds=30)
        measured = run_scenario(f"http://127.0.0.1:{listen}/", Scenario("classroom-20 behind nginx", 20, seconds=10, pause=(0.1, 0.5)))
        print(measured.summary())
        assert not measured.errors, measured.errors[:3]
        assert not measured.leaks, measured.leaks[:3]
        assert measured.calls >= 40
        served = (tmp_path / "access.log").read_text()
        assert all(f"127.0.0.1:{port}" in served for port in ports), "both processes must have served sessions"
    finally:
        for process in [proxy, *apps]:
            if process is not None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
