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

from searc.counterfactual import counterfactual_input
from searc.editor import ProbeResult, SeracSystem
from searc.lm import LanguageModel, TargetScore
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


def decline_probability(system: SeracSystem, prompt: str, edit: Edit) -> float:
    """The counterfactual model's probability that its answer, `edit` in context, ends at once."""
    cf = system.counterfactual
    return math.exp(float(cf.next_token_log_probs(counterfactual_input(edit, prompt), [])[cf.tokenizer.eos_token_id]))


def scope_view(system: SeracSystem, result: ProbeResult, edits: Sequence[Edit], k: int = NEAREST_EDITS) -> ScopeView:
    by_id = {e.id: e for e in edits}
    ranked = sorted(((by_id[i], s) for i, s in result.scores.items() if i in by_id), key=lambda pair: -pair[1])[:k]
    nearest = tuple(NearEdit(edit, score, score >= result.threshold) for edit, score in ranked)
    declining = decline_probability(system, result.prompt, result.best_edit) if result.best_edit is not None else None
    return ScopeView(result.prompt, result.threshold, nearest, declining, result.explanation())


def claimed_by(edit_id: str, results: Sequence[ProbeResult]) -> list[ProbeResult]:
    """The probes that `edit_id` answers: routed to it and not declined."""
    return [r for r in results if r.routed and not r.declined and r.best_edit is not None and r.best_edit.id == edit_id]


def output_tokens(system: SeracSystem, result: ProbeResult, k: int = TOP_ALTERNATIVES) -> list[OutputTokens]:
    """Token strips of the base output and, when the counterfactual model answered, of the final output."""
    edit = result.best_edit
    context = counterfactual_input(edit, result.prompt) if edit is not None else None
    strips = [_strip("base output", "base model", system.base, result.prompt, result.base_output,
                     ("counterfactual model", system.counterfactual, context) if context else None, k)]
    if result.routed and not result.declined:
        strips.append(_strip("final output", "counterfactual model", system.counterfactual, context, result.output,
                             ("base model", system.base, result.prompt), k))
    return [s for s in strips if s is not None]


def _strip(name: str, producer: str, lm: LanguageModel, prompt: str, text: str, other, k: int) -> OutputTokens | None:
    if not text.strip():
        return None
    own = _scores(lm, prompt, text)
    theirs = _scores(other[1], other[2], text) if other else None
    if theirs is not None and theirs.token_ids != own.token_ids:
        theirs = None  # tokenised otherwise under the other prompt: no token-by-token comparison
    tokens = []
    for position, (token, nll) in enumerate(zip(own.tokens, own.token_nll)):
        top = own.log_probs[position].topk(k)
        alternatives = tuple((lm.tokenizer.decode([i]), math.exp(float(v))) for v, i in zip(top.values, top.indices.tolist()))
        tokens.append(TokenInfo(token, nll, theirs.token_nll[position] if theirs else None, alternatives))
    return OutputTokens(name, producer, other[0] if theirs else None, text, tuple(tokens))


def _scores(lm: LanguageModel, prompt: str, text: str) -> TargetScore:
    return lm.score_targets([prompt], [text])[0]
