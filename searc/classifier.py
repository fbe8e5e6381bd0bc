"""The scope classifier: does a probe fall in the scope of a stored edit?

Both SERAC variants, initialised from a sentence encoder (all-MiniLM-L6-v2 by default):

- dense: embed the edit and the probe separately (mean pooling, unit norm); the score is
  sigmoid(scale * cosine + bias). Edit embeddings are computed once, when an edit is stored, so a
  probe costs one encoder pass plus a matrix-vector product. Before any training, scale and bias
  are the calibration of the raw encoder (see `calibrate`), which already routes sensibly.
- cross: encode "[CLS] edit [SEP] probe [SEP]" together and read one logit from a linear head.
  More accurate after training, but one encoder pass per (probe, edit) pair, so with many edits
  only the `top_k` edits nearest to the probe (the same encoder reading each text alone, as the
  dense variant does) are cross-encoded; the others score 0. `top_k = 0` cross-encodes them all.

`scores(inputs, memory)` returns an [n_inputs, n_edits] matrix of probabilities in [0, 1];
`scope_scores` returns it beside the classifier's own, before the name check below.

Both read names loosely: MiniLM embeds "Aaron Brooks plays in the position of" and "Ahmad Brooks
plays in the position of" almost alike, and with thousands of edits stored such near-duplicate
subjects are what locality loses. So routing also checks the edit's subject by its words
(`searc.names`: the share of the subject's words the probe writes, accents and case aside) and
lowers the logit by `name_weight` times the share missing. An edit stored without a subject is not
checked. The weight is no trained parameter: `searc tune` chooses it with the two thresholds, on
validation with the edits in memory (0 leaves the model's score as it is; checkpoints tuned before
it existed read 0).

An edit is matched by its prompt alone (`scope_text`): the new target says nothing about which
inputs the edit covers, and on CounterFact train pairs the prompt separates paraphrases from
hard negatives better than "prompt target" does.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from searc import scheduler
from searc.memory import Edit, EditMemory, EmbeddingKeys, ListKeys, PairKeys
from searc.models import seeded_init

Variant = Literal["dense", "cross"]

# Logistic fit of in-scope vs out-of-scope cosine similarities of the raw MiniLM encoder on
# 2,000 CounterFact *train* cases; `searc calibrate --data ../shared/data/counterfact/train.json` refits it.
ZERO_SHOT_SCALE = 16.2
ZERO_SHOT_BIAS = -8.44
PAIR_CHUNK = 256  # cross: (edit, input) pairs per encoder pass


@dataclass
class ClassifierConfig:
    variant: Variant = "dense"
    max_length: int = 128  # tokens per text (dense) or per pair (cross)
    scale: float = ZERO_SHOT_SCALE
    bias: float = ZERO_SHOT_BIAS
    trainable_layers: int = 2  # top encoder layers fine-tuned (the rest stay as shipped, and out of checkpoints)
    top_k: int = 32  # cross: edits cross-encoded per probe, retrieved by embedding; 0 = every edit
    name_weight: float = 0.0  # routing: logit lowered by this times the share of the edit's subject words a probe lacks (`searc.names`)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ScopeScores:
    """A batch of inputs scored against the memory: [n_inputs, n_edits] probabilities each."""

    classifier: torch.Tensor  # the classifier's own
    routing: torch.Tensor  # with subjects checked by name (`name_checked`): what routing reads


def scope_text(edit: Edit) -> str:
    """What the classifier compares inputs against."""
    return edit.prompt


def name_checked(logits: torch.Tensor, match: torch.Tensor, name_weight: float) -> torch.Tensor:
    """Routing logits: the classifier's, lowered by `name_weight` times the share of the subject missing."""
    return logits - name_weight * (1 - match) if name_weight else logits


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class ScopeClassifier(nn.Module):
    """Common parts: the encoder, its tokenizer, the key version that edit memories check."""

    def __init__(self, encoder: nn.Module, tokenizer, config: ClassifierConfig) -> None:
        super().__init__()
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.config = config
        self.key_version = uuid.uuid4().hex  # changes whenever weights change (see `weights_changed`)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def is_trainable(self, name: str) -> bool:
        """Head, scale and bias, and the encoder's top `trainable_layers` transformer layers."""
        if not name.startswith("encoder."):
            return True
        n_layers = self.encoder.config.num_hidden_layers
        return any(f".layer.{i}." in name for i in range(n_layers - self.config.trainable_layers, n_layers))

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if self.is_trainable(name)]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """What a checkpoint stores: only the tensors training may change."""
        return {k: v.detach().cpu() for k, v in self.state_dict().items() if self.is_trainable(k)}

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-norm mean-pooled embeddings of texts read alone."""
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.config.max_length, return_tensors="pt"
        ).to(self.device)
        hidden = self.encoder(**batch).last_hidden_state
        return F.normalize(mean_pool(hidden, batch["attention_mask"]), dim=-1)

    def routing_embeddings(self, inputs: Sequence[str]) -> torch.Tensor:
        """Unit-norm embeddings for routing (inference: probes, and edits as they are stored),
        encoded in one pass with other sessions' texts by the process's scheduler (`searc.scheduler`)."""
        if not inputs:
            return torch.zeros(0, self.encoder.config.hidden_size)
        lengths = [len(ids) for ids in self.tokenizer(list(inputs), truncation=True, max_length=self.config.max_length)["input_ids"]]
        return torch.stack(scheduler.shared().run(EmbeddingLane(self), [EmbeddingRow(t, n) for t, n in zip(inputs, lengths)]))

    def embed_edits(self, edits: Sequence[Edit]) -> torch.Tensor:
        return self.routing_embeddings([scope_text(e) for e in edits])

    def weights_changed(self) -> None:
        """Mark stored edit keys stale (after training steps or loading weights)."""
        self.key_version = uuid.uuid4().hex

    def scores(self, inputs: Sequence[str], memory: EditMemory) -> torch.Tensor:
        """[n_inputs, n_edits] probabilities that each input is in scope of each edit, names checked."""
        return self.scope_scores(inputs, memory).routing

    def scope_scores(self, inputs: Sequence[str], memory: EditMemory) -> ScopeScores:
        """The classifier's probabilities and routing's (names checked), [n_inputs, n_edits] each."""
        if not inputs or not len(memory):
            empty = torch.zeros(len(inputs), len(memory))
            return ScopeScores(empty, empty)
        logits = self.memory_logits(inputs, memory)
        routing = name_checked(logits, memory.names().match(inputs), self.config.name_weight) if self.config.name_weight else logits
        return ScopeScores(torch.sigmoid(logits), torch.sigmoid(routing))

    def memory_logits(self, inputs: Sequence[str], memory: EditMemory) -> torch.Tensor:
        """[n_inputs, n_edits] the classifier's own logits against the stored edits (names unchecked)."""
        keys = memory.ensure_keys(self)
        with torch.inference_mode():
            return self.logits(list(inputs), keys).float().cpu()

    def pair_logits(self, edits: Sequence[Edit], inputs: Sequence[str]) -> torch.Tensor:
        """Logits of aligned (edit_i, input_i) pairs, differentiable."""
        raise NotImplementedError

    def matrix_logits(self, edits: Sequence[Edit], inputs: Sequence[str]) -> torch.Tensor:
        """[n_edits, n_inputs] logits of every pair, differentiable: the training path."""
        raise NotImplementedError


class DenseScopeClassifier(ScopeClassifier):
    def __init__(self, encoder: nn.Module, tokenizer, config: ClassifierConfig) -> None:
        super().__init__(encoder, tokenizer, config)
        self.scale = nn.Parameter(torch.tensor(float(config.scale)))
        self.bias = nn.Parameter(torch.tensor(float(config.bias)))

    def new_key_store(self) -> EmbeddingKeys:
        return EmbeddingKeys(self.encoder.config.hidden_size)

    def edit_keys(self, edits: Sequence[Edit]) -> torch.Tensor:
        return self.embed_edits(edits)

    def similarity_logits(self, similarity: torch.Tensor) -> torch.Tensor:
        return self.scale * similarity + self.bias

    def logits(self, inputs: list[str], keys: EmbeddingKeys) -> torch.Tensor:
        return self.similarity_logits(self.routing_embeddings(inputs) @ keys.matrix.T)

    def pair_logits(self, edits: Sequence[Edit], inputs: Sequence[str]) -> torch.Tensor:
        edit_embeddings = self.embed([scope_text(e) for e in edits])
        input_embeddings = self.embed(inputs)
        return self.similarity_logits((edit_embeddings * input_embeddings).sum(-1))

    def matrix_logits(self, edits: Sequence[Edit], inputs: Sequence[str]) -> torch.Tensor:
        return self.similarity_logits(self.embed([scope_text(e) for e in edits]) @ self.embed(inputs).T)


class CrossScopeClassifier(ScopeClassifier):
    def __init__(self, encoder: nn.Module, tokenizer, config: ClassifierConfig) -> None:
        super().__init__(encoder, tokenizer, config)
        with seeded_init():
            self.head = nn.Linear(encoder.config.hidden_size, 1)

    def new_key_store(self) -> PairKeys:
        return PairKeys(ListKeys(), EmbeddingKeys(self.encoder.config.hidden_size))

    def edit_token_ids(self, edits: Sequence[Edit]) -> list[list[int]]:
        """Edit prompts tokenised once, without special tokens."""
        return [self.tokenizer(scope_text(e), add_special_tokens=False)["input_ids"] for e in edits]

    def edit_keys(self, edits: Sequence[Edit]) -> tuple[list[list[int]], torch.Tensor]:
        return self.edit_token_ids(edits), self.embed_edits(edits)

    def _pair_batch(self, edit_ids: Sequence[list[int]], input_ids: Sequence[list[int]]) -> dict[str, torch.Tensor]:
        """[CLS] edit [SEP] input [SEP], truncating the edit first, right-padded."""
        cls, sep, pad = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id, self.tokenizer.pad_token_id or 0
        budget = self.config.max_length - 3
        rows, types = [], []
        for edit, probe in zip(edit_ids, input_ids):
            probe = probe[: budget // 2] if len(edit) + len(probe) > budget else probe
            edit = edit[: budget - len(probe)]
            rows.append([cls, *edit, sep, *probe, sep])
            types.append([0] * (len(edit) + 2) + [1] * (len(probe) + 1))
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=self.device)
        token_types = torch.tensor([t + [0] * (width - len(t)) for t in types], device=self.device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=self.device)
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": token_types}

    def _forward_pairs(self, edit_ids: Sequence[list[int]], input_ids: Sequence[list[int]]) -> torch.Tensor:
        batch = self._pair_batch(edit_ids, input_ids)
        hidden = self.encoder(**batch).last_hidden_state
        return self.head(mean_pool(hidden, batch["attention_mask"])).squeeze(-1)

    def _forward_pair_chunks(self, pairs: Sequence[tuple[list[int], list[int]]]) -> torch.Tensor:
        """One logit per (edit ids, input ids) pair, PAIR_CHUNK pairs per encoder pass: validation's
        matrix of 64 edits by their 600 probes is 38,000 pairs, which in one pass took more than 24 GB."""
        return torch.cat([self._forward_pairs([e for e, _ in chunk], [x for _, x in chunk]) for chunk in _chunks(pairs, PAIR_CHUNK)])

    def _tokenize_inputs(self, inputs: Sequence[str]) -> list[list[int]]:
        return [self.tokenizer(text, add_special_tokens=False)["input_ids"] for text in inputs]

    def candidates(self, inputs: list[str], keys: PairKeys) -> torch.Tensor:
        """[n_inputs, k] indices of the edits to cross-encode for each input: the `top_k` nearest
        by embedding, or every edit when `top_k` is 0 or covers the memory."""
        k = self.config.top_k
        if not k or k >= len(keys):
            return torch.arange(len(keys)).expand(len(inputs), -1)
        similarity = self.routing_embeddings(inputs) @ keys.embeddings.matrix.T
        return similarity.topk(k, dim=1).indices

    def logits(self, inputs: list[str], keys: PairKeys) -> torch.Tensor:
        """Cross-encoded logits for each input's candidate edits; -inf (score 0) elsewhere."""
        input_ids = self._tokenize_inputs(inputs)
        chosen = self.candidates(inputs, keys)
        pairs = [(keys.token_ids[k], input_ids[i]) for i, row in enumerate(chosen.tolist()) for k in row]
        scored = self._forward_pair_chunks(pairs).float().cpu()
        out = torch.full((len(inputs), len(keys)), float("-inf"))
        return out.scatter_(1, chosen, scored.view(chosen.shape))

    def pair_logits(self, edits: Sequence[Edit], inputs: Sequence[str]) -> torch.Tensor:
        return self._forward_pair_chunks(list(zip(self.edit_token_ids(edits), self._tokenize_inputs(inputs))))

    def matrix_logits(self, edits: Sequence[Edit], inputs: Sequence[str]) -> torch.Tensor:
        edit_ids, input_ids = self.edit_token_ids(edits), self._tokenize_inputs(inputs)
        pairs = [(e, x) for e in edit_ids for x in input_ids]
        return self._forward_pair_chunks(pairs).view(len(edits), len(inputs))


@dataclass(frozen=True)
class EmbeddingRow:
    text: str
    tokens: int  # for the pass's cost


class EmbeddingLane:
    """The classifier's encoder over texts for routing (probes, new edits), as a scheduler lane (each text once a pass)."""

    priority = 0  # milliseconds a pass: before generation

    def __init__(self, classifier: ScopeClassifier) -> None:
        self.classifier = classifier
        self.key = ("embed", id(classifier))

    def cost(self, rows: Sequence[EmbeddingRow]) -> int:
        return len(rows) * max(r.tokens for r in rows)

    @torch.inference_mode()
    def run(self, rows: Sequence[EmbeddingRow]) -> list[torch.Tensor]:
        texts = list(dict.fromkeys(r.text for r in rows))  # chunks of 64: a whole imported file runs alone without batching
        embedded = dict(zip(texts, torch.cat([self.classifier.embed(chunk).float().cpu() for chunk in _chunks(texts, 64)])))
        return [embedded[r.text] for r in rows]


def calibrate(classifier: DenseScopeClassifier, pairs: Sequence[tuple[Edit, str, bool]], steps: int = 200) -> tuple[float, float]:
    """Fit the dense classifier's scale and bias to (edit, input, in_scope) pairs, encoder frozen.

    A class-balanced logistic regression on the cosine similarity: the zero-shot classifier.
    """
    if not any(label for *_, label in pairs) or all(label for *_, label in pairs):
        raise ValueError("calibration needs both in-scope and out-of-scope pairs")
    with torch.no_grad():  # not inference_mode: the similarities feed an autograd fit below
        similarity = torch.cat(
            [
                (classifier.embed([scope_text(e) for e, _, _ in chunk]) * classifier.embed([x for _, x, _ in chunk])).sum(-1)
                for chunk in _chunks(list(pairs), 64)
            ]
        ).float().cpu()
    labels = torch.tensor([float(label) for *_, label in pairs])
    positive_weight = (labels == 0).sum() / (labels == 1).sum()
    scale, bias = torch.tensor(10.0, requires_grad=True), torch.tensor(-5.0, requires_grad=True)
    optimizer = torch.optim.LBFGS([scale, bias], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(scale * similarity + bias, labels, pos_weight=positive_weight)
        loss.backward()
        return loss

    optimizer.step(closure)
    if not scale.item() > 0:  # the fit inverted similarity: too few pairs, or none of them separable by it
        raise ValueError(f"calibration on {len(pairs)} pairs found in-scope inputs no more similar to their edit than "
                         "out-of-scope ones; calibrate on more cases")
    return float(scale.detach()), float(bias.detach())


def build_classifier(encoder: nn.Module, tokenizer, config: ClassifierConfig) -> ScopeClassifier:
    cls = {"dense": DenseScopeClassifier, "cross": CrossScopeClassifier}.get(config.variant)
    if cls is None:
        raise ValueError(f"unknown classifier variant {config.variant!r}; use 'dense' or 'cross'")
    return cls(encoder, tokenizer, config)


def _chunks(items: Sequence, size: int) -> list[Sequence]:
    return [items[i : i + size] for i in range(0, len(items), size)]
