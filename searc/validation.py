"""Choosing checkpoints, the routing threshold and the decline threshold on validation cases.

`validate` reports what the training loop keeps the best checkpoint by: the classifier's AUROC and
accuracy on (edit, probe) pairs, the counterfactual model's teacher-forced answers (edit prompt,
other wordings, declines with a wrong edit in context), and `tune_thresholds`' batch recall and
locality with every validation edit in memory at once. The validation cases should be augmented
as training cases are (`searc.augment`), so that other facts of an edited subject are among the
out-of-scope probes, and should include relations held out of training.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields
from typing import Sequence

import torch

from searc.batches import classifier_pairs, decline_examples, scope_layout, scope_matrix
from searc.classifier import name_checked
from searc.counterfactual import counterfactual_input
from searc.data import EditCase
from searc.editor import DEFAULT_DECLINE_THRESHOLD, Editor, SeracSystem, declines, end_probabilities
from searc.evaluate import batch_memory, claimants, claims
from searc.relations import asks_another_fact, case_relation_of


def auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Probability that a random positive outscores a random negative (ties count half)."""
    pos, neg = scores[labels > 0.5], scores[labels <= 0.5]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).float().mean()
    ties = (pos[:, None] == neg[None, :]).float().mean()
    return float(greater + 0.5 * ties)


THRESHOLD_GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))
# Fine near 1: a counterfactual model trained to end at once on out-of-scope edits puts most of
# its end probabilities there, so an eager decline is brought within the cap only up here.
DECLINE_GRID = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)
# Logit lowered per share of an edit's subject missing from a probe (`classifier.name_checked`): 0
# is the classifier alone; at 8 a probe that names one of a subject's two words loses 4.
NAME_WEIGHT_GRID = (0.0, 2.0, 4.0, 8.0, 16.0)


# `searc tune`'s cap, the scope issue's bar: in-scope probes routed to their own edit yet declined,
# over all validation cases and over those of the relations held out of training (the bar is for
# data outside the training distribution). Training's validation leaves it off: there the pair
# only scores a step, and the shipped recipe's steps were kept without it.
MAX_DECLINED_OWN_ROUTES = 0.02


@dataclass(frozen=True)
class ThresholdPair:
    """What one (routing, decline) threshold pair scores on the validation memory, at one name weight."""

    threshold: float
    decline_threshold: float
    batch_recall: float
    batch_locality: float
    declined_own_routes: float
    declined_own_routes_held_out: float  # on the held-out relations' cases alone; nan without any
    name_weight: float = 0.0  # the classifier's name check (`searc.names`) the scores were read with

    @property
    def score(self) -> float:
        return (self.batch_recall + self.batch_locality) / 2

    def declines_at_most(self, cap: float) -> bool:
        """Within the cap over all cases and over the held-out relations' (nan: nothing routed, within)."""
        return not self.declined_own_routes > cap and not self.declined_own_routes_held_out > cap


@dataclass(frozen=True)
class Tuning:
    """The chosen pair's figures (`metrics()`, what a checkpoint records) and every pair of the grid."""

    threshold: float
    decline_threshold: float
    name_weight: float
    batch_recall: float
    batch_locality: float
    batch_recall_held_out: float  # nan without cases of held-out relations
    declined_own_routes: float
    declined_own_routes_held_out: float  # nan without cases of held-out relations
    declined_false_routes: float
    claimed_prompts: int
    edits_in_memory: int
    within_cap: bool  # False: no pair of the grid kept to the decline cap, so the best of all was chosen
    grid: tuple[ThresholdPair, ...]

    def metrics(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("grid", "within_cap")}


@torch.no_grad()
def tune_thresholds(
    system: SeracSystem,
    cases: Sequence[EditCase],
    held_out: Sequence[str] = (),
    stored: Sequence[EditCase] = (),
    max_declined_own_routes: float = 1.0,
) -> Tuning:
    """The routing threshold, the decline threshold and the classifier's name weight that best
    separate in-scope from out-of-scope probes with *all* the cases' edits in memory at once (as in
    batch evaluation): the mean of batch recall (answered from the probe's own edit, not declined)
    and batch locality (out-of-scope probes left to the base model: not routed, or routed and
    declined) is maximised over the three grids together, among the settings that decline at most
    `max_declined_own_routes` of the in-scope probes routed to their own edit, over all cases and
    over the `held_out` relations' cases alone (all settings if none does). They trade against
    each other: a lower routing threshold reaches loose paraphrases and leans on the decline to
    turn away other facts of the subject; a higher decline threshold declines fewer in-scope probes
    and more false routes get answered; the name weight turns away edits of a subject named almost
    alike (`searc.names`) and costs probes that name the subject otherwise. Ties go to
    the smaller name weight, then to the thresholds nearest the untuned defaults. As in
    evaluation, an out-of-scope prompt that a stored edit claims (`evaluate.claims`; its own case's
    edit included) asks that edit's own fact and is left out of locality, and a rewording that asks
    another fact of the subject (`relations.asks_another_fact`) is left out of recall (and of
    locality). `batch_recall_held_out` is the batch recall on the cases of the `held_out` relations
    alone (relations training never saw). `stored`: more cases whose edits the memory holds beside
    the probed cases' own, as `evaluate`'s (memory at scale: more edits to be confused with); as
    there, the memory keeps one edit per fact and a probed re-edit is set aside."""
    cases, stored, _ = batch_memory(cases, stored)
    editor = Editor(system)
    edits = editor.add_edits([case.edit for case in (*cases, *stored)])
    probes, labels = scope_matrix(cases)  # [n_cases, n_probes]: the probed cases' edits come first in memory
    logits = system.classifier.memory_logits(probes, editor.memory)  # [n_probes, n_edits]
    match = editor.memory.names().match(probes)
    owner = labels.argmax(0)
    layout = scope_layout(cases)
    other_fact = torch.tensor([own and asks_another_fact(cases[index], probe) for index, probe, own in layout], dtype=torch.bool)
    in_scope = labels.any(0) & ~other_fact
    others = claimants(cases, edits)
    claimed = torch.tensor([not own and any(claims(e, probe) for e in others[index]) for index, probe, own in layout])
    local = ~labels.any(0) & ~claimed
    held_case = torch.tensor([getattr(case_relation_of(case), "id", None) in held_out for case in cases], dtype=torch.bool)
    held_column = held_case[owner] & in_scope  # in-scope columns of the held-out relations' cases (owner: each column's case)
    end_at: dict[tuple[int, int], float] = {}  # (probe, edit): the counterfactual model's end probability, read once

    def routes(name_weight: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per probe at this name weight: its best score, its best edit, and the end probability with that edit."""
        best_scores, best_edit = torch.sigmoid(name_checked(logits, match, name_weight)).max(dim=1)
        new = [(i, e) for i, e in enumerate(best_edit.tolist()) if (i, e) not in end_at]
        end_at.update(zip(new, end_probabilities(system, [probes[i] for i, _ in new], [edits[e] for _, e in new])))
        return best_scores, best_edit, torch.tensor([end_at[(i, e)] for i, e in enumerate(best_edit.tolist())])

    routed_by = {w: routes(w) for w in NAME_WEIGHT_GRID}

    def outcome(threshold: float, decline_threshold: float, name_weight: float) -> tuple[torch.Tensor, ...]:
        """Per probe at this setting: (routed, declined, answered by the counterfactual model, in scope and its own edit the best)."""
        best_scores, best_edit, ends = routed_by[name_weight]
        routed, declined = best_scores >= threshold, declines(ends, decline_threshold)
        return routed, declined, routed & ~declined, in_scope & (best_edit == owner)

    def setting(threshold: float, decline_threshold: float, name_weight: float) -> ThresholdPair:
        routed, declined, answered, own_route = outcome(threshold, decline_threshold, name_weight)
        return ThresholdPair(
            threshold, decline_threshold, _mean((answered & own_route)[in_scope]), _mean(~answered[local]) if local.any() else 1.0,
            _mean(declined[routed & own_route]), _mean(declined[routed & own_route & held_column]), name_weight,
        )

    def preference(p: ThresholdPair) -> tuple[float, ...]:  # ties: the smaller name weight, the thresholds nearest the untuned defaults, then higher
        closeness = -abs(p.threshold - 0.5) - abs(p.decline_threshold - DEFAULT_DECLINE_THRESHOLD)
        return (p.score, -p.name_weight, closeness, p.threshold, p.decline_threshold)

    grid = tuple(setting(t, d, w) for w in NAME_WEIGHT_GRID for t in THRESHOLD_GRID for d in DECLINE_GRID)
    allowed = [p for p in grid if p.declines_at_most(max_declined_own_routes)]
    best = max(allowed or grid, key=preference)
    routed, declined, answered, own_route = outcome(best.threshold, best.decline_threshold, best.name_weight)
    return Tuning(
        best.threshold, best.decline_threshold, best.name_weight, best.batch_recall, best.batch_locality,
        batch_recall_held_out=_mean((answered & own_route)[held_column]),
        declined_own_routes=best.declined_own_routes, declined_own_routes_held_out=best.declined_own_routes_held_out,
        declined_false_routes=_mean(declined[routed & local]),
        claimed_prompts=int(claimed.sum()), edits_in_memory=len(edits), within_cap=bool(allowed), grid=grid,
    )


def _mean(flags: torch.Tensor) -> float:
    return float(flags.float().mean()) if len(flags) else float("nan")


@torch.no_grad()
def validate(system: SeracSystem, cases: Sequence[EditCase], threshold: float, held_out: Sequence[str] = ()) -> dict[str, float]:
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
    rewordings = [(c, p) for c in cases for p in c.rephrases if not asks_another_fact(c, p)]  # of the edited fact itself
    examples = {  # (inputs, targets, append_eos)
        "edit_success": ([counterfactual_input(c.edit, c.in_scope[0].prompt) for c in cases], [c.in_scope[0].answer for c in cases], False),
        "generalization": ([counterfactual_input(c.edit, p.prompt) for c, p in rewordings], [p.answer for _, p in rewordings], False),
        "counterfactual_declines": (decline_inputs, [""] * len(decline_inputs), True),  # wrong edit in context
    }
    cf = system.counterfactual
    for name, (inputs, targets, append_eos) in examples.items():
        hits = 0.0
        for i in range(0, len(inputs), 32):
            with cf.active():
                batch = cf.make_batch(inputs[i : i + 32], targets[i : i + 32], append_eos=append_eos, packed=True)
                hits += float(cf.target_log_probs(batch).exact_match) * len(inputs[i : i + 32])
        metrics[name] = hits / len(inputs) if inputs else 1.0
    metrics.update(tune_thresholds(system, cases, held_out).metrics())
    batch_accuracy = 0.5 * (metrics["batch_recall"] + metrics["batch_locality"])
    answers = (metrics["edit_success"] + metrics["generalization"] + metrics["counterfactual_declines"]) / 3
    metrics["score"] = (batch_accuracy + answers) / 2
    return metrics


