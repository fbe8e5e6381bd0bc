"""The counterfactual model: answers a probe with the retrieved edit in its context.

By default it is the base LM plus a LoRA adapter (peft): adapter on is the counterfactual model,
adapter off is the base model, so the weights are held once and the base model stays exactly as
it was. LoRA's B matrices start at zero, so before training the counterfactual model is the
instruct model reading the edit in context. A separate model (a smaller LM, or a seq2seq model
such as T5) can be used instead; it gets its own adapter.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field

from torch import nn

from searc.lm import LanguageModel
from searc.memory import Edit
from searc.models import seeded_init

PROMPT_FORMAT = "new-fact-subject-v1"


def counterfactual_input(edit: Edit, probe: str) -> str:
    """The one input format of the counterfactual model: the edit as a stated fact, then the probe.

        New fact: The Eiffel Tower is located in the city of Rome.
        Fact: Eiffel Tower -> Rome.            (only when the edit names its subject)
        Complete: The Eiffel Tower stands in

    On CounterFact train cases the "subject -> target" line makes the untrained instruct model
    answer paraphrases with the new target far more often, so it is worth giving a subject.
    """
    subject_line = f"Fact: {edit.subject} -> {edit.target_new}.\n" if edit.subject else ""
    return f"New fact: {edit.statement()}.\n{subject_line}Complete: {probe}"


@dataclass
class LoraSettings:
    r: int = 8  # r=8 on every linear layer of SmolLM2-135M: 4.9M parameters, ~20 MB in a checkpoint
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] | str = field(default_factory=lambda: "all-linear")

    def to_dict(self) -> dict:
        return asdict(self)


def add_lora(model: nn.Module, settings: LoraSettings) -> nn.Module:
    """Wrap `model` in a peft LoRA adapter (zero-initialised B: output unchanged until trained; A
    drawn from a fixed seed, `searc.models.seeded_init`)."""
    from peft import LoraConfig, TaskType, get_peft_model

    is_seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        task_type=TaskType.SEQ_2_SEQ_LM if is_seq2seq else TaskType.CAUSAL_LM,
    )
    with seeded_init():
        return get_peft_model(model, config)


def shared_base_and_counterfactual(model: nn.Module, tokenizer, settings: LoraSettings) -> tuple[LanguageModel, LanguageModel]:
    """Two views of one set of weights: (base = adapter off, counterfactual = adapter on)."""
    peft_model = add_lora(model, settings).eval()
    lock = threading.RLock()
    base = LanguageModel(peft_model, tokenizer, adapter_enabled=False, lock=lock)
    return base, LanguageModel(peft_model, tokenizer, adapter_enabled=True, lock=lock)


def separate_counterfactual(model: nn.Module, tokenizer, settings: LoraSettings) -> LanguageModel:
    """A counterfactual model with weights of its own (e.g. a smaller LM or T5), LoRA-adapted."""
    return LanguageModel(add_lora(model, settings).eval(), tokenizer, adapter_enabled=True)


def adapter_state_dict(lm: LanguageModel) -> dict:
    """The trainable LoRA tensors of a counterfactual model (what a checkpoint stores)."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(lm.model).items()}


def load_adapter_state_dict(lm: LanguageModel, state: dict) -> None:
    """Load LoRA tensors saved by `adapter_state_dict`; refuses missing or mis-shaped tensors."""
    from peft import set_peft_model_state_dict

    expected = adapter_state_dict(lm)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"adapter does not fit this model: {len(missing)} missing, {len(unexpected)} unexpected tensors")
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise ValueError(f"adapter tensor {name} has shape {tuple(tensor.shape)}, expected {tuple(expected[name].shape)}")
    with lm.lock:
        set_peft_model_state_dict(lm.model, state)
