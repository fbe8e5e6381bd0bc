"""The benchmark's mechanics on tiny models: every measurement is made and lands in the table."""

from __future__ import annotations

import json

import pytest
import torch

from searc.bench import BenchSizes, PrecomputedKeys, filled_memory, run_bench, training_process
from searc.classifier import ClassifierConfig
from tests.conftest import make_system, require_shared_data, save_tiny_models

SIZES = BenchSizes(scoring=(10, 100), edits=100, recall_edits=20, recall_probes=4, repeats=2, train_steps=3, eval_cases=2, texts=300)


def tiny_loader(checkpoint="default", classifier: ClassifierConfig | None = None):
    return make_system("llama", classifier.variant if classifier else "dense")


def test_bench_measures_everything_it_promises():
    report = run_bench(tiny_loader, require_shared_data(), SIZES, processes=False)
    names = [row.name for row in report.rows]
    expected = [
        "encode edit prompts (keys)",
        "dense scoring, 1 probe vs 10 edits",
        "dense scoring, 1 probe vs 100 edits",
        "add one edit to a memory of 100",
        "full probe (score, route, generate 12 tokens), 1 edit",
        "full probe 101 edits / 1 edit",
        "workspace: add an edit, re-probe 4 probes",
        "workspace: token view of a routed probe",
        "cross scoring, 1 probe vs 100 edits",
        "naive cross scoring (every edit), 1 probe vs 100 edits",
        "top-32 recall of the exhaustive best edit",
        "top-32 recall of the probe's own edit",
        "training throughput",
        "training throughput, --gradient-checkpointing",
        "evaluation throughput",
        "peak memory of the benchmark process",
    ]
    assert all(name in names for name in expected), set(expected) - set(names)
    assert all(row.value > 0 for row in report.rows if "recall" not in row.name)
    assert next(r for r in report.rows if r.name == "add one edit to a memory of 100").target == "< 20 ms"
    assert next(r for r in report.rows if r.name == "workspace: token view of a routed probe").target == "< 500 ms"
    assert "measurement" in report.table() and json.loads(json.dumps(report.to_json()))["rows"]


def test_filled_memories_reuse_keys_for_distinct_edits():
    classifier = make_system("llama").classifier
    texts = ["The Eiffel Tower is in", "Toko Yasuda plays the", "UniFirst makes"]
    keys = PrecomputedKeys(classifier, texts)
    memory = filled_memory(keys, texts, 7)
    assert len(memory) == 7 and len({e.prompt for e in memory}) == 7
    assert memory.key_version == classifier.key_version  # no re-keying when scored
    assert memory.edits[3].prompt == texts[0] + " #1"
    assert (memory.keys.matrix[3] - memory.keys.matrix[0]).abs().max() == 0  # a copy shares its text's key


def test_a_training_process_reports_its_own_peak_memory(tmp_path):
    """Not the parent's: Linux carries a forking parent's peak into its child's rusage."""
    lm, encoder = save_tiny_models(tmp_path)
    ballast = torch.ones(2**28)  # 1 GiB held by this process while the child runs
    run = training_process(require_shared_data(), 1, "--lm", lm, "--encoder", encoder)
    assert 50 < run.peak_mib < 1024 and run.seconds > 0
    del ballast


def test_a_failed_process_says_why(tmp_path):
    with pytest.raises(RuntimeError, match="searc train process failed"):
        training_process(require_shared_data(), 1, "--lm", str(tmp_path / "no-such-model"))
