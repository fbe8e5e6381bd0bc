"""A tiny training run for tests/test_distributed.py, under `accelerate launch` or alone.

    python -m tests.dist_target OUT ACCUMULATE

Trains a tiny system for three steps and has the main process write its trainable tensors
(LoRA and classifier) to OUT as safetensors.
"""

from __future__ import annotations

import sys

from accelerate import PartialState
from safetensors.torch import save_file

from searc.train import TrainConfig, train
from tests.conftest import make_system
from tests.test_train import CASES


def main(out: str, accumulate: int) -> None:
    system = make_system("llama")
    config = TrainConfig(steps=3, batch_edits=2, accumulate=accumulate, val_every=100, val_cases=2, seed=5, lr=1e-2)
    events = list(train(system, CASES, CASES[:2], config))
    if PartialState().is_main_process:
        assert events and events[-1].kind == "done"
        tensors = {n: p.detach().contiguous() for n, p in system.counterfactual.model.named_parameters() if "lora_" in n}
        tensors |= {f"classifier.{k}": v.contiguous() for k, v in system.classifier.trainable_state_dict().items()}
        save_file(tensors, out)
    else:
        assert not events, "only the main process yields events"


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
