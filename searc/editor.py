"""The SERAC editor: route each probe to the base model or to the counterfactual model.

For a probe x and stored edits e_1..e_n the scope classifier gives s_i = p(x in scope of e_i).
With the best edit e* = argmax s_i:
- hard routing (default): if s* >= threshold the counterfactual model answers with e* in its
  context, otherwise the base model answers, untouched. A trained counterfactual model can also
  *decline*: it learned to end its output at once when it reads that e* does not apply to x, and
  when its probability of ending at once reaches the system's decline threshold (tuned on
  validation with the routing threshold, `validation.tune_thresholds`) the base model's answer
  stands. This second check is what keeps a false route from costing locality;
- soft routing (SERAC's mixture): p(y | x) = s* p_cf(y | e*, x) + (1 - s*) p_base(y | x),
  decoded greedily token by token.
Either way a counterfactual answer that has begun its edit's target finishes it verbatim
(`lm.FinishTargets`; soft: where the probe is routed), unless the editor decodes freely.
With an empty memory the base model answers, bit for bit.

`SeracSystem` holds what sessions share read-only (models, classifier); an `Editor` is one
session: its own memory, thresholds, routing mode and decoding.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Literal, Sequence

import torch

from searc import scheduler
from searc.classifier import ScopeClassifier
from searc.counterfactual import counterfactual_input
from searc.lm import FinishTargets, Generation, LanguageModel, TargetScore
from searc.memory import Edit, EditMemory, validate_text
from searc.names import unnamed_words

Routing = Literal["hard", "soft"]
MAX_PROBES = 64  # per call: a probe batch is generated in one go
# An untrained system routes at even odds; checkpoints written before the decline threshold was
# tuned read as "decline when ending at once is at least as likely as not"
DEFAULT_THRESHOLD = 0.5
DEFAULT_DECLINE_THRESHOLD = 0.5


@dataclass(frozen=True)
class SystemInfo:
    """Where a system's parts came from: the model specs it was loaded from and its checkpoint."""

    lm: str = "custom"  # a spec ('bundled', hub id, directory, .gguf), "custom" for models built in code
    encoder: str = "custom"
    counterfactual_lm: str | None = None  # a separate counterfactual model's spec; None: the base model with an adapter
    lora: dict = field(default_factory=dict)  # the adapter's settings (LoraSettings.to_dict())
    checkpoint: str | None = None  # the checkpoint applied, if any
    classifier_init: str = "untrained"  # "checkpoint": training from this system continues the checkpoint's classifier
    metrics: dict = field(default_factory=dict)  # the checkpoint's validation metrics
    training: dict = field(default_factory=dict)  # the checkpoint's training record


class KeptAnswers:
    """Greedy generations kept by everything they depend on: the model view, its input, the token
    budget, answering or not and the target to finish. A system's models do not change while it
    serves (training and checkpoints work on systems of their own, and loading or training an
    adapter clears what was kept), so an input's answer is generated once: a workbench re-probe
    after an edit generates only the probes whose best edit changed, and probing the same probes
    again generates nothing. The most recent `size` answers are kept."""

    def __init__(self, size: int = 8192) -> None:
        self.size = size
        self._kept: OrderedDict[tuple, Generation] = OrderedDict()
        self._lock = threading.Lock()

    def generate(
        self, lm: LanguageModel, inputs: Sequence[str], max_new_tokens: int | None = None, answer: bool = False,
        finish: Sequence[str | None] | None = None,
    ) -> list[Generation]:
        """`lm.generate`'s generations, those not kept before generated in one call."""
        budget = max_new_tokens or lm.max_new_tokens
        finish = list(finish) if finish is not None else [None] * len(inputs)
        keys = [(id(lm.model), lm.adapter_enabled, text, budget, answer, target) for text, target in zip(inputs, finish)]
        with self._lock:
            found = {key: self._kept[key] for key in keys if key in self._kept}
        first = {}  # each input once, in order
        for i, key in enumerate(keys):
            first.setdefault(key, i)
        missing = [i for key, i in first.items() if key not in found]
        if missing:
            generated = lm.generate([inputs[i] for i in missing], budget, answer=answer, finish=[finish[i] for i in missing])
            found.update(zip((keys[i] for i in missing), generated))
        with self._lock:
            for key in dict.fromkeys(keys):
                self._kept[key] = found[key]
                self._kept.move_to_end(key)
            while len(self._kept) > self.size:
                self._kept.popitem(last=False)
        return [found[key] for key in keys]

    def kept_inputs(self) -> list[str]:
        """The inputs kept, oldest first."""
        with self._lock:
            return [key[2] for key in self._kept]

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()


@dataclass
class SeracSystem:
    """The shared, read-only parts: base model, counterfactual model, scope classifier."""

    base: LanguageModel
    counterfactual: LanguageModel
    classifier: ScopeClassifier
    info: SystemInfo = field(default_factory=SystemInfo)
    threshold: float = DEFAULT_THRESHOLD  # routing, tuned with its checkpoint: an editor's default
    decline_threshold: float = DEFAULT_DECLINE_THRESHOLD  # the counterfactual model's, from its checkpoint
    finish_targets: bool = True  # a counterfactual answer that begins its edit's target finishes it verbatim (lm.FinishTargets): an editor's default
    kept_answers: KeptAnswers = field(default_factory=KeptAnswers, repr=False, compare=False)

    def base_outputs(self, prompts: Sequence[str]) -> list[str]:
        """The base model's greedy answers (kept, `KeptAnswers`)."""
        return [g.text for g in self.kept_answers.generate(self.base, prompts)]


@dataclass(frozen=True)
class NameCheck:
    """What the name check did to the edit the classifier itself scored highest for a probe: its
    subject has words the probe does not name, so routing read a lower score."""

    edit: Edit
    classifier_score: float  # the classifier's own
    score: float  # routing's, names checked
    missing: list[str]  # the subject's words, as written, that the probe does not name

    def to_json(self) -> dict:
        return {"edit": self.edit.id, "classifier_score": self.classifier_score, "score": self.score, "missing": self.missing}

    def note(self, threshold: float) -> str | None:
        """In words, where it matters: where the classifier alone would have routed the probe."""
        if self.classifier_score < threshold:
            return None
        words = ", ".join(f"\"{word}\"" for word in self.missing)
        return (f"The classifier alone scored edit {self.edit.id} (\"{self.edit.statement()}\") {self.classifier_score:.3f}, "
                f"but the probe does not name {words} of its subject \"{self.edit.subject}\", so the name check "
                f"lowered that score to {self.score:.3f}.")


@dataclass
class Route:
    """The classifier's verdict for one probe."""

    scores: dict[str, float]  # edit id -> probability (names checked), in memory order
    best_edit: Edit | None
    score: float  # best score, 0 with an empty memory
    routed: bool
    name_check: NameCheck | None = None  # where the check lowered the classifier's own best edit


@dataclass
class ProbeResult:
    """Everything the workbench shows for one probe."""

    prompt: str
    scores: dict[str, float]  # edit id -> classifier probability, in memory order
    best_edit: Edit | None
    score: float  # best score, 0 with an empty memory
    routed: bool
    base_output: str
    counterfactual_output: str | None  # computed for routed probes, for all on request: what it answers if it does not decline
    output: str
    threshold: float
    decline_probability: float | None = None  # the counterfactual model's p(end at once), with counterfactual_output
    decline_threshold: float = DEFAULT_DECLINE_THRESHOLD
    name_check: NameCheck | None = None  # where the name check lowered the classifier's own best edit

    @property
    def counterfactual_declines(self) -> bool:
        """The counterfactual model reads the best edit as not applying to this probe (routed or not)."""
        return declines(self.decline_probability, self.decline_threshold)

    def lacks_answer_at(self, threshold: float) -> bool:
        """`threshold` would route this probe, and its counterfactual answer was not generated yet."""
        return self.best_edit is not None and self.score >= threshold and self.counterfactual_output is None

    @property
    def declined(self) -> bool:
        """Routed, but the counterfactual model read the edit as not applying: the base answer stands."""
        return self.routed and self.counterfactual_declines

    def to_json(self) -> dict:
        return {
            "prompt": self.prompt,
            "scores": self.scores,
            "best_edit": self.best_edit.to_dict() if self.best_edit else None,
            "score": self.score,
            "threshold": self.threshold,
            "routed": self.routed,
            "declined": self.declined,
            "base_output": self.base_output,
            "counterfactual_output": self.counterfactual_output,
            "decline_probability": self.decline_probability,
            "decline_threshold": self.decline_threshold,
            "output": self.output,
            "name_check": self.name_check.to_json() if self.name_check else None,
        }

    def with_thresholds(self, threshold: float, decline_threshold: float) -> "ProbeResult":
        """Re-route under other thresholds without running any model (hard routing only)."""
        check_threshold(threshold)
        moved = replace(self, threshold=threshold, decline_threshold=check_threshold(decline_threshold))
        moved.routed = self.best_edit is not None and self.score >= threshold
        if moved.routed and self.counterfactual_output is None:
            raise ValueError("this probe has no counterfactual output; probe again with counterfactual_for_all=True")
        moved.output = self.counterfactual_output if moved.routed and not moved.counterfactual_declines else self.base_output
        return moved

    @property
    def name_check_note(self) -> str | None:
        """What the name check changed, in words, where the classifier alone would have routed the probe."""
        return self.name_check.note(self.threshold) if self.name_check else None

    def explanation(self) -> str:
        """Why this probe was routed or not, in words."""
        note = self.name_check_note
        return f"{self._routing_explanation()} {note}" if note else self._routing_explanation()

    def _routing_explanation(self) -> str:
        if self.best_edit is None:
            return "The memory is empty, so the base model answered."
        nearest = f"The nearest edit is {self.best_edit.id} (\"{self.best_edit.statement()}\") with score {self.score:.3f}"
        if self.declined:
            return (f"{nearest}, at or above the threshold {self.threshold:.2f}, but the counterfactual model read that the edit "
                    f"does not apply and declined (it would end at once with probability {self.decline_probability:.0%}, "
                    f"at or above its decline threshold {self.decline_threshold:.0%}): the base model answered.")
        if self.routed:
            return f"{nearest}, at or above the threshold {self.threshold:.2f}: the counterfactual model answered with that edit in context."
        return f"{nearest}, below the threshold {self.threshold:.2f}: the probe is out of scope and the base model answered."


@dataclass
class TargetComparison:
    """Per-token NLL of one target under the base model and under the edited system."""

    prompt: str
    target: str
    tokens: list[str]
    base_nll: list[float]
    edited_nll: list[float]
    counterfactual_nll: list[float] | None  # with the best edit in context, whether routed or not
    token_ids: list[int]
    base_predicted: list[int]  # argmax token at each target position (teacher forcing)
    edited_predicted: list[int]  # the same for the edited system (soft: argmax of the mixture)
    routed: bool
    score: float
    best_edit: Edit | None


def check_threshold(threshold: float) -> float:
    if not isinstance(threshold, (int, float)) or math.isnan(threshold) or not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}")
    return float(threshold)


def threshold_or(threshold: float | None, default: float) -> float:
    """`threshold`, checked, or `default` where none is given (a session's or a system's own)."""
    return check_threshold(default if threshold is None else threshold)


class Editor:
    """One editing session over a shared `SeracSystem`."""

    def __init__(
        self,
        system: SeracSystem,
        memory: EditMemory | None = None,
        threshold: float | None = None,
        routing: Routing = "hard",
        decline_threshold: float | None = None,
        finish_targets: bool | None = None,
    ) -> None:
        """`threshold` (routing), `decline_threshold` and `finish_targets`: this session's; default
        the system's (its checkpoint's tuned pair; finishing on). A session may change them; the
        shared system keeps its own."""
        if routing not in ("hard", "soft"):
            raise ValueError(f"routing must be 'hard' or 'soft', got {routing!r}")
        self.system = system
        self.memory = memory if memory is not None else EditMemory()
        self.threshold = threshold_or(threshold, system.threshold)
        self.decline_threshold = threshold_or(decline_threshold, system.decline_threshold)
        self.routing = routing
        self.finish_targets = system.finish_targets if finish_targets is None else finish_targets

    # ------------------------------------------------------------------ memory
    def add_edit(self, prompt: str, target_new: str, subject: str | None = None, target_true: str | None = None) -> Edit:
        return self.add_edits([Edit(prompt, target_new, subject or None, target_true or None)])[0]

    def add_edits(self, edits: Sequence[Edit]) -> list[Edit]:
        """Store edits all together or not at all; each edit's key is computed here, once."""
        return self.memory.add(list(edits), self.system.classifier)

    def remove_edit(self, edit_id: str) -> Edit:
        return self.memory.remove(edit_id)

    def clear(self) -> None:
        self.memory.clear()

    @property
    def edits(self) -> list[Edit]:
        return list(self.memory.edits)

    # ------------------------------------------------------------------ routing
    def route(self, prompts: Sequence[str]) -> list[Route]:
        """Classifier scores against every edit, the best edit, the routing decision, and what the
        name check did to the edit the classifier itself scored highest."""
        scored = self.system.classifier.scope_scores(list(prompts), self.memory)
        if not len(self.memory):
            return [Route(scores={}, best_edit=None, score=0.0, routed=False) for _ in prompts]
        edits = self.memory.edits
        best_scores, best_index = scored.routing.max(dim=1)
        own_best = scored.classifier.argmax(dim=1).tolist()
        routes = []
        for row, (prompt, own) in enumerate(zip(prompts, own_best)):
            own_score, checked = float(scored.classifier[row, own]), float(scored.routing[row, own])
            lowered = checked < own_score
            routes.append(Route(
                scores={e.id: float(v) for e, v in zip(edits, scored.routing[row].tolist())},
                best_edit=edits[int(best_index[row])],
                score=float(best_scores[row]),
                routed=float(best_scores[row]) >= self.threshold,
                name_check=NameCheck(edits[own], own_score, checked, unnamed_words(edits[own].subject, prompt)) if lowered else None,
            ))
        return routes

    def probe(self, prompts: Sequence[str], counterfactual_for_all: bool = False) -> list[ProbeResult]:
        """Score, route and answer each prompt; see the module docstring. Routing and the base
        model's answers do not depend on each other: they go to the scheduler together."""
        prompts = [validate_text("probe", p) for p in prompts]
        if len(prompts) > MAX_PROBES:
            raise ValueError(f"{len(prompts)} probes at once; the limit is {MAX_PROBES}")
        routes, base_outputs = scheduler.together(lambda: self.route(prompts), lambda: self.system.base_outputs(prompts))
        return answer(
            self.system, prompts, routes, self.threshold, self.decline_threshold, self.routing,
            counterfactual_for_all, finish_targets=self.finish_targets, base_outputs=base_outputs,
        )

    def answer_routable(self, results: Sequence[ProbeResult], threshold: float) -> list[ProbeResult]:
        """The results with the counterfactual answer of their best edit wherever `threshold`
        would route them and it was not generated yet (a workspace generates answers for routed
        probes only; a slider that routes more asks for theirs here)."""
        missing = [i for i, r in enumerate(results) if r.lacks_answer_at(threshold)]
        generated = counterfactual_answers(self.system, [results[i].prompt for i in missing], [results[i].best_edit for i in missing],
                                           self.finish_targets)
        answered = list(results)
        for i, generation in zip(missing, generated):
            answered[i] = replace(results[i], counterfactual_output=generation.text, decline_probability=generation.end_probability)
        return answered

    def score_target(self, prompt: str, target: str) -> TargetComparison:
        """Per-token NLL of `target` after `prompt`, base model vs edited system."""
        prompt = validate_text("prompt", prompt)
        target = validate_text("target", target)
        return compare_targets(self.system, [prompt], [target], self.route([prompt]), self.decline_threshold, self.routing)[0]


def compare_targets(
    system: SeracSystem, prompts: Sequence[str], targets: Sequence[str], routes: Sequence[Route], decline_threshold: float,
    routing: Routing = "hard",
) -> list[TargetComparison]:
    """Teacher-forced scoring of each target under the base model and under the edited system,
    batched: one base pass for all prompts, one counterfactual pass for those with a best edit.
    The routes may come from different editors, as in `answer`."""
    with_edit = [i for i, r in enumerate(routes) if r.best_edit is not None]
    contexts = [counterfactual_input(routes[i].best_edit, prompts[i]) for i in with_edit]
    base_scores, edited_scores = scheduler.together(  # the two models' passes queue together
        lambda: system.base.score_targets(list(prompts), list(targets)),
        lambda: system.counterfactual.score_targets(contexts, [targets[i] for i in with_edit]) if with_edit else [],
    )
    counterfactual_scores = dict(zip(with_edit, edited_scores))
    comparisons = []
    for i, (prompt, target, route, base) in enumerate(zip(prompts, targets, routes, base_scores)):
        counterfactual = counterfactual_scores.get(i)
        edited, edited_predicted = base.token_nll, base.predicted_ids
        if counterfactual is not None and routing == "soft":
            if counterfactual.token_ids != base.token_ids:
                raise ValueError("soft routing needs the target tokenised the same way by both models")
            mixture = torch.logaddexp(
                _safe_log(route.score) + counterfactual.log_probs, _safe_log(1.0 - route.score) + base.log_probs
            )
            target_ids = torch.tensor(base.token_ids).unsqueeze(-1)
            edited = (-mixture.gather(-1, target_ids).squeeze(-1)).tolist()
            edited_predicted = mixture.argmax(-1).tolist()
        elif route.routed and not declines(teacher_forced_end_probability(system.counterfactual, counterfactual), decline_threshold):
            edited, edited_predicted = counterfactual.token_nll, counterfactual.predicted_ids
        comparisons.append(
            TargetComparison(
                prompt=prompt,
                target=target,
                tokens=base.tokens,
                base_nll=base.token_nll,
                edited_nll=edited,
                counterfactual_nll=counterfactual.token_nll if counterfactual else None,
                token_ids=base.token_ids,
                base_predicted=base.predicted_ids,
                edited_predicted=edited_predicted,
                routed=route.routed,
                score=route.score,
                best_edit=route.best_edit,
            )
        )
    return comparisons


def declines(end_probability: float | torch.Tensor | None, decline_threshold: float) -> bool | torch.Tensor:
    """Whether the counterfactual model, this likely to end at once, declines the edit it was given
    (elementwise for a tensor of end probabilities, as tuning reads them)."""
    return end_probability is not None and end_probability >= decline_threshold


def teacher_forced_end_probability(counterfactual: LanguageModel, score: TargetScore) -> float | None:
    """Teacher-forced view of declining: p(end at once) at the target's first position."""
    if not score.token_ids:
        return None
    return math.exp(float(score.log_probs[0, counterfactual.tokenizer.eos_token_id]))


def end_probabilities(system: SeracSystem, prompts: Sequence[str], edits: Sequence[Edit], chunk: int = 32) -> list[float]:
    """The counterfactual model's probability of ending at once (declining), each edit in context of its prompt."""
    inputs = [counterfactual_input(edit, prompt) for prompt, edit in zip(prompts, edits)]
    return [
        generation.end_probability
        for start in range(0, len(inputs), chunk)
        for generation in system.counterfactual.generate(inputs[start : start + chunk], max_new_tokens=1)
    ]


def answer(
    system: SeracSystem,
    prompts: Sequence[str],
    routes: Sequence[Route],
    threshold: float,
    decline_threshold: float,
    routing: Routing = "hard",
    counterfactual_for_all: bool = False,
    *,
    finish_targets: bool,
    base_outputs: Sequence[str] | None = None,
) -> list[ProbeResult]:
    """Generate the answers for routed prompts, batched: base outputs for all, counterfactual
    outputs where routed (or for all with a stored edit, on request, so the threshold can be moved later).
    `finish_targets` (the editor's, no default here): a counterfactual answer that begins its edit's
    target finishes it (`lm.FinishTargets`).

    The routes may come from different editors (evaluation batches many one-edit sessions);
    `base_outputs`, the base model's answers where the caller has them already."""
    if not prompts:
        return []
    base_outputs = system.base_outputs(prompts) if base_outputs is None else base_outputs
    wanted = [
        i for i, r in enumerate(routes) if r.best_edit is not None and (r.routed or counterfactual_for_all or routing == "soft")
    ]
    generated = counterfactual_answers(system, [prompts[i] for i in wanted], [routes[i].best_edit for i in wanted], finish_targets)
    counterfactual: dict[int, Generation] = dict(zip(wanted, generated))
    results = []
    for i, (prompt, route, base_output) in enumerate(zip(prompts, routes, base_outputs)):
        generation = counterfactual.get(i)
        result = ProbeResult(
            prompt=prompt,
            scores=route.scores,
            best_edit=route.best_edit,
            score=route.score,
            routed=route.routed,
            base_output=base_output,
            counterfactual_output=generation.text if generation else None,
            output=base_output,
            threshold=threshold,
            decline_probability=generation.end_probability if generation else None,
            decline_threshold=decline_threshold,
            name_check=route.name_check,
        )
        if routing == "soft" and route.best_edit is not None:
            result.output = soft_generate(system, prompt, route.best_edit, route.score, finish=finish_targets and route.routed)
        elif route.routed and not result.declined:
            result.output = result.counterfactual_output
        results.append(result)
    return results


def counterfactual_answers(system: SeracSystem, prompts: Sequence[str], edits: Sequence[Edit], finish_targets: bool) -> list[Generation]:
    """The counterfactual model's answer to each prompt with its edit in context (kept,
    `KeptAnswers`), with a budget that finishes the longest target instead of cutting it; with
    `finish_targets`, a begun target is finished verbatim (`lm.FinishTargets`)."""
    if not prompts:
        return []
    cf = system.counterfactual
    targets = [edit.target_new for edit in edits]
    inputs = [counterfactual_input(edit, prompt) for prompt, edit in zip(prompts, edits)]
    return system.kept_answers.generate(cf, inputs, cf.budget_for(targets), answer=True, finish=targets if finish_targets else None)


def soft_generate(system: SeracSystem, prompt: str, edit: Edit, weight: float, finish: bool = False) -> str:
    """Greedy decoding of the mixture weight * p_cf(. | edit, prompt) + (1 - weight) * p_base(. | prompt),
    with a budget to finish the edit's target and, with `finish`, the target finished once begun
    (as hard routing's counterfactual answers are: `lm.FinishTargets`)."""
    base, counterfactual = system.base, system.counterfactual
    if len(base.tokenizer) != len(counterfactual.tokenizer):
        raise ValueError("soft routing needs the base and counterfactual models to share a vocabulary")
    context = counterfactual_input(edit, prompt)
    finisher = FinishTargets([counterfactual.target_ids(context, edit.target_new)], 0, counterfactual.tokenizer) if finish else None
    log_w, log_1mw = _safe_log(weight), _safe_log(1.0 - weight)
    ids: list[int] = []
    for _ in range(counterfactual.budget_for([edit.target_new])):
        mixed = torch.logaddexp(
            log_w + counterfactual.next_token_log_probs(context, ids), log_1mw + base.next_token_log_probs(prompt, ids)
        )
        if finisher is not None:
            mixed = finisher(torch.tensor([ids], dtype=torch.long), mixed.unsqueeze(0))[0]
        token = int(mixed.argmax())
        ids.append(token)
        if token == base.tokenizer.eos_token_id:
            break
    return base.tokenizer.decode(ids, skip_special_tokens=True)


def _safe_log(p: float) -> float:
    return math.log(p) if p > 0 else -math.inf
