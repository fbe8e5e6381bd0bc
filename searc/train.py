"""Joint training of the scope classifier and the counterfactual model, as in SERAC's trainer.

Each step samples a batch of edit cases, augmented with other wordings of each edited fact and
other facts of each edited subject (`searc.augment`; what a batch is: `searc.batches`).
- Counterfactual loss: NLL (`masked_log_probs`) of target_new followed by end-of-sequence on the
  in-scope probes (the edit prompt and its other wordings), with the gold edit in the
  counterfactual model's context. The end-of-sequence token teaches it to stop after the answer.
- Classifier loss: class-balanced BCE on every (edit, input) pair of the batch: each edit against
  every in-scope and out-of-scope probe of every case in the batch. Positives are an edit's own
  in-scope probes; negatives are its out-of-scope probes (other facts of the same subject; the
  same relation of other subjects) and all other edits' probes, as when many edits share the memory.
- Decline loss: each out-of-scope probe with the batch's edit the classifier most confuses it
  with in context; the target is end-of-sequence alone, so the counterfactual model learns to
  hand back a probe the edit does not cover (see `editor.answer`).
loss = c_edit * NLL + c_cls * BCE + c_decline * decline NLL, one AdamW over the LoRA parameters and
the classifier's trainable parameters. `train` is a generator of `TrainEvent`s (what the UI plots
live); the best checkpoint by validation score (`searc.validation`) is written atomically, so
cancelling loses nothing. Relations in `held_out_relations` are left out of training entirely.

The same code runs under `accelerate launch` (several processes, GPUs or machines): see
`_train_loop` for how the micro-batches are shared out and the gradients averaged.
"""

from __future__ import annotations

import contextlib
import math
import random
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Mapping, Sequence

import torch

from searc import scheduler
from searc.augment import AugmentConfig, Augmenter, augmented_validation, split_by_relation
from searc.consequences import FORMS, STEP_NAMES, check_forms, check_step_names, facts_for
from searc.batches import BatchSampler, counterfactual_examples, decline_examples, scope_matrix
from searc.data import EditCase
from searc.editor import SeracSystem
from searc.losses import balanced_bce
from searc.relations import relation_id
from searc.system import save_checkpoint
from searc.validation import validate


HELD_OUT_RELATIONS = ("P20", "P101", "P449", "P138")  # place of death, field of work, original broadcaster, named after


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
    augment: bool = True  # other wordings and other facts of each subject (searc.augment)
    # with augment: consequence probes from the base model's knowledge (searc.consequences). Off by
    # default: the one run with them (README, "How well it works") answered consequences no better
    # and lost recall on the edits' own paraphrases
    consequences: bool = False
    consequence_steps: tuple[str, ...] = STEP_NAMES  # with consequences: the follow-on facts composed (searc.consequences)
    # with consequences: how their probes ask (cloze, question, natural). All by default: a third
    # stage without the cloze (README) declined KnowEdit-like clozes no better and learned the consequences less
    consequence_forms: tuple[str, ...] = FORMS
    # with augment: the share of cases trained (and validated) with the target in a form the
    # training files lack (searc.augment.target_form). Off by default: runs with it (0.2 in both
    # stages; 0.3 in a third stage that trains the counterfactual model alone) copied every form,
    # but answered fewer paraphrases or declined more off CounterFact (README)
    target_forms: float = 0.0
    qualified_forms_only: bool = False  # with target_forms: only "Paris (film)" and "Paris, Ontario", no number, date or script
    # with augment: a zsRE-style question never draws a rewording of its own relation as another
    # fact of the subject (searc.augment.question_groups). Off by default: the shipped checkpoint was
    # trained without it, and one run with it (README) cannot tell the change from the seed's draw
    question_groups: bool = False
    # with augment: the chance that each case drawn brings a scope-only case of its subject, in one
    # of `searc.relations.SCOPE_RELATIONS` (the classifier's BCE only; see Augmenter.scope_case)
    scope_cases: float = 0.0
    # with scope_cases: each scope case carries a target of its relation's kind (augment.SCOPE_TARGETS)
    # and also trains the counterfactual model (answer its relation's other wordings, decline another
    # relation of the subject; Augmenter.scope_case). Off by default: third stages with it (README,
    # "Scope answers for the decline") reached more held-out relations but declined fewer of
    # KnowEdit's other facts
    scope_answers: bool = False
    # with augment: out-of-scope wordings of each edit with a near-duplicate subject of the run in
    # place of its own, per case drawn ("Aaron Brooks" for "Ahmad Brooks"; Augmenter.near_subjects_of).
    # Off by default: runs with 1 in the second stage or in both (README) separated near duplicates at scale no better
    near_subjects: int = 0
    cf_examples_per_case: int = 2  # in-scope counterfactual examples per case and step (edit prompt + random wordings); 0 = all
    declines_per_case: int = 2  # decline examples per case and step, out-of-scope probes drawn at random; 0 = all
    # CounterFact relations left out of training entirely (their cases and their templates), so that
    # validation and evaluation can measure relations the editor never saw
    held_out_relations: tuple[str, ...] = HELD_OUT_RELATIONS
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
        for name in ("hard_fraction", "target_forms", "scope_cases"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        for name in ("lr", "classifier_lr", "calibration_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        self.held_out_relations = tuple(relation_id(name) for name in self.held_out_relations)
        self.consequence_steps = check_step_names(self.consequence_steps)
        self.consequence_forms = check_forms(self.consequence_forms)
        for name, zero in (("cf_examples_per_case", "0 (all)"), ("declines_per_case", "0 (all)"), ("near_subjects", "0")):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be {zero} or more, got {getattr(self, name)!r}")
        if min(self.c_edit, self.c_cls, self.c_decline) < 0 or self.c_edit + self.c_cls + self.c_decline == 0:
            raise ValueError("c_edit, c_cls and c_decline must be non-negative and not all zero")

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> TrainConfig:
        """The config of a checkpoint's training record (`asdict` of the run's config). A record
        written before a field existed means that field off, not today's default: no augmentation
        and no held-out relations (the fields added since are off by default anyway)."""
        names = {f.name for f in fields(cls)}
        return cls(**{"augment": False, "held_out_relations": (), **{k: v for k, v in record.items() if k in names}})

    def augment_config(self) -> AugmentConfig:
        """What `searc.augment` adds to each case drawn."""
        return AugmentConfig(
            target_forms=self.target_forms, qualified_forms_only=self.qualified_forms_only, scope_cases=self.scope_cases,
            scope_answers=self.scope_answers, consequence_forms=self.consequence_forms,
            near_subjects=self.near_subjects, question_groups=self.question_groups,
        )

    def validation_cases(self, cases: Sequence[EditCase]) -> list[EditCase]:
        """`cases` as this run validates them: augmented with the kinds of probes training adds,
        drawn once with the run's seed (`searc.augment.augmented_validation`)."""
        if not self.augment:
            return list(cases)
        return augmented_validation(cases, self.augment_config(), self.held_out_relations, self.seed)


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
    inputs, targets = counterfactual_examples(cases, rng, config.drop_subject, config.cf_examples_per_case) if config.c_edit > 0 else ([], [])
    with autocast():
        logits = system.classifier.matrix_logits([case.edit for case in cases], probes)
        bce = balanced_bce(logits.flatten(), labels.flatten().to(logits.device))
        terms = {"bce": bce}
        loss = config.c_cls * bce
        if inputs:  # with c_edit = 0 (the classifier alone) the language model is not run
            stats = cf.target_log_probs(cf.make_batch(inputs, targets, append_eos=True, packed=True))  # answer, then stop
            terms |= {"nll": stats.nll, "token_accuracy": stats.token_accuracy}
            loss = loss + config.c_edit * stats.nll
    (loss * scale).backward()
    losses = {name: float(value.detach()) for name, value in {"loss": loss, **terms}.items()}
    n_examples = len(inputs) + labels.numel()
    if config.c_decline > 0:
        decline_inputs = decline_examples(cases, probes, labels, logits.detach(), rng, config.drop_subject, config.declines_per_case * len(cases))
        if decline_inputs:
            with autocast():
                declined = cf.target_log_probs(cf.make_batch(decline_inputs, [""] * len(decline_inputs), append_eos=True, packed=True)).nll
            (config.c_decline * declined * scale).backward()
            losses["decline_nll"] = float(declined.detach())
            losses["loss"] += config.c_decline * losses["decline_nll"]
            n_examples += len(decline_inputs)
    return {**losses, "examples": float(n_examples)}


def prepare_training(
    train_cases: Sequence[EditCase], val_cases: Sequence[EditCase], config: TrainConfig, out: str | Path | None, overwrite: bool = False
) -> None:
    """Refuse a run that cannot train, or that would replace what is already at `out` (unless
    `overwrite`), before any model is loaded or step taken; then make `out`, so that an unwritable
    place fails now, not at the first checkpoint."""
    if len(split_by_relation(train_cases, config.held_out_relations)[0]) < 2:
        raise ValueError("training needs at least 2 edit cases (after leaving out the held-out relations)")
    if not val_cases:
        raise ValueError("training needs validation cases")
    if out is not None and not overwrite and Path(out).exists() and (not Path(out).is_dir() or any(Path(out).iterdir())):
        raise ValueError(f"{out} already exists and is not empty: name a new checkpoint, or replace it on purpose "
                         "(searc train --overwrite; in the workbench, tick 'Replace a checkpoint of this name')")
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)


def train(
    system: SeracSystem,
    train_cases: Sequence[EditCase],
    val_cases: Sequence[EditCase],
    config: TrainConfig,
    out: str | Path | None = None,
    stop: threading.Event | None = None,
    sources: Mapping[str, Sequence[str]] | None = None,
    overwrite: bool = False,
) -> Iterator[TrainEvent]:
    """Train in place, yielding events; writes the best checkpoint to `out` (if given), which must
    be new or empty unless `overwrite`. `sources`: what the cases were read from, as the user named
    them ({"data": [...], "val": [...]}), kept in the checkpoint's training record (`searc tune`
    validates on the same by default)."""
    prepare_training(train_cases, val_cases, config, out, overwrite)
    train_cases, _ = split_by_relation(train_cases, config.held_out_relations)
    torch.manual_seed(config.seed)
    # what the unedited model knows of the new objects, for consequence probes (searc.consequences)
    facts = facts_for(system.base, train_cases, config.consequence_steps) if config.augment and config.consequences else {}
    augmenter = Augmenter(train_cases, config.augment_config(), held_out=config.held_out_relations, facts=facts) if config.augment else None
    val_cases = config.validation_cases(list(val_cases)[: config.val_cases])
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
        yield from _train_loop(
            system, train_cases, val_cases, config, optimizer, lora_params, out, stop, accelerator, augmenter, len(facts), sources
        )
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


def _train_loop(
    system, train_cases, val_cases, config, optimizer, lora_params, out, stop, accelerator, augmenter, n_facts: int, sources
) -> Iterator[TrainEvent]:
    """Each step draws `processes * accumulate` micro-batches from one shared random stream, so every
    process agrees on them; a process computes only its own. A single process with `accumulate`
    equal to that product therefore takes exactly the same steps (tests/test_distributed.py).
    Every process validates (the weights are the same everywhere); only the main one writes
    checkpoints and yields events."""
    classifier, cf, rng = system.classifier, system.counterfactual, random.Random(config.seed)
    main, world, rank = accelerator.is_main_process, accelerator.num_processes, accelerator.process_index
    started = time.perf_counter()
    best_score, stale, best_path = -1.0, 0, None
    record = {
        "config": asdict(config), "train_cases": len(train_cases), "processes": world, "consequence_facts": n_facts,
        "init": system.info.checkpoint,  # the checkpoint training continued from, if any
        "classifier_init": system.info.classifier_init,  # or "checkpoint": the init checkpoint's
        "init_training": system.info.training or None,  # the init checkpoint's own record: a staged recipe keeps every stage
        "sources": {name: list(paths) for name, paths in (sources or {}).items()} or None,
    }
    sampler = BatchSampler(train_cases, system, config.batch_edits, config.hard_fraction, rng, augmenter)
    params = lora_params + classifier.trainable_parameters()
    completed = 0
    for step in range(1, config.steps + 1):
        if stop is not None and stop.is_set():
            break
        scheduler.shared().background_turn()  # the cores go to waiting probes first (a step takes seconds)
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
        system.kept_answers.clear()  # the adapter moved: answers generated before are stale
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
            metrics = validate(system, val_cases, config.threshold, config.held_out_relations)
            improved = metrics["score"] > best_score
            if improved:
                best_score, stale = metrics["score"], 0
                if out is not None and main:
                    best_path = str(save_checkpoint(
                        system, out, metrics["threshold"], decline_threshold=metrics["decline_threshold"], name_weight=metrics["name_weight"],
                        training=record | {"step": step}, metrics=metrics,
                    ))
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
