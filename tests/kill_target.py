"""A process for the kill test (tests/test_kill.py): tiny models, checkpoints written to OUT.

    python -m tests.kill_target train OUT   # a real training run that saves on every improvement
    python -m tests.kill_target save OUT    # the checkpoint write path, over and over

It prints "ready" once the first checkpoint is on disk, then runs until it is killed.
"""

from __future__ import annotations

import sys

from searc.system import save_checkpoint
from searc.train import TrainConfig, train
from tests.conftest import make_system
from tests.test_train import CASES


def main(mode: str, out: str) -> None:
    system = make_system("llama")
    save_checkpoint(system, out, threshold=0.5, training={"step": 0})
    print("ready", flush=True)
    if mode == "train":
        config = TrainConfig(steps=10**6, batch_edits=3, val_every=1, val_cases=2, patience=10**6, lr=5e-3)
        for _ in train(system, CASES, CASES[:2], config, out=out, overwrite=True):
            pass
    else:
        step = 0
        while True:
            step += 1
            save_checkpoint(system, out, threshold=0.5, training={"step": step})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
