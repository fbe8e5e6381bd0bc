"""Checkpoints: safetensors + JSON round trip; bad checkpoints are refused and change nothing."""

from __future__ import annotations

import json

import pytest
import torch

from searc.checkpoint import ADAPTER_FILE, CLASSIFIER_FILE, CONFIG_FILE, CheckpointError, read_checkpoint
from searc.editor import Editor
from searc.system import apply_checkpoint, save_checkpoint
from tests.conftest import make_system
from tests.test_editor import EIFFEL, perturb_adapter

PROBES = ["The Eiffel Tower stands in", "The capital of Japan is"]


def trained_system(arch: str = "llama", variant: str = "dense"):
    system = make_system(arch, variant)
    perturb_adapter(system)
    with torch.no_grad():
        for name, param in system.classifier.named_parameters():
            if system.classifier.is_trainable(name):
                param.add_(0.01 * torch.randn_like(param))
    system.classifier.weights_changed()
    return system


def observe(system) -> tuple:
    editor = Editor(system, threshold=0.3)
    editor.add_edit(*EIFFEL)
    results = editor.probe(PROBES, counterfactual_for_all=True)
    return tuple((r.scores["e1"], r.counterfactual_output, r.decline_probability, r.output) for r in results)


@pytest.mark.parametrize("variant", ["dense", "cross"])
def test_round_trip_restores_behaviour(tmp_path, variant):
    system = trained_system(variant=variant)
    save_checkpoint(system, tmp_path / "ck", threshold=0.3, decline_threshold=0.8, metrics={"score": 0.5})
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == sorted([CONFIG_FILE, CLASSIFIER_FILE, ADAPTER_FILE])
    fresh = make_system("llama", variant)
    assert observe(fresh) != observe(system)
    apply_checkpoint(fresh, read_checkpoint(tmp_path / "ck"))
    system.decline_threshold = 0.8
    assert observe(fresh) == observe(system)
    assert fresh.threshold == 0.3 and fresh.info.metrics == {"score": 0.5} and fresh.decline_threshold == 0.8


def test_a_checkpoint_without_a_decline_threshold_declines_at_even_odds(tmp_path):
    """Checkpoints written before the decline threshold was tuned still load."""
    save_checkpoint(trained_system(), tmp_path / "ck", decline_threshold=0.9)
    config = json.loads((tmp_path / "ck" / CONFIG_FILE).read_text())
    del config["decline_threshold"]
    (tmp_path / "ck" / CONFIG_FILE).write_text(json.dumps(config))
    fresh = make_system("llama")
    fresh.decline_threshold = 0.7
    apply_checkpoint(fresh, read_checkpoint(tmp_path / "ck"))
    assert fresh.decline_threshold == 0.5


@pytest.mark.parametrize("key", ["threshold", "decline_threshold"])
@pytest.mark.parametrize("bad", [1.5, -0.1, "high", None])
def test_a_bad_threshold_is_refused_and_the_system_is_unchanged(tmp_path, key, bad):
    save_checkpoint(trained_system(), tmp_path / "ck")
    config = json.loads((tmp_path / "ck" / CONFIG_FILE).read_text())
    (tmp_path / "ck" / CONFIG_FILE).write_text(json.dumps({**config, key: bad}))
    target = trained_system()
    target.threshold, target.decline_threshold = 0.4, 0.7
    classifier_before, info_before, before = target.classifier, target.info, observe(target)
    with pytest.raises(CheckpointError, match=f"checkpoint .*: {key}: threshold must be"):
        apply_checkpoint(target, read_checkpoint(tmp_path / "ck"))
    assert (target.threshold, target.decline_threshold) == (0.4, 0.7)
    assert target.classifier is classifier_before and target.info == info_before and observe(target) == before


def test_an_editor_routes_at_its_systems_tuned_threshold_unless_told_otherwise(tmp_path):
    save_checkpoint(trained_system(), tmp_path / "ck", threshold=0.83)
    system = make_system("llama")
    assert Editor(system).threshold == 0.5  # untrained: even odds
    apply_checkpoint(system, read_checkpoint(tmp_path / "ck"))
    assert Editor(system).threshold == 0.83 and Editor(system, threshold=0.2).threshold == 0.2


def test_checkpoint_stores_only_trainable_tensors(tmp_path):
    system = trained_system()
    save_checkpoint(system, tmp_path / "ck")
    saved = read_checkpoint(tmp_path / "ck")
    assert set(saved.classifier_state) == set(system.classifier.trainable_state_dict())
    assert all("lora_" in name for name in saved.adapter_state)


def corrupt(path, name: str) -> None:
    data = bytearray((path / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (path / name).write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: corrupt(p, ADAPTER_FILE), "does not match the hash"),
        (lambda p: (p / CLASSIFIER_FILE).write_bytes((p / CLASSIFIER_FILE).read_bytes()[:100]), "does not match the hash"),
        (lambda p: (p / ADAPTER_FILE).unlink(), "lacks adapter.safetensors"),
        (lambda p: (p / CONFIG_FILE).write_text("{not json"), "not valid JSON"),
        (lambda p: (p / CONFIG_FILE).write_text(json.dumps({"format": 99})), "unknown format"),
    ],
)
def test_damaged_checkpoints_are_refused(tmp_path, damage, message):
    save_checkpoint(trained_system(), tmp_path / "ck")
    damage(tmp_path / "ck")
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(tmp_path / "ck")


def test_mismatched_checkpoint_is_refused_and_the_editor_is_unchanged(tmp_path):
    save_checkpoint(trained_system("gpt2"), tmp_path / "gpt2")
    target = trained_system("llama")
    before = observe(target)
    classifier_before = target.classifier
    with pytest.raises(CheckpointError, match="different model"):
        apply_checkpoint(target, read_checkpoint(tmp_path / "gpt2"))
    assert target.classifier is classifier_before and observe(target) == before


def test_wrong_adapter_shapes_are_refused(tmp_path):
    save_checkpoint(trained_system("llama"), tmp_path / "ck")
    config = json.loads((tmp_path / "ck" / CONFIG_FILE).read_text())
    target = trained_system("llama")
    saved = read_checkpoint(tmp_path / "ck")
    saved.adapter_state = {k: v[..., :1].contiguous() if v.dim() == 2 else v for k, v in saved.adapter_state.items()}
    before = observe(target)
    with pytest.raises(CheckpointError, match="shape"):
        apply_checkpoint(target, saved)
    assert observe(target) == before and config["lora"]["r"] == 8


def test_rewrite_replaces_atomically(tmp_path):
    system = trained_system()
    save_checkpoint(system, tmp_path / "ck", metrics={"v": 1})
    save_checkpoint(system, tmp_path / "ck", metrics={"v": 2})
    assert read_checkpoint(tmp_path / "ck").config["metrics"] == {"v": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"], "no staging or backup directories are left behind"
