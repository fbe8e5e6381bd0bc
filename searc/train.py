"""Joint training of the scope classifier and the counterfactual model, as in SERAC's trainer.

Each step samples a batch of edit cases.
- Counterfactual loss: NLL (`masked_log_probs`) of target_new followed by end-of-sequence on the
  in-scope probes (the edit prompt and its rephrases), with the gold edit in the counterfactual
  model's context. The end-of-sequence token teaches it to stop after the answer.
- Classifier loss: class-balanced BCE on every (edit, input) pair of the batch: each edit against
  every in-scope and out-of-scope probe of every case in the batch. Positives are an edit's own
  in-scope probes; negatives are its out-of-scope probes (same relation, other subject: hard
  negatives) and all other edits' probes, as when many edits share the memory.
- Decline loss: each out-of-scope probe with the batch's edit the classifier most confuses it
  with in context; the target is end-of-sequence alone, so the counterfactual model learns to
  hand back a probe the edit does not cover (see `editor.answer`).
loss = c_edit * NLL + c_cls * BCE + c_decline * decline NLL, one AdamW over the LoRA parameters and
the classifier's trainable parameters. `train` is a generator of `TrainEvent`s (what the UI plots
live); the best checkpoint by validation score is written atomically, so cancelling loses nothing.

The same code runs under `accelerate launch` (several processes, GPUs or machines): see
`_train_loop` for how the micro-batches are shared out and the gradients averaged.
"""

from __future__ import annotations

import contextlib
import math
import random
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, ContextManager, Iterator, Sequence

import torch
import torch.nn.functional as F

from searc.counterfactual import counterfactual_input
from searc.data import EditCase, calibration_pairs
from searc.editor import SeracSystem
from searc.system import save_checkpoint


@dataclass
class TrainConfig:
    steps: int = 200
    batch_edits: int = 8  # edit cases per step; each gives 2+ counterfactual examples and 4+ classifier pairs
    accumulate: int = 1  # micro-batches per optimizer step
    lr: float = 5e-4  # LoRA
    classifier_lr: float = 1e-4  # encoder layers of the classifier
    calibration_lr: float = 1e-2  # the dense classifier's scale and bias
    c_edit: float = 1.0
    c_cls: float = 1.0
    c_decline: float = 1.0  # counterfactual model, wrong edit in context: decline (end of sequence at once)
    drop_subject: float = 0.5  # train also on edits without a subject, as users type them
    hard_fraction: float = 0.5  # share of each batch drawn from the seed case's nearest neighbours
    val_every: int = 50
    val_cases: int = 64
    patience: int = 4  # validations without improvement before stopping early
    threshold: float = 0.5  # for the pairwise validation metrics; checkpoints store the tuned one
    seed: int = 0
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"  # "bf16" where the device supports it (Accelerate autocast)
    gradient_checkpointing: bool = False  # recompute the LM's activations in backward: less memory, one more forward a step

    def __post_init__(self) -> None:
        for name in ("steps", "batch_edits", "accumulate", "val_every", "val_cases", "patience"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.mixed_precision not in ("no", "bf16"):  # fp16 would need loss scaling, which the loop does not do
            raise ValueError(f"mixed_precision must be 'no' or 'bf16', got {self.mixed_precision!r}")
        if not 0.0 <= self.hard_fraction <= 1.0:
            raise ValueError(f"hard_fraction must be in [0, 1], got {self.hard_fraction!r}")
        for name in ("lr", "classifier_lr", "calibration_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if min(self.c_edit, self.c_cls, self.c_decline) < 0 or self.c_edit + self.c_cls + self.c_decline == 0:
            raise ValueError("c_edit, c_cls and c_decline must be non-negative and not all zero")


@dataclass
class TrainEvent:
    kind: str  # "step", "validation" or "done"
    step: int
    total_steps: int
    losses: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    examples_per_s: float = 0.0
    elapsed_s: float = 0.0
    checkpoint: str | None = None
    message: str = ""


def _edit_for_training(case: EditCase, rng: random.Random, drop_subject: float):
    return replace(case.edit, subject=None) if rng.random() < drop_subject else case.edit


def counterfactual_examples(cases: Sequence[EditCase], rng: random.Random, drop_subject: float) -> tuple[list[str], list[str]]:
    """(inputs, targets): every in-scope probe with its case's edit in context."""
    inputs, targets = [], []
    for case in cases:
        edit = _edit_for_training(case, rng, drop_subject)
        for probe in case.in_scope:
            inputs.append(counterfactual_input(edit, probe.prompt))
            targets.append(probe.answer)
    return inputs, targets


def scope_matrix(cases: Sequence[EditCase]) -> tuple[list[str], torch.Tensor]:
    """Every probe of the batch and the [n_cases, n_probes] in-scope labels of each case's edit."""
    inputs, owners = [], []
    for index, case in enumerate(cases):
        inputs += [p.prompt for p in case.in_scope]
        owners += [index] * len(case.in_scope)
        inputs += [p.prompt for p in case.out_of_scope]
        owners += [-1] * len(case.out_of_scope)
    labels = torch.tensor(owners)[None, :] == torch.arange(len(cases))[:, None]
    return inputs, labels.float()


def classifier_pairs(cases: Sequence[EditCase]) -> list[tuple]:
    """In-scope pairs (prompt and rephrases) and out-of-scope pairs (hard and other-edit negatives)."""
    pairs = [(case.edit, case.edit.prompt, True) for case in cases]
    return pairs + calibration_pairs(list(cases))


class BatchSampler:
    """Batches of edit cases where part of each batch are the nearest neighbours of a random seed case.

    Neighbours are found once, by the untrained encoder's cosine similarity of the edit prompts:
    "BMW M54, developed by" next to "BMW N54 is produced by". With the classifier's loss over every
    pair of the batch, they become the hard negatives that batch evaluation (many edits in memory)
    punishes."""

    def __init__(self, cases: Sequence[EditCase], system: SeracSystem, config: TrainConfig, rng: random.Random) -> None:
        self.cases, self.rng = list(cases), rng
        self.size = min(config.batch_edits, len(self.cases))
        n_hard = int(round(self.size * config.hard_fraction))
        self.neighbours: list[list[int]] = [[] for _ in self.cases]
        if n_hard > 1 and hasattr(system.classifier, "embed"):
            with torch.no_grad():
                embeddings = torch.cat(
                    [system.classifier.embed([c.edit.prompt for c in self.cases[i : i + 256]]).float().cpu() for i in range(0, len(self.cases), 256)]
                )
            for start in range(0, len(self.cases), 1024):
                similarity = embeddings[start : start + 1024] @ embeddings.T
                similarity[torch.arange(similarity.shape[0]), torch.arange(start, start + similarity.shape[0])] = -2.0
                top = similarity.topk(min(n_hard - 1, len(self.cases) - 1), dim=1).indices
                for row, indices in enumerate(top.tolist()):
                    self.neighbours[start + row] = indices

    def sample(self) -> list[EditCase]:
        seed = self.rng.randrange(len(self.cases))
        chosen = [seed, *self.neighbours[seed]][: self.size]
        taken = set(chosen)
        while len(chosen) < self.size:
            index = self.rng.randrange(len(self.cases))
            if index not in taken:
                chosen.append(index)
                taken.add(index)
        return [self.cases[i] for i in chosen]


def balanced_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean BCE over positives and over negatives, averaged: neither class dominates."""
    losses = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    positive, negative = labels > 0.5, labels <= 0.5
    return 0.5 * (losses[positive].mean() + losses[negative].mean())


def auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Probability that a random positive outscores a random negative (ties count half)."""
    pos, neg = scores[labels > 0.5], scores[labels <= 0.5]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).float().mean()
    ties = (pos[:, None] == neg[None, :]).float().mean()
    return float(greater + 0.5 * ties)


def decline_examples(
    cases: Sequence[EditCase], probes: Sequence[str], labels: torch.Tensor, scope_logits: torch.Tensor, rng: random.Random, drop_subject: float
) -> list[str]:
    """Counterfactual inputs that pair each out-of-scope probe with the batch's edit it is most
    easily mistaken for (highest classifier logit). Their target is the end-of-sequence token alone.

    The classifier will sometimes route an out-of-scope input; the counterfactual model then sees
    an edit that does not apply. Trained to decline at once on these pairs, it hands the probe back
    to the base model (see `editor.answer`), so a false route costs no locality. `probes`, `labels`
    and the columns of `scope_logits` are those of `scope_matrix(cases)`."""
    columns = torch.nonzero(~labels.bool().any(0)).flatten().tolist()  # in scope of no edit
    if not columns:
        return []
    nearest = scope_logits.detach()[:, columns].argmax(0).tolist()
    return [counterfactual_input(_edit_for_training(cases[e], rng, drop_subject), probes[c]) for c, e in zip(columns, nearest)]


def backward_on(
    system: SeracSystem, cases: Sequence[EditCase], rng: random.Random, config: TrainConfig, scale: float,
    autocast: Callable[[], ContextManager] = contextlib.nullcontext,
) -> dict[str, float]:
    """Back-propagate the three losses of one micro-batch (times `scale`) and return their values.

    The decline examples' language-model pass runs after the first backward has freed the edit
    examples' activations, so only one pass's activations are held at a time (the decline inputs
    depend on the classifier's logits, not on their gradient). Forward passes run under
    `autocast` (mixed precision), backward passes outside it."""
    cf = system.counterfactual
    probes, labels = scope_matrix(cases)
    inputs, targets = counterfactual_examples(cases, rng, config.drop_subject)
    with autocast():
        logits = system.classifier.matrix_logits([case.edit for case in cases], probes)
        bce = balanced_bce(logits.flatten(), labels.flatten().to(logits.device))
        stats = cf.target_log_probs(cf.make_batch(inputs, targets, append_eos=True))  # answer, then stop
        loss = config.c_edit * stats.nll + config.c_cls * bce
    (loss * scale).backward()
    losses = {name: float(value.detach()) for name, value in (("loss", loss), ("nll", stats.nll), ("bce", bce), ("token_accuracy", stats.token_accuracy))}
    n_examples = len(inputs) + labels.numel()
    if config.c_decline > 0:
        decline_inputs = decline_examples(cases, probes, labels, logits.detach(), rng, config.drop_subject)
        if decline_inputs:
            with autocast():
                declined = cf.target_log_probs(cf.make_batch(decline_inputs, [""] * len(decline_inputs), append_eos=True)).nll
            (config.c_decline * declined * scale).backward()
            losses["decline_nll"] = float(declined.detach())
            losses["loss"] += config.c_decline * losses["decline_nll"]
            n_examples += len(decline_inputs)
    return {**losses, "examples": float(n_examples)}


THRESHOLD_GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))


@torch.no_grad()
def tune_threshold(system: SeracSystem, cases: Sequence[EditCase]) -> dict[str, float]:
    """The routing threshold that best separates in-scope from out-of-scope probes with *all*
    the cases' edits in memory at once (as in batch evaluation): the mean of batch recall (answered
    from the probe's own edit) and batch locality (out-of-scope probes left to the base model) is
    maximised. A route the counterfactual model declines leaves the probe to the base model, as
    it does when the system answers (`editor.answer`). As in evaluation, an out-of-scope prompt
    that another stored edit claims (`evaluate.claims`) is that edit's own fact and left out of
    locality."""
    from searc.editor import Editor, first_token_declines
    from searc.evaluate import claimants, claims

    editor = Editor(system)
    editor.add_edits([case.edit for case in cases])
    probes, labels = scope_matrix(cases)
    scores = editor.scores(probes)  # [n_probes, n_edits]
    best_scores, best_edit = scores.max(dim=1)
    declined = torch.tensor(first_token_declines(system, probes, [editor.memory.edits[i] for i in best_edit.tolist()]))
    owner = labels.argmax(0)
    in_scope = labels.any(0)
    right_edit = best_edit == owner
    claimed = torch.tensor([
        flag
        for case, others in zip(cases, claimants(cases, [c.edit for c in cases]))
        for flag in [False] * len(case.in_scope) + [any(claims(e, p) for e in others) for p in case.out_of_scope]
    ])
    local = ~in_scope & ~claimed
    candidates = []
    for threshold in THRESHOLD_GRID:
        answered = (best_scores >= threshold) & ~declined
        recall = float((answered & right_edit)[in_scope].float().mean())
        locality = float((~answered[local]).float().mean()) if local.any() else 1.0
        candidates.append(((recall + locality) / 2, -abs(threshold - 0.5), threshold, recall, locality))
    _, _, threshold, recall, locality = max(candidates)
    return {
        "threshold": threshold, "batch_recall": recall, "batch_locality": locality,
        "declined_routes": float(declined[~in_scope].float().mean()), "claimed_prompts": int(claimed.sum()),
    }


@torch.no_grad()
def validate(system: SeracSystem, cases: Sequence[EditCase], threshold: float) -> dict[str, float]:
    """Classifier AUROC/accuracy on held-out pairs, teacher-forced edit success of the counterfactual model."""
    system.classifier.eval()
    system.counterfactual.model.eval()
    pairs = classifier_pairs(cases)
    logits = torch.cat(
        [
            system.classifier.pair_logits([e for e, _, _ in chunk], [x for _, x, _ in chunk]).float().cpu()
            for chunk in (pairs[i : i + 64] for i in range(0, len(pairs), 64))
        ]
    )
    labels = torch.tensor([float(label) for *_, label in pairs])
    probs = torch.sigmoid(logits)
    predicted = probs >= threshold
    positives, negatives = labels > 0.5, labels <= 0.5
    metrics = {
        "classifier_auroc": auroc(probs, labels),
        "classifier_accuracy": float((predicted == positives).float().mean()),
        "classifier_recall": float(predicted[positives].float().mean()),
        "locality_routing": float((~predicted[negatives]).float().mean()),  # out of scope left to the base model
    }
    probes, scope_labels = scope_matrix(cases)
    scope_logits = system.classifier.matrix_logits([c.edit for c in cases], probes)
    decline_inputs = decline_examples(cases, probes, scope_labels, scope_logits, random.Random(0), drop_subject=0.0)
    examples = {  # (inputs, targets, append_eos)
        "edit_success": ([counterfactual_input(c.edit, c.in_scope[0].prompt) for c in cases], [c.in_scope[0].answer for c in cases], False),
        "generalization": (
            [counterfactual_input(c.edit, p.prompt) for c in cases for p in c.rephrases],
            [p.answer for c in cases for p in c.rephrases],
            False,
        ),
        "counterfactual_declines": (decline_inputs, [""] * len(decline_inputs), True),  # wrong edit in context
    }
    cf = system.counterfactual
    for name, (inputs, targets, append_eos) in examples.items():
        hits = 0.0
        for i in range(0, len(inputs), 32):
            with cf.active():
                batch = cf.make_batch(inputs[i : i + 32], targets[i : i + 32], append_eos=append_eos)
                hits += float(cf.target_log_probs(batch).exact_match) * len(inputs[i : i + 32])
        metrics[name] = hits / len(inputs) if inputs else 1.0
    metrics.update(tune_threshold(system, cases))
    batch_accuracy = 0.5 * (metrics["batch_recall"] + metrics["batch_locality"])
    answers = (metrics["edit_success"] + metrics["generalization"] + metrics["counterfactual_declines"]) / 3
    metrics["score"] = (batch_accuracy + answers) / 2
    return metrics


def train(
    system: SeracSystem,
    train_cases: Sequence[EditCase],
    val_cases: Sequence[EditCase],
    config: TrainConfig,
    out: str | Path | None = None,
    stop: threading.Event | None = None,
) -> Iterator[TrainEvent]:
    """Train in place, yielding events; writes the best checkpoint to `out` (if given)."""
    if len(train_cases) < 2:
        raise ValueError("training needs at least 2 edit cases")
    if not val_cases:
        raise ValueError("training needs validation cases")
    torch.manual_seed(config.seed)
    val_cases = list(val_cases)[: config.val_cases]
    classifier, cf = system.classifier, system.counterfactual
    lora_params = [p for n, p in cf.model.named_parameters() if "lora_" in n]
    calibration = [p for n, p in classifier.named_parameters() if n in ("scale", "bias")]
    encoder_params = [p for p in classifier.trainable_parameters() if all(p is not c for c in calibration)]
    for name, param in classifier.named_parameters():
        param.requires_grad_(classifier.is_trainable(name))
    optimizer = torch.optim.AdamW(
        [
            {"params": lora_params, "lr": config.lr},
            {"params": encoder_params, "lr": config.classifier_lr},
            {"params": calibration, "lr": config.calibration_lr, "weight_decay": 0.0},
        ],
        weight_decay=0.0,
    )
    accelerator = _accelerator(config)
    _move(system, accelerator.device)
    if config.gradient_checkpointing:  # non-reentrant: the frozen embeddings need no requires_grad trick
        cf.model.activation_checkpointing_enable({"use_reentrant": False})
    try:
        yield from _train_loop(system, train_cases, val_cases, config, optimizer, lora_params, out, stop, accelerator)
    finally:
        if config.gradient_checkpointing:
            cf.model.activation_checkpointing_disable()
        classifier.eval()
        cf.model.eval()


def _accelerator(config: TrainConfig):
    """Hugging Face Accelerate decides the device, the processes and mixed precision: one CPU or
    GPU when run directly, every process of an `accelerate launch` (DDP, multi-node) otherwise."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    # Accelerate keeps one process-wide state and refuses a second Accelerator with another
    # precision; a later training run in the same process (the workbench, a notebook) may ask for
    # one. Only that part is reset: the process group of a launched run stays as it is.
    if AcceleratorState._shared_state.get("_mixed_precision", config.mixed_precision) != config.mixed_precision:
        AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision=config.mixed_precision, cpu=not torch.cuda.is_available())


def _move(system: SeracSystem, device: torch.device) -> None:
    for module in {id(m): m for m in (system.base.model, system.counterfactual.model, system.classifier)}.values():
        module.to(device)


def _average_gradients(params: Sequence[torch.nn.Parameter], accelerator) -> None:
    """Gradients averaged over processes, once per step, as DDP would. The models are used through
    views (adapter on and off) and the classifier's own methods, not one module's forward, so
    DDP's hooks cannot do it; one flat all-reduce through Accelerate does."""
    if accelerator.num_processes == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = accelerator.reduce(torch.cat([g.reshape(-1) for g in grads]), reduction="mean")
    for param, chunk in zip(params, flat.split([g.numel() for g in grads])):
        param.grad = chunk.view_as(param).clone()


LOSS_KEYS = ("loss", "nll", "bce", "decline_nll", "token_accuracy", "examples")


def _train_loop(system, train_cases, val_cases, config, optimizer, lora_params, out, stop, accelerator) -> Iterator[TrainEvent]:
    """Each step draws `processes * accumulate` micro-batches from one shared random stream, so every
    process agrees on them; a process computes only its own. A single process with `accumulate`
    equal to that product therefore takes exactly the same steps (tests/test_distributed.py).
    Every process validates (the weights are the same everywhere); only the main one writes
    checkpoints and yields events."""
    classifier, cf, rng = system.classifier, system.counterfactual, random.Random(config.seed)
    main, world, rank = accelerator.is_main_process, accelerator.num_processes, accelerator.process_index
    started = time.perf_counter()
    best_score, stale, best_path = -1.0, 0, None
    record = {"config": asdict(config), "train_cases": len(train_cases), "processes": world}
    sampler = BatchSampler(train_cases, system, config, rng)
    params = lora_params + classifier.trainable_parameters()
    completed = 0
    for step in range(1, config.steps + 1):
        if stop is not None and stop.is_set():
            break
        cf.model.train()
        classifier.train()
        step_started = time.perf_counter()
        micro_batches = [(sampler.sample(), rng.getrandbits(63)) for _ in range(world * config.accumulate)]
        totals = torch.zeros(len(LOSS_KEYS))
        with cf.active():
            for cases, seed in micro_batches[rank * config.accumulate : (rank + 1) * config.accumulate]:
                torch.manual_seed(seed)  # dropout masks too depend on the micro-batch, not on the process
                losses = backward_on(system, cases, random.Random(seed), config, 1 / config.accumulate, accelerator.autocast)
                totals += torch.tensor([losses.get(k, float("nan")) for k in LOSS_KEYS])
        _average_gradients(params, accelerator)
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        classifier.weights_changed()
        completed = step
        totals = accelerator.reduce(totals.to(accelerator.device), reduction="mean").cpu() / config.accumulate if world > 1 else totals / config.accumulate
        logged = {k: float(v) for k, v in zip(LOSS_KEYS, totals) if not math.isnan(float(v))}
        examples = logged.pop("examples") * config.accumulate * world
        if main:
            yield TrainEvent(
                "step", step, config.steps, losses=logged,
                examples_per_s=examples / (time.perf_counter() - step_started), elapsed_s=time.perf_counter() - started,
            )
        if step % config.val_every == 0 or step == config.steps:
            metrics = validate(system, val_cases, config.threshold)
            improved = metrics["score"] > best_score
            if improved:
                best_score, stale = metrics["score"], 0
                if out is not None and main:
                    best_path = str(save_checkpoint(system, out, metrics["threshold"], training=record | {"step": step}, metrics=metrics))
            else:
                stale += 1
            if main:
                yield TrainEvent("validation", step, config.steps, metrics=metrics, elapsed_s=time.perf_counter() - started, checkpoint=best_path)
            if stale >= config.patience:
                if main:
                    yield TrainEvent("done", step, config.steps, elapsed_s=time.perf_counter() - started, checkpoint=best_path, message="early stop")
                return
    message = "cancelled" if stop is not None and stop.is_set() else "finished"
    if main:
        yield TrainEvent("done", completed, config.steps, elapsed_s=time.perf_counter() - started, checkpoint=best_path, message=message)


if __name__ == "__main__":  # `accelerate launch -m searc.train --data ... --val ...` runs `searc train` in every process
    import sys

    from searc.cli import main

    sys.exit(main(["train", *sys.argv[1:]]))
