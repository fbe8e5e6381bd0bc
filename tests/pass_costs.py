"""What a pass costs on this machine, the figures the scheduler is built on (docs/performance.md,
docs/experiments.md): `python -m tests.pass_costs`.

- counterfactual generation for 1 to 64 rows (the edit in context, finishing "Rome"): how much a
  row costs in a pass of n;
- 8 base and 8 counterfactual rows as one pass with peft's mixed adapters (`adapter_names`)
  against two passes, as the scheduler runs them.
"""

from __future__ import annotations

import time

import torch

from searc.cli import quiet_libraries
from searc.counterfactual import counterfactual_input
from searc.memory import Edit
from searc.system import load_system

PROMPTS = [
    "The Eiffel Tower is located in the city of", "Where is the Eiffel Tower? It is in", "The Louvre is located in the city of",
    "The capital of Japan is", "The mother tongue of Danielle Darrieux is", "Toko Yasuda plays the", "The Eiffel Tower was designed by",
    "Michel Rocard is a native speaker of",
]
EDIT = Edit("The Eiffel Tower is located in the city of", "Rome", "Eiffel Tower")


def median_s(run, repeats: int = 3) -> float:
    run()  # warm
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def main() -> None:
    quiet_libraries()
    system = load_system()
    cf, base = system.counterfactual, system.base
    for n in (1, 4, 8, 16, 32, 64):
        inputs = [counterfactual_input(EDIT, PROMPTS[i % len(PROMPTS)] + ("" if i < len(PROMPTS) else f" {i}")) for i in range(n)]
        seconds = median_s(lambda: cf.generate_pass(inputs, cf.budget_for(["Rome"]), answer=True, finish=["Rome"] * n))
        print(f"counterfactual pass of {n:2d} rows: {seconds:.2f} s, {seconds / n:.3f} s a row")

    inputs = [counterfactual_input(EDIT, p) for p in PROMPTS]

    def two_passes() -> None:
        base.generate_pass(PROMPTS, 12)
        cf.generate_pass(inputs, 12, answer=True)

    def one_mixed_pass() -> None:
        rows = [cf.encode(p) for p in PROMPTS + inputs]
        ids, mask = cf._pad(rows, cf.pad_token_id, "left"), cf._pad([[1] * len(r) for r in rows], 0, "left")
        with torch.inference_mode(), cf.active() as model:
            model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=False, temperature=None, top_p=None,
                           top_k=None, pad_token_id=cf.pad_token_id, adapter_names=["__base__"] * len(PROMPTS) + ["default"] * len(inputs))

    for name, run in (("two passes", two_passes), ("one mixed pass", one_mixed_pass)):
        print(f"{name}: 8 base + 8 counterfactual rows, 12 tokens: median {median_s(run):.2f} s")


if __name__ == "__main__":
    main()
