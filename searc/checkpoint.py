"""Checkpoints: a directory of safetensors (classifier, LoRA adapter) plus one JSON file.

No pickles are ever read. A checkpoint is written into a staging directory next to its target and
moved into place with one rename, so a run killed at any moment leaves the previous checkpoint
intact. Reading checks every file before anything is applied; a checkpoint that does not fit the
loaded base model is refused with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from searc.models import file_digest

CHECKPOINT_FORMAT = 1
CONFIG_FILE, CLASSIFIER_FILE, ADAPTER_FILE = "searc.json", "classifier.safetensors", "adapter.safetensors"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with the reason."""


@dataclass
class Checkpoint:
    config: dict  # model specs, fingerprints, classifier and LoRA settings, threshold, training, metrics
    classifier_state: dict[str, torch.Tensor]
    adapter_state: dict[str, torch.Tensor]


def model_fingerprint(model: torch.nn.Module) -> dict:
    """What must match for an adapter to fit a base model."""
    config = model.config
    return {
        "model_type": config.model_type,
        "hidden_size": getattr(config, "hidden_size", getattr(config, "d_model", None)),
        "num_layers": getattr(config, "num_hidden_layers", getattr(config, "num_layers", None)),
        "vocab_size": config.vocab_size,
    }


def write_checkpoint(path: str | Path, checkpoint: Checkpoint) -> Path:
    """Write atomically: stage everything, then replace `path` in one rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        save_file({k: v.contiguous() for k, v in checkpoint.classifier_state.items()}, str(staging / CLASSIFIER_FILE))
        save_file({k: v.contiguous() for k, v in checkpoint.adapter_state.items()}, str(staging / ADAPTER_FILE))
        digests = {name: file_digest(staging / name) for name in (CLASSIFIER_FILE, ADAPTER_FILE)}
        config = {**checkpoint.config, "format": CHECKPOINT_FORMAT, "files": digests}
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
        for file in staging.iterdir():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
        if target.exists():
            # Two renames: the old checkpoint stays readable under its backup name until the new one is in place.
            backup = target.parent / f".{target.name}.old"
            shutil.rmtree(backup, ignore_errors=True)
            os.replace(target, backup)
            os.replace(staging, target)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read and check a checkpoint directory; raises CheckpointError saying what is wrong."""
    root = Path(path)
    if not root.is_dir():
        backup = root.parent / f".{root.name}.old"
        if backup.is_dir():  # a write was interrupted between its two renames
            root = backup
        else:
            raise CheckpointError(f"no checkpoint directory at {path}")
    for name in (CONFIG_FILE, CLASSIFIER_FILE, ADAPTER_FILE):
        if not (root / name).is_file():
            raise CheckpointError(f"checkpoint {path} lacks {name}")
    try:
        config = json.loads((root / CONFIG_FILE).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"checkpoint {path}: {CONFIG_FILE} is not valid JSON ({error})") from None
    if not isinstance(config, dict) or config.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path}: unknown format {config.get('format') if isinstance(config, dict) else None!r}")
    for key in ("lm", "encoder", "lm_fingerprint", "classifier", "lora", "prompt_format", "threshold"):
        if key not in config:
            raise CheckpointError(f"checkpoint {path}: {CONFIG_FILE} lacks {key!r}")
    states = []
    for name in (CLASSIFIER_FILE, ADAPTER_FILE):
        if not isinstance(config.get("files"), dict) or file_digest(root / name) != config["files"].get(name):
            raise CheckpointError(f"checkpoint {path}: {name} does not match the hash in {CONFIG_FILE} (truncated or altered)")
        try:
            states.append(load_file(str(root / name)))
        except (SafetensorError, OSError, RuntimeError, ValueError) as error:
            raise CheckpointError(f"checkpoint {path}: {name} is truncated or corrupted ({error})") from None
    return Checkpoint(config=config, classifier_state=states[0], adapter_state=states[1])
