"""A language model with its tokenizer: batched greedy generation and target scoring.

One class serves the base model and the counterfactual model. When both are the same weights
with a LoRA adapter (the default), the base view runs with the adapter disabled and the
counterfactual view with it enabled; a lock shared by the two views keeps concurrent callers
from toggling the adapter under each other.

Targets are tokenised *in context*: "English" alone and " English" after a prompt are different
token ids, so the label positions are found from the character offsets of the full
"prompt target" string, not by tokenising the target on its own.

Training batches of a decoder-only model are *packed* (`make_batch(packed=True)`): the examples
lie end to end in a few even rows, each with position ids from 0, and the model's own masking
keeps every example to itself, so the only padding is a row's short tail instead of every
example padded to the longest. Whether a model does keep packed examples apart is checked once,
on the model itself (`LanguageModel.packs`); one that does not gets padded batches.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
import weakref
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch

from searc import scheduler
from searc.losses import IGNORE_INDEX, TargetLogProbs, masked_log_probs

_ADAPTER_LAYERS: "weakref.WeakKeyDictionary[torch.nn.Module, tuple]" = weakref.WeakKeyDictionary()


def adapter_layers(model: torch.nn.Module) -> tuple:
    """The peft adapter layers of `model` (none for a plain model), found once per model: a
    checkpoint's adapter is loaded into these layers, never new layers added."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    if model not in _ADAPTER_LAYERS:
        _ADAPTER_LAYERS[model] = tuple(m for m in model.modules() if isinstance(m, BaseTunerLayer))
    return _ADAPTER_LAYERS[model]


PACKED_ROW_TOKENS = 512  # about a packed row's length: longer rows spend more on attention across examples that the mask then discards


@dataclass
class Packing:
    """Where a packed batch's target tokens are: the model computes logits at the `keep` positions
    of every row (each the position before a target token), and the logit for target k of
    example s is logits[rows[s, k], columns[s, k]]."""

    keep: torch.Tensor  # [n_positions] positions of a row whose logits are computed
    rows: torch.Tensor  # [n_examples, max_target_len]
    columns: torch.Tensor  # [n_examples, max_target_len] indices into `keep`


@dataclass
class Batch:
    """Model inputs with labels on the target tokens only."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None  # None when packed: the position ids separate the examples
    labels: torch.Tensor  # causal: aligned with input_ids; seq2seq: decoder labels; packed: one row per example, aligned with its logits
    position_ids: torch.Tensor | None = None  # causal only: correct under left padding, restarting at each packed example
    decoder_input_ids: torch.Tensor | None = None  # seq2seq only
    packing: Packing | None = None  # packed causal batches only

    @property
    def shift(self) -> bool:
        """Whether logits and labels are shifted against each other (`masked_log_probs`): padded
        decoder-only batches; a packed batch's logits are taken one position before each label."""
        return self.decoder_input_ids is None and self.packing is None


@dataclass
class Generation:
    """A greedy continuation of one prompt."""

    text: str
    token_ids: list[int]
    end_probability: float  # p(first new token = end of sequence): how strongly the model would say nothing


@dataclass
class TargetScore:
    """Per-token NLL of one target given one prompt."""

    tokens: list[str]
    token_ids: list[int]
    token_nll: list[float]
    predicted_ids: list[int]  # the model's argmax at each target position (teacher forcing)
    log_probs: torch.Tensor  # [n_target_tokens, vocab] next-token log-probabilities at those positions

    @property
    def total_nll(self) -> float:
        return float(sum(self.token_nll))


def join_prompt_target(prompt: str, target: str) -> tuple[str, int]:
    """The text "prompt target" and the character index where the target part (with its space) starts."""
    separator = "" if (not prompt or prompt[-1].isspace() or target[:1].isspace()) else " "
    return prompt + separator + target, len(prompt)


@dataclass
class LanguageModel:
    """A HF causal or seq2seq LM, optionally a view with its LoRA adapter switched off."""

    model: torch.nn.Module
    tokenizer: object
    adapter_enabled: bool = True
    lock: threading.RLock = field(default_factory=threading.RLock)
    max_new_tokens: int = 12

    @property
    def is_seq2seq(self) -> bool:
        return bool(getattr(self.model.config, "is_encoder_decoder", False))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def pad_token_id(self) -> int:
        for candidate in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id, 0):
            if candidate is not None:
                return int(candidate)
        return 0

    @contextlib.contextmanager
    def active(self) -> Iterator[torch.nn.Module]:
        """Hold the lock, with the adapter on or off as this view wants.

        The base view switches the adapter layers off itself rather than through peft's
        `disable_adapter()`, which walks every module twice and reads the whole model's adapter
        status on each call (33 ms a switch off and on here, against 9 ms; README "Performance");
        the layers are found once per model. Only layers that were on are switched back, so a
        nested call leaves the adapter as the outer one set it."""
        with self.lock:
            switched = [] if self.adapter_enabled else [layer for layer in adapter_layers(self.model) if not layer.disable_adapters]
            for layer in switched:
                layer.enable_adapters(False)
            try:
                yield self.model
            finally:
                for layer in switched:
                    layer.enable_adapters(True)

    # ----------------------------------------------------------------- tokenisation
    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def encode_prompt_target(self, prompt: str, target: str, append_eos: bool = False) -> tuple[list[int], list[int]]:
        """Causal LMs: ids of "prompt target" and a same-length label list (-100 off the target).

        append_eos adds the end-of-sequence token to the target, so a model trained on it stops
        after the answer instead of running on; with an empty target the label is that token alone
        (the counterfactual model learns to decline an edit that does not apply)."""
        if not target and append_eos:
            ids = self.encode(prompt)
            return ids + [self.tokenizer.eos_token_id], [IGNORE_INDEX] * len(ids) + [self.tokenizer.eos_token_id]
        text, target_start = join_prompt_target(prompt, target)
        if getattr(self.tokenizer, "is_fast", False):
            encoded = self.tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
            ids = list(encoded["input_ids"])
            labels = [
                token if end > target_start and end > start else IGNORE_INDEX
                for token, (start, end) in zip(ids, encoded["offset_mapping"])
            ]
        else:  # slow tokenisers have no offsets: the prompt's ids must prefix the full ids
            ids = self.encode(text)
            prompt_ids = self.encode(prompt)
            if ids[: len(prompt_ids)] != prompt_ids:
                raise ValueError(f"cannot align target {target!r} after prompt {prompt!r}")
            labels = [IGNORE_INDEX] * len(prompt_ids) + ids[len(prompt_ids):]
        if all(label == IGNORE_INDEX for label in labels):
            raise ValueError(f"target {target!r} has no tokens after prompt {prompt!r}")
        if append_eos:
            ids, labels = ids + [self.tokenizer.eos_token_id], labels + [self.tokenizer.eos_token_id]
        return ids, labels

    def target_ids(self, prompt: str, target: str) -> list[int]:
        """The ids `target` has as the continuation of `prompt` (in context, as scoring reads it)."""
        if self.is_seq2seq:
            return list(self.tokenizer(target, add_special_tokens=False)["input_ids"])
        return [label for label in self.encode_prompt_target(prompt, target)[1] if label != IGNORE_INDEX]

    def _pad(self, rows: Sequence[Sequence[int]], value: int, side: str) -> torch.Tensor:
        width = max(len(row) for row in rows)
        padded = [
            ([value] * (width - len(row)) + list(row)) if side == "left" else (list(row) + [value] * (width - len(row)))
            for row in rows
        ]
        return torch.tensor(padded, dtype=torch.long, device=self.device)

    def make_batch(self, prompts: Sequence[str], targets: Sequence[str], append_eos: bool = False, packed: bool = False) -> Batch:
        """Inputs and labels for teacher-forced scoring of `targets` after `prompts`; `packed`
        (decoder-only models that keep packed examples apart, `packs`) lays them end to end."""
        if len(prompts) != len(targets) or not prompts:
            raise ValueError("need the same, non-zero number of prompts and targets")
        side = self.tokenizer.padding_side
        if self.is_seq2seq:
            sources = [self.encode(p) for p in prompts]
            label_rows = [self.target_ids(p, t) for p, t in zip(prompts, targets)]
            if any(not row for row in label_rows) and not append_eos:
                raise ValueError("empty target")
            if append_eos:
                label_rows = [row + [self.tokenizer.eos_token_id] for row in label_rows]
            labels = self._pad(label_rows, IGNORE_INDEX, "right")
            start = self.model.config.decoder_start_token_id
            decoder_input_ids = torch.cat(
                [torch.full_like(labels[:, :1], start), labels[:, :-1].masked_fill(labels[:, :-1] == IGNORE_INDEX, self.pad_token_id)],
                dim=1,
            )
            return Batch(
                input_ids=self._pad(sources, self.pad_token_id, side),
                attention_mask=self._pad([[1] * len(s) for s in sources], 0, side),
                labels=labels,
                decoder_input_ids=decoder_input_ids,
            )
        encoded = [self.encode_prompt_target(p, t, append_eos) for p, t in zip(prompts, targets)]
        if packed and self.packs:
            return self._packed_batch(encoded)
        attention_mask = self._pad([[1] * len(ids) for ids, _ in encoded], 0, side)
        return Batch(
            input_ids=self._pad([ids for ids, _ in encoded], self.pad_token_id, side),
            attention_mask=attention_mask,
            labels=self._pad([labels for _, labels in encoded], IGNORE_INDEX, side),
            position_ids=(attention_mask.cumsum(-1) - 1).clamp(min=0),
        )

    def _packed_batch(self, encoded: Sequence[tuple[list[int], list[int]]], row_tokens: int = PACKED_ROW_TOKENS) -> Batch:
        """Examples (ids, labels) placed end to end in as many rows as `row_tokens` a row needs,
        longest first, each in the row that holds the fewest tokens so far (so the rows come out
        nearly even); the tail of a row is padding that restarts its position ids, so the model
        takes it for one more example and nothing reads it."""
        n_rows = math.ceil(sum(len(ids) for ids, _ in encoded) / row_tokens)
        placed: list[tuple[int, int]] = [(0, 0)] * len(encoded)  # (row, offset) of each example
        used = [0] * n_rows  # tokens taken in each row
        for index in sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0])):
            row = min(range(n_rows), key=used.__getitem__)
            placed[index], used[row] = (row, used[row]), used[row] + len(encoded[index][0])
        width = max(used)
        input_ids = torch.full((len(used), width), self.pad_token_id, dtype=torch.long)
        position_ids = torch.arange(width).repeat(len(used), 1)
        for row, n in enumerate(used):
            position_ids[row, n:] = torch.arange(width - n)
        # each target token: its example's row, the position whose logit predicts it, its id; an
        # example's first token has no such position (as under the padded batch's shift)
        targets: list[list[tuple[int, int, int]]] = []
        for (ids, labels), (row, offset) in zip(encoded, placed):
            input_ids[row, offset : offset + len(ids)] = torch.tensor(ids)
            position_ids[row, offset : offset + len(ids)] = torch.arange(len(ids))
            targets.append([(row, offset + t - 1, label) for t, label in enumerate(labels) if label != IGNORE_INDEX and t > 0])
        keep = sorted({position for example in targets for _, position, _ in example}) or [0]  # [0]: no example has a scored token
        column_of = {position: column for column, position in enumerate(keep)}
        longest = max(len(example) for example in targets)
        filler = [(0, keep[0], IGNORE_INDEX)]  # pads an example's targets to `longest`; its label masks it
        grid = [example + filler * (longest - len(example)) for example in targets]

        def tensor(values: list) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.long, device=self.device)

        return Batch(
            input_ids=input_ids.to(self.device), attention_mask=None, position_ids=position_ids.to(self.device),
            labels=tensor([[label for _, _, label in example] for example in grid]),
            packing=Packing(
                keep=tensor(keep),
                rows=tensor([[row for row, _, _ in example] for example in grid]),
                columns=tensor([[column_of[position] for _, position, _ in example] for example in grid]),
            ),
        )

    @functools.cached_property
    def packs(self) -> bool:
        """Whether this decoder-only model keeps packed examples apart: an example packed after
        another gets the logits it gets alone (transformers' masking separates them by the
        restarting position ids for most models; one that ignores them would let an example read
        the one before it)."""
        if self.is_seq2seq:
            return False
        first, second = self.encode("The capital of France is Paris."), self.encode("One, two, three")
        # in the weights' own precision (training may call this under bf16 autocast), where two
        # passes of other shapes still agree closely; half-precision weights get a looser bound
        precise = next(self.model.parameters()).dtype == torch.float32
        with torch.inference_mode(), torch.autocast(self.device.type, enabled=False), self.active() as model:
            training = model.training
            model.eval()  # dropout would make the two passes differ
            try:
                alone = model(input_ids=torch.tensor([second], device=self.device)).logits[0]
                together = model(
                    input_ids=torch.tensor([first + second], device=self.device),
                    position_ids=torch.tensor([list(range(len(first))) + list(range(len(second)))], device=self.device),
                    use_cache=False,
                ).logits[0, len(first):]
            finally:
                model.train(training)
        tolerance = 1e-4 if precise else 5e-2
        return bool(torch.allclose(alone.float(), together.float(), atol=tolerance, rtol=10 * tolerance))

    # ----------------------------------------------------------------- forward passes
    def target_logits(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and the labels aligned with them (before any shift, `Batch.shift`). Call inside `active()`.

        A decoder-only model projects onto the vocabulary only from the position before the
        earliest target token to the end (`logits_to_keep`): with a 49k vocabulary, full logits for
        the prompt tokens, which carry no label, were most of a training step's memory. A packed
        batch projects only the positions before its target tokens."""
        if batch.packing is not None:
            packing = batch.packing
            logits = self.model(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False, logits_to_keep=packing.keep).logits
            return logits[packing.rows, packing.columns], batch.labels
        if self.is_seq2seq:
            logits = self.model(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask, decoder_input_ids=batch.decoder_input_ids
            ).logits
            return logits, batch.labels
        length = batch.labels.shape[1]
        first_target = int((batch.labels != IGNORE_INDEX).float().argmax(-1).min())
        keep = min(length, length - first_target + 1)
        logits = self.model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids, logits_to_keep=keep
        ).logits
        return logits, batch.labels[:, length - keep :]

    def target_log_probs(self, batch: Batch) -> TargetLogProbs:
        """Differentiable target statistics (used by training); call inside `active()`."""
        return masked_log_probs(*self.target_logits(batch), shift=batch.shift)

    def score_targets(self, prompts: Sequence[str], targets: Sequence[str]) -> list[TargetScore]:
        """Per-token NLL of each target after its prompt, scored in one pass with other callers'
        rows by the process's scheduler (`searc.scheduler`)."""
        if len(prompts) != len(targets):
            raise ValueError("need the same number of prompts and targets")
        rows = [ScoringRow(p, t, len(self.encode(p)) + len(self.encode(" " + t))) for p, t in zip(prompts, targets)]
        return scheduler.shared().run(ScoringLane(self), rows)

    @torch.inference_mode()
    def score_pass(self, prompts: Sequence[str], targets: Sequence[str]) -> list[TargetScore]:
        """One teacher-forced pass under the model's lock (`score_targets`)."""
        batch = self.make_batch(prompts, targets)
        with self.active():
            logits, labels = self.target_logits(batch)
        shift = batch.shift
        stats = masked_log_probs(logits, labels, shift=shift)
        aligned_logits = logits[:, :-1] if shift else logits
        scores = []
        for row_nll, row_mask, row_logits, row_labels in zip(stats.token_nll, stats.mask, aligned_logits, labels[:, 1:] if shift else labels):
            ids = row_labels[row_mask].tolist()
            scores.append(
                TargetScore(
                    tokens=[self.tokenizer.decode([i]) for i in ids],
                    token_ids=ids,
                    token_nll=row_nll[row_mask].tolist(),
                    predicted_ids=row_logits[row_mask].argmax(-1).tolist(),
                    log_probs=torch.log_softmax(row_logits[row_mask].float(), dim=-1),
                )
            )
        return scores

    def budget_for(self, targets: Sequence[str]) -> int:
        """New tokens enough to finish the longest of `targets` (and end it), never fewer than
        `max_new_tokens`: "The Time Machine (1960 film)" must not be cut at a fixed budget."""
        longest = max((len(self.encode(" " + t.strip())) for t in targets if t), default=0)
        return max(self.max_new_tokens, longest + 3)

    def generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: int | None = None,
        answer: bool = False,
        finish: Sequence[str | None] | None = None,
    ) -> list[Generation]:
        """Greedy continuations (KV-cached, left-padded batch), each with its end probability.

        answer=True never ends at once: the first token is the likeliest one other than end of
        sequence, so a counterfactual model that would rather decline still shows what it would
        say; whether it declines is the caller's reading of `end_probability`.
        finish: per prompt, a target to finish verbatim once the continuation has begun it
        (`FinishTargets`); None for a prompt, or for all, decodes freely.

        The rows go to the process's scheduler (`searc.scheduler`), which runs them in one pass
        with other callers' rows of the same view, each cut to its own budget afterwards."""
        budget = max_new_tokens or self.max_new_tokens
        finish = list(finish) if finish is not None else [None] * len(prompts)
        rows = [GenerationRow(p, budget, f, len(self.encode(p))) for p, f in zip(prompts, finish)]
        return scheduler.shared().run(GenerationLane(self, answer), rows)

    @torch.inference_mode()
    def generate_pass(
        self, prompts: Sequence[str], max_new_tokens: int, answer: bool = False, finish: Sequence[str | None] | None = None,
    ) -> list[Generation]:
        """One batched greedy pass, under the model's lock (`generate` says what the arguments mean)."""
        from transformers import LogitsProcessorList  # loaded lazily, as in searc.models

        if not prompts:
            return []
        rows = [self.encode(p) for p in prompts]
        side = "right" if self.is_seq2seq else "left"
        input_ids = self._pad(rows, self.pad_token_id, side)
        attention_mask = self._pad([[1] * len(r) for r in rows], 0, side)
        first_step = FirstStepEnd(self.tokenizer.eos_token_id, mask=answer)
        processors = [first_step]
        if finish is not None and any(finish):
            targets = [self.target_ids(p, t) if t else None for p, t in zip(prompts, finish)]
            processors.append(FinishTargets(targets, 1 if self.is_seq2seq else input_ids.shape[1], self.tokenizer))
        with self.active() as model:
            sequences = model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=self.pad_token_id,
                logits_processor=LogitsProcessorList(processors),
            )
        new_tokens = sequences if self.is_seq2seq else sequences[:, input_ids.shape[1]:]
        end_probabilities = first_step.end_probabilities
        generations = []
        for row, end_probability in zip(new_tokens.tolist(), end_probabilities):
            ids = [t for t in row if t != self.pad_token_id] if self.is_seq2seq else _strip_after_eos(row, self.tokenizer.eos_token_id)
            generations.append(Generation(self.tokenizer.decode(ids, skip_special_tokens=True), ids, end_probability))
        return generations

    def cut(self, generation: Generation, max_new_tokens: int) -> Generation:
        """A generation as it reads after `max_new_tokens` new tokens (greedy: the same first
        tokens whatever budget the pass ran with)."""
        if len(generation.token_ids) <= max_new_tokens:
            return generation
        ids = generation.token_ids[:max_new_tokens]
        return Generation(self.tokenizer.decode(ids, skip_special_tokens=True), ids, generation.end_probability)

    @torch.inference_mode()
    def next_token_log_probs(self, prompt: str, continuation: Sequence[int]) -> torch.Tensor:
        """log p(next token | prompt, continuation ids) over the vocabulary (soft routing decodes with it)."""
        prompt_ids = torch.tensor([self.encode(prompt)], device=self.device)
        continuation_ids = torch.tensor([list(continuation)], dtype=torch.long, device=self.device)
        with self.active() as model:
            if self.is_seq2seq:
                start = torch.full((1, 1), model.config.decoder_start_token_id, device=self.device)
                logits = model(input_ids=prompt_ids, decoder_input_ids=torch.cat([start, continuation_ids], 1)).logits
            else:
                logits = model(input_ids=torch.cat([prompt_ids, continuation_ids], 1)).logits
        return torch.log_softmax(logits[0, -1].float(), dim=-1)


class FirstStepEnd:
    """A logits processor that reads each row's end-of-sequence probability at the first generated
    token and, with `mask`, then forbids ending there (`generate(answer=True)`). Only that one step
    is kept: keeping every step's logits to read it would cost a vocabulary-sized row per token."""

    def __init__(self, eos_token_id: int, mask: bool) -> None:
        self.eos_token_id, self.mask = eos_token_id, mask
        self.end_probabilities: list[float] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.end_probabilities:
            return scores
        self.end_probabilities = torch.softmax(scores.float(), dim=-1)[:, self.eos_token_id].tolist()
        return scores.index_fill(-1, torch.tensor([self.eos_token_id], device=scores.device), float("-inf")) if self.mask else scores


class FinishTargets:
    """A logits processor that finishes a target a row has begun, unless it leaves it for a word of
    its own: while a row's new tokens are the first k (k >= 1) of its target's ids, the target's
    (k+1)-th token is taken in place of the model's own choice, except where that choice starts a
    new word the rest of the target does not hold.

    Why: trained on short targets, the counterfactual model that starts "The Time Machine (1960
    film" ends before ")", writes "Frederick II Margrave Bavaria" for "Frederick II, Margrave of
    Bavaria" (skipping ahead) and "Dryoceracoidea" for "Dryoceratoidea" (inside a word): each is
    taken back to the target. A row heading for another word is left alone: after the edit "Wang
    Jipeng's father -> Wang Chonghua", "Who is the son of Wang Chonghua?" begins " Wang" and goes
    on " Jipeng". The first token is the model's own too, so declining, and answering with another
    word (a consequence, "Italy" for a city edited to Rome), are as they were; once the full target
    is out, decoding is free again (the model ends, as it learned)."""

    def __init__(self, targets: Sequence[list[int] | None], generated_from: int, tokenizer) -> None:
        self.targets, self.generated_from, self.tokenizer = list(targets), generated_from, tokenizer

    def _leaves_for_a_word(self, begun: list[int], choice: int, rest_of_target: list[int]) -> bool:
        if choice == self.tokenizer.eos_token_id or choice in rest_of_target:
            return False
        added = self.tokenizer.decode(begun + [choice])[len(self.tokenizer.decode(begun)):]
        return added[:1].isspace() and any(c.isalnum() for c in added)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.generated_from:].tolist()
        for row, (so_far, target) in enumerate(zip(generated, self.targets)):
            k = len(so_far)
            if not target or not 1 <= k < len(target) or so_far != target[:k]:
                continue
            choice = int(scores[row].argmax())  # only rows still on their target: this runs at every step
            if choice != target[k] and not self._leaves_for_a_word(so_far, choice, target[k + 1:]):
                forced = torch.full_like(scores[row], float("-inf"))
                forced[target[k]] = 0.0
                scores[row] = forced
        return scores


@dataclass(frozen=True)
class GenerationRow:
    """One prompt's share of a generation pass: its own budget and target to finish."""

    prompt: str
    max_new_tokens: int
    finish: str | None
    tokens: int  # the prompt's length, for the pass's cost


class GenerationLane:
    """Greedy generation by one model view, as a scheduler lane: rows of any callers in one pass,
    each cut to its own budget; a prompt asked twice with the same target is generated once."""

    priority = 1

    def __init__(self, lm: LanguageModel, answer: bool) -> None:
        self.lm, self.answer = lm, answer
        self.key = ("generate", id(lm.model), lm.adapter_enabled, answer)

    def cost(self, rows: Sequence[GenerationRow]) -> int:
        return len(rows) * (max(r.tokens for r in rows) + max(r.max_new_tokens for r in rows))

    def run(self, rows: Sequence[GenerationRow]) -> list[Generation]:
        unique = list(dict.fromkeys((r.prompt, r.finish) for r in rows))
        generated = self.lm.generate_pass(
            [p for p, _ in unique], max(r.max_new_tokens for r in rows), self.answer, [f for _, f in unique]
        )
        by_row = dict(zip(unique, generated))
        return [self.lm.cut(by_row[(r.prompt, r.finish)], r.max_new_tokens) for r in rows]


@dataclass(frozen=True)
class ScoringRow:
    """One (prompt, target) of a teacher-forced scoring pass."""

    prompt: str
    target: str
    tokens: int  # prompt and target, for the pass's cost


class ScoringLane:
    """Teacher-forced target scoring by one model view, as a scheduler lane (the token view and
    per-target NLL of every session in one forward pass)."""

    priority = 1

    def __init__(self, lm: LanguageModel) -> None:
        self.lm = lm
        self.key = ("score", id(lm.model), lm.adapter_enabled)

    def cost(self, rows: Sequence[ScoringRow]) -> int:
        return len(rows) * max(r.tokens for r in rows)

    def run(self, rows: Sequence[ScoringRow]) -> list[TargetScore]:
        unique = list(dict.fromkeys((r.prompt, r.target) for r in rows))  # an inspection asks for the final output twice
        scored = dict(zip(unique, self.lm.score_pass([p for p, _ in unique], [t for _, t in unique])))
        return [scored[(r.prompt, r.target)] for r in rows]


def _strip_after_eos(row: list[int], eos_token_id: int | None) -> list[int]:
    """Tokens up to and including the first EOS (generate pads finished rows after it)."""
    if eos_token_id is not None and eos_token_id in row:
        return row[: row.index(eos_token_id) + 1]
    return row
