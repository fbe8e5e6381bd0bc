"""Assemble a `SeracSystem` from model specs, and move it to and from checkpoints."""

from __future__ import annotations

import copy
import threading
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional, Union

from searc.checkpoint import Checkpoint, CheckpointError, model_fingerprint, read_checkpoint, write_checkpoint
from searc.classifier import ClassifierConfig, ScopeClassifier, build_classifier
from searc.counterfactual import (
    PROMPT_FORMAT,
    LoraSettings,
    adapter_state_dict,
    load_adapter_state_dict,
    separate_counterfactual,
    shared_base_and_counterfactual,
)
from searc.editor import DEFAULT_DECLINE_THRESHOLD, DEFAULT_THRESHOLD, SeracSystem, SystemInfo, check_threshold
from searc.lm import LanguageModel
from searc.models import BUNDLED, load_encoder, load_language_model
from searc.shipped import default_checkpoint


DEFAULT_CHECKPOINT = "default"


def resolve_checkpoint(checkpoint: str | Path | None, lm: str, encoder: str) -> str | Path | None:
    """'default' is the shipped checkpoint, which fits only the bundled models; 'none' is untrained."""
    if checkpoint in (None, "none"):
        return None
    if checkpoint == DEFAULT_CHECKPOINT:
        return default_checkpoint() if lm == BUNDLED and encoder == BUNDLED else None
    return checkpoint


def assemble_system(
    base_model,
    tokenizer,
    encoder,
    encoder_tokenizer,
    classifier: ClassifierConfig | None = None,
    lora: LoraSettings | None = None,
    counterfactual_model=None,
    counterfactual_tokenizer=None,
    info: SystemInfo | None = None,
) -> SeracSystem:
    """A system from already-loaded models (tests use tiny random ones); `info` says where they came from."""
    lora = lora or LoraSettings()
    if counterfactual_model is None:
        base, counterfactual = shared_base_and_counterfactual(base_model, tokenizer, lora)
    else:
        base = LanguageModel(base_model.eval(), tokenizer)
        counterfactual = separate_counterfactual(counterfactual_model, counterfactual_tokenizer, lora)
    classifier_module = build_classifier(encoder, encoder_tokenizer, classifier or ClassifierConfig())
    return SeracSystem(base, counterfactual, classifier_module, replace(info or SystemInfo(), lora=lora.to_dict()))


def load_system(
    lm: str = BUNDLED,
    encoder: str = BUNDLED,
    checkpoint: str | Path | None = DEFAULT_CHECKPOINT,
    classifier: ClassifierConfig | None = None,
    counterfactual_lm: str | None = None,
    lora: LoraSettings | None = None,
) -> SeracSystem:
    """Load models by spec ('bundled', hub id, directory or .gguf) and a checkpoint.

    checkpoint: a directory, 'default' (the shipped one, for the bundled models) or None
    (untrained: calibrated encoder + instruct model reading the edit). With a checkpoint, its
    own settings (classifier variant, LoRA shape, counterfactual model) decide; `classifier` and
    `lora` apply to an untrained system.
    """
    checkpoint = resolve_checkpoint(checkpoint, lm, encoder)
    saved = read_checkpoint(checkpoint) if checkpoint else None
    if saved is not None:
        classifier = ClassifierConfig(**saved.config["classifier"])
        lora = LoraSettings(**saved.config["lora"])
        counterfactual_lm = saved.config.get("counterfactual_lm")
    base_model, tokenizer = load_language_model(lm)
    encoder_model, encoder_tokenizer = load_encoder(encoder)
    cf_model, cf_tokenizer = load_language_model(counterfactual_lm) if counterfactual_lm else (None, None)
    system = assemble_system(
        base_model,
        tokenizer,
        encoder_model,
        encoder_tokenizer,
        classifier,
        lora,
        cf_model,
        cf_tokenizer,
        info=SystemInfo(lm=lm, encoder=encoder, counterfactual_lm=counterfactual_lm),
    )
    if saved is not None:
        apply_checkpoint(system, saved, source=str(checkpoint))
    return system


def replace_classifier(system: SeracSystem, config: ClassifierConfig) -> None:
    """An untrained classifier of `config` in place of the system's, on the encoder as its spec loads
    (none of a checkpoint's fine-tuned layers), routing at the untrained default threshold; the
    counterfactual model and its decline threshold stay. Training then fits the new classifier
    beside a counterfactual model already trained."""
    encoder, tokenizer = load_encoder(system.info.encoder)
    system.classifier = build_classifier(encoder, tokenizer, config)
    system.threshold = DEFAULT_THRESHOLD
    system.info = replace(system.info, classifier_init="untrained")


def checkpoint_of(
    system: SeracSystem, threshold: float | None = None, training: dict | None = None, metrics: dict | None = None,
    decline_threshold: float | None = None, name_weight: float | None = None,
) -> Checkpoint:
    """The system's trained parts and settings; both thresholds and the classifier's name weight
    (tuned with them) default to the system's own."""
    classifier = system.classifier
    tuned = {} if name_weight is None else {"name_weight": name_weight}
    return Checkpoint(
        config={
            "lm": system.info.lm,
            "encoder": system.info.encoder,
            "counterfactual_lm": system.info.counterfactual_lm,
            "lm_fingerprint": model_fingerprint(system.counterfactual.model.get_base_model()),
            "classifier": classifier.config.to_dict() | _live_scale_bias(classifier) | tuned,
            "lora": system.info.lora,
            "prompt_format": PROMPT_FORMAT,
            "threshold": system.threshold if threshold is None else threshold,
            "decline_threshold": system.decline_threshold if decline_threshold is None else decline_threshold,
            "training": training or {},
            "metrics": metrics or {},
        },
        classifier_state=classifier.trainable_state_dict(),
        adapter_state=adapter_state_dict(system.counterfactual),
    )


def save_checkpoint(system: SeracSystem, path: str | Path, threshold: float | None = None, **extra) -> Path:
    return write_checkpoint(path, checkpoint_of(system, threshold, **extra))


def apply_checkpoint(system: SeracSystem, saved: Checkpoint, source: str = "") -> None:
    """Swap in a checkpoint's classifier and adapter; on any error the system is left as it was."""
    config = saved.config
    if config["prompt_format"] != PROMPT_FORMAT:
        raise CheckpointError(f"checkpoint {source}: prompt format {config['prompt_format']!r}, this version reads {PROMPT_FORMAT!r}")
    fingerprint = model_fingerprint(system.counterfactual.model.get_base_model())
    if config["lm_fingerprint"] != fingerprint:
        raise CheckpointError(
            f"checkpoint {source} was trained for a different model ({config['lm_fingerprint']}), loaded: {fingerprint}"
        )
    if LoraSettings(**config["lora"]).to_dict() != system.info.lora:
        raise CheckpointError(f"checkpoint {source}: LoRA settings {config['lora']} differ from the loaded model's {system.info.lora}")
    thresholds = {}
    for key, default in (("threshold", None), ("decline_threshold", DEFAULT_DECLINE_THRESHOLD)):
        try:
            thresholds[key] = check_threshold(config.get(key, default))
        except ValueError as error:
            raise CheckpointError(f"checkpoint {source}: {key}: {error}") from None
    old = system.classifier
    new = build_classifier(_fresh_encoder_copy(old), old.tokenizer, ClassifierConfig(**config["classifier"]))
    try:
        missing, unexpected = new.load_state_dict(saved.classifier_state, strict=False)
    except RuntimeError as error:  # shape mismatch
        raise CheckpointError(f"checkpoint {source}: classifier weights do not fit ({str(error).splitlines()[-1].strip()})") from None
    missing = [name for name in missing if new.is_trainable(name)]  # frozen tensors come from the encoder
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {source}: classifier weights do not fit ({len(missing)} missing, {len(unexpected)} unexpected)")
    try:
        load_adapter_state_dict(system.counterfactual, saved.adapter_state)
    except ValueError as error:
        raise CheckpointError(f"checkpoint {source}: {error}") from None
    new.eval()
    system.kept_answers.clear()  # the counterfactual model's answers were the old adapter's
    system.classifier = new
    system.threshold, system.decline_threshold = thresholds["threshold"], thresholds["decline_threshold"]
    system.info = replace(
        system.info, checkpoint=source, classifier_init="checkpoint", metrics=config.get("metrics", {}), training=config.get("training", {})
    )


def _fresh_encoder_copy(classifier: ScopeClassifier):
    """A copy of the encoder, so the old classifier keeps working until the swap."""
    return copy.deepcopy(classifier.encoder)


def _live_scale_bias(classifier: ScopeClassifier) -> dict:
    """Trained scale/bias go into the config too, so the JSON alone documents the calibration."""
    if hasattr(classifier, "scale"):
        return {"scale": float(classifier.scale.detach()), "bias": float(classifier.bias.detach())}
    return {}


SystemLoader = Callable[[Optional[Union[str, Path]], Optional[ClassifierConfig]], SeracSystem]


class SystemPool:
    """Systems by checkpoint, loaded on first use and shared by every session that picks them.

    The workbench starts with one system; a session that loads another checkpoint gets the pooled
    system for it, so no session changes what another one sees. At most `capacity` systems are
    kept (each holds its own copy of the models); the least recently used one is dropped first.
    `loader(checkpoint, classifier_config)` builds a system; by default from the initial system's
    model specs.
    """

    def __init__(self, initial: SeracSystem, loader: SystemLoader | None = None, capacity: int = 3) -> None:
        lm, encoder = initial.info.lm, initial.info.encoder
        self.loader = loader or (lambda checkpoint, classifier: load_system(lm, encoder, checkpoint, classifier))
        self._systems: dict[str, SeracSystem] = {self.key(initial.info.checkpoint): initial}
        self._lock = threading.Lock()
        self.capacity = capacity

    @staticmethod
    def key(checkpoint: str | Path | None) -> str:
        return str(Path(checkpoint).resolve()) if checkpoint else "none"

    def get(self, checkpoint: str | Path | None) -> SeracSystem:
        """The system for `checkpoint` (None: untrained); raises CheckpointError for a bad one."""
        key = self.key(checkpoint)
        with self._lock:
            if key in self._systems:
                self._systems[key] = self._systems.pop(key)  # most recently used last
                return self._systems[key]
            system = self.loader(checkpoint or None, None)
            self._systems[key] = system
            while len(self._systems) > self.capacity:
                self._systems.pop(next(iter(self._systems)))
            return system

    def fresh(self, classifier: ClassifierConfig) -> SeracSystem:
        """A new untrained system of its own, for a training run (never shared)."""
        return self.loader(None, classifier)
