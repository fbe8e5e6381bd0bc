"""Looking inside one probe: why it was routed, and where its outputs depart from the base model.

- `scope_view`: the nearest stored edits with their scores against the threshold, how sure the
  counterfactual model is that the best one does not apply (its probability of ending at once,
  which is what declining is), and the decision in words; `claimed_by` lists the probes an edit
  answers.
- `output_tokens`: the base output and the final output as tokens, each with its NLL under the
  model that produced it, the other model's NLL of the same token (the base model for the
  counterfactual output, and the counterfactual model with the best edit in context for the base
  output), and the top alternatives at that position. Outputs are re-tokenised in context after
  the prompt, as targets are (`LanguageModel.encode_prompt_target`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from searc import scheduler
from searc.counterfactual import counterfactual_input
from searc.editor import ProbeResult, SeracSystem, end_probabilities
from searc.lm import TargetScore
from searc.memory import Edit

TOP_ALTERNATIVES = 5
NEAREST_EDITS = 5


@dataclass(frozen=True)
class NearEdit:
    edit: Edit
    score: float
    passes: bool  # at or above the threshold


@dataclass(frozen=True)
class ScopeView:
    prompt: str
    threshold: float
    decline_threshold: float
    nearest: tuple[NearEdit, ...]  # best first
    decline_probability: float | None  # of the best edit, under the counterfactual model; None without edits
    decision: str


@dataclass(frozen=True)
class TokenInfo:
    text: str
    nll: float  # under the model that produced the output
    other_nll: float | None  # under the other model (None: there is no other, the memory being empty)
    alternatives: tuple[tuple[str, float], ...]  # the producing model's top tokens here, with probabilities


@dataclass(frozen=True)
class OutputTokens:
    name: str  # "base output" or "final output"
    producer: str  # "base model" or "counterfactual model"
    other: str | None
    text: str
    tokens: tuple[TokenInfo, ...]


def scope_view(system: SeracSystem, result: ProbeResult, edits: Sequence[Edit], k: int = NEAREST_EDITS) -> ScopeView:
    by_id = {e.id: e for e in edits}
    ranked = sorted(((by_id[i], s) for i, s in result.scores.items() if i in by_id), key=lambda pair: -pair[1])[:k]
    nearest = tuple(NearEdit(edit, score, score >= result.threshold) for edit, score in ranked)
    declining = result.decline_probability
    if declining is None and result.best_edit is not None:  # not routed, and the counterfactual model was not asked
        declining = end_probabilities(system, [result.prompt], [result.best_edit])[0]
    return ScopeView(result.prompt, result.threshold, result.decline_threshold, nearest, declining, result.explanation())


def claimed_by(edit_id: str, results: Sequence[ProbeResult]) -> list[ProbeResult]:
    """The probes that `edit_id` answers: routed to it and not declined."""
    return [r for r in results if r.routed and not r.declined and r.best_edit is not None and r.best_edit.id == edit_id]


def output_tokens(system: SeracSystem, result: ProbeResult, k: int = TOP_ALTERNATIVES) -> list[OutputTokens]:
    """Token strips of the base output and, when the counterfactual model answered, of the final
    output. Each model scores both outputs in one batch: two forward passes in all."""
    edit = result.best_edit
    context = counterfactual_input(edit, result.prompt) if edit is not None else None
    outputs = [("base output", "base model", result.base_output)]
    if result.routed and not result.declined:
        outputs.append(("final output", "counterfactual model", result.output))
    outputs = [(name, producer, text) for name, producer, text in outputs if text.strip()]
    if not outputs:
        return []
    texts = [text for _, _, text in outputs]
    scorers = {"base model": lambda: system.base.score_targets([result.prompt] * len(texts), texts)}
    if context is not None:
        scorers["counterfactual model"] = lambda: system.counterfactual.score_targets([context] * len(texts), texts)
    scores = dict(zip(scorers, scheduler.together(*scorers.values())))  # the two models' passes queue together
    tokenizers = {"base model": system.base.tokenizer, "counterfactual model": system.counterfactual.tokenizer}
    strips = []
    for row, (name, producer, text) in enumerate(outputs):
        other = next((m for m in scores if m != producer), None)
        strips.append(_strip(name, producer, text, scores[producer][row], other, scores[other][row] if other else None, tokenizers[producer], k))
    return strips


def _strip(name: str, producer: str, text: str, own: TargetScore, other: str | None, theirs: TargetScore | None, tokenizer, k: int) -> OutputTokens:
    if theirs is not None and theirs.token_ids != own.token_ids:
        theirs = None  # tokenised otherwise under the other prompt: no token-by-token comparison
    tokens = []
    for position, (token, nll) in enumerate(zip(own.tokens, own.token_nll)):
        top = own.log_probs[position].topk(k)
        alternatives = tuple((tokenizer.decode([i]), math.exp(float(v))) for v, i in zip(top.values, top.indices.tolist()))
        tokens.append(TokenInfo(token, nll, theirs.token_nll[position] if theirs else None, alternatives))
    return OutputTokens(name, producer, other if theirs else None, text, tuple(tokens))
