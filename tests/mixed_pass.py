"""Measures one pass of base and counterfactual rows together (peft mixed adapters,
`adapter_names`) against two passes, as the scheduler runs them: `python -m tests.mixed_pass`."""

from __future__ import annotations

import time

import torch

from searc.cli import quiet_libraries
from searc.counterfactual import counterfactual_input
from searc.memory import Edit
from searc.system import load_system


def main() -> None:
    quiet_libraries()
    system = load_system()
    cf, base = system.counterfactual, system.base
    e = Edit("The Eiffel Tower is located in the city of", "Rome", "Eiffel Tower")
    prompts = ["The Eiffel Tower is located in the city of", "Where is the Eiffel Tower? It is in", "The Louvre is located in the city of", "The capital of Japan is",
               "The mother tongue of Danielle Darrieux is", "Toko Yasuda plays the", "The Eiffel Tower was designed by", "Michel Rocard is a native speaker of"]
    cfin = [counterfactual_input(e, p) for p in prompts]
    def two():
        base.generate_pass(prompts, 12); cf.generate_pass(cfin, 12, answer=True)
    def mixed():
        rows = [cf.encode(p) for p in prompts + cfin]
        ids = cf._pad(rows, cf.pad_token_id, "left"); mask = cf._pad([[1]*len(r) for r in rows], 0, "left")
        with torch.inference_mode(), cf.active() as m:
            m.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=False, temperature=None, top_p=None, top_k=None,
                       pad_token_id=cf.pad_token_id, adapter_names=["__base__"]*len(prompts) + ["default"]*len(cfin))
    for name, f in (("two passes", two), ("one mixed pass", mixed)):
        f(); ts=[]
        for _ in range(3):
            t=time.perf_counter(); f(); ts.append(time.perf_counter()-t)
        print(f"{name}: 8 base + 8 counterfactual rows, 12 tokens: median {sorted(ts)[1]:.2f} s")


if __name__ == "__main__":
    main()
