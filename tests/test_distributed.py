"""The trainer under `accelerate launch` with 2 CPU processes (gloo; Accelerate's multi-process
launcher, which falls back to the CPU without GPUs) takes the same steps as one
process with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.test_ui import free_port

ROOT = Path(__file__).resolve().parents[1]


def run(command: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    completed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]


def test_two_processes_equal_one_process_with_the_same_global_batch(tmp_path):
    accelerate = str(Path(sys.executable).parent / "accelerate")
    run([accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", "--main_process_port", str(free_port()), "-m", "tests.dist_target", str(tmp_path / "two.safetensors"), "1"])
    run([sys.executable, "-m", "tests.dist_target", str(tmp_path / "one.safetensors"), "2"])  # 2 micro-batches = the 2 processes' shares
    two, one = load_file(tmp_path / "two.safetensors"), load_file(tmp_path / "one.safetensors")
    assert two.keys() == one.keys() and any("lora_B" in k for k in two)
    # Summation order differs (an all-reduce against two accumulated backwards), and Adam turns the
    # float32 noise of a near-zero gradient entry into a full-size update: a few entries of ~17,000
    # move by ~1e-5. A run without gradient averaging differs by ~1e-2 almost everywhere.
    differences = torch.cat([(two[name] - one[name]).abs().flatten() for name in two])
    assert float(differences.max()) < 1e-4
    assert float((differences > 1e-5 + 1e-4 * torch.cat([one[n].abs().flatten() for n in two])).float().mean()) < 1e-3
    untrained = {n: p for n, p in __import__("tests.conftest", fromlist=["make_system"]).make_system("llama").counterfactual.model.named_parameters() if "lora_B" in n}
    assert any(not torch.allclose(one[n], p) for n, p in untrained.items()), "training must have moved the adapter"
