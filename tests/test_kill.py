"""A process killed (SIGKILL) at any moment while writing checkpoints leaves a readable one."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from searc.checkpoint import read_checkpoint
from searc.system import apply_checkpoint
from tests.conftest import make_system

ROOT = Path(__file__).resolve().parents[1]


def start(mode: str, out: Path) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "tests.kill_target", mode, str(out)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    for line in process.stdout:  # tokenizer training may print blank lines first
        if line.strip() == "ready":
            return process
    raise AssertionError(f"the {mode} process ended before its first checkpoint")


@pytest.mark.parametrize("mode, kills", [("save", 6), ("train", 3)])
def test_a_killed_writer_leaves_the_last_good_checkpoint(tmp_path, mode, kills):
    out = tmp_path / "checkpoint"
    rng = random.Random(0)
    steps = []
    for _ in range(kills):
        process = start(mode, out)
        time.sleep(rng.uniform(0.05, 1.5))
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        saved = read_checkpoint(out)  # must not raise: every file present and matching its hash
        steps.append(saved.config["training"]["step"])
        apply_checkpoint(make_system("llama"), saved)
    assert all(isinstance(step, int) for step in steps)
