"""What one training micro-batch is made of: edit cases and the examples each loss reads.

A batch is a list of `EditCase`s (half of them the nearest neighbours of a seed case, all of them
augmented with other wordings and other facts of their subject, see `searc.augment`). From it:
- counterfactual examples: in-scope probes with their own edit in context, target = new target
  then end-of-sequence (`counterfactual_examples`);
- scope matrix: every probe of the batch against every edit of the batch, labelled in scope only
  for the probe's own edit's in-scope probes (`scope_matrix`): the classifier's BCE;
- decline examples: each out-of-scope probe with the batch's edit the classifier most confuses it
  with in context, target = end-of-sequence alone (`decline_examples`).
Scope-only cases (`EditCase.scope_only`, see `searc.augment.Augmenter.scope_case`) join the scope
matrix alone: they have no answer to learn, and no decline takes their edit as context.
The losses themselves (`masked_log_probs`, `balanced_bce`) are in `searc.losses`; the loop that
back-propagates them is `searc.train`.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Sequence

import torch

from searc.augment import Augmenter
from searc.consequences import CONSEQUENCE
from searc.counterfactual import counterfactual_input
from searc.data import EditCase, Probe, calibration_pairs
from searc.editor import SeracSystem
from searc.memory import Edit


def edit_for_training(case: EditCase, rng: random.Random, drop_subject: float) -> Edit:
    """The case's edit, sometimes without its subject (users type edits without one)."""
    return replace(case.edit, subject=None) if rng.random() < drop_subject else case.edit


def counterfactual_examples(
    cases: Sequence[EditCase], rng: random.Random, drop_subject: float, per_case: int = 0
) -> tuple[list[str], list[str]]:
    """(inputs, targets): in-scope probes with their case's edit in context; the edit prompt and
    its consequence probes always (`searc.consequences`: the one kind of in-scope answer that is
    not the target, drawn one time in six among the wordings otherwise), and of the other wordings
    `per_case - 1` at random (all when `per_case` is 0). Scope-only cases have no answer and give none."""
    inputs, targets = [], []
    for case in cases:
        if case.scope_only:
            continue
        edit = edit_for_training(case, rng, drop_subject)
        probes = list(case.in_scope)
        if per_case and len(probes) > per_case:
            always = [probes[0], *(p for p in probes[1:] if p.group == CONSEQUENCE)]
            wordings = [p for p in probes[1:] if p.group != CONSEQUENCE]
            probes = always + rng.sample(wordings, min(per_case - 1, len(wordings)))
        for probe in probes:
            inputs.append(counterfactual_input(edit, probe.prompt))
            targets.append(probe.answer)
    return inputs, targets


def scope_layout(cases: Sequence[EditCase]) -> list[tuple[int, Probe, bool]]:
    """The scope matrix's columns in order: (case index, probe, whether it is in scope of that
    case's edit); each case's in-scope probes, then its out-of-scope ones."""
    return [
        (index, probe, in_scope)
        for index, case in enumerate(cases)
        for in_scope, probes in ((True, case.in_scope), (False, case.out_of_scope))
        for probe in probes
    ]


def scope_matrix(cases: Sequence[EditCase]) -> tuple[list[str], torch.Tensor]:
    """Every probe of the batch and the [n_cases, n_probes] in-scope labels of each case's edit."""
    layout = scope_layout(cases)
    owners = torch.tensor([index if in_scope else -1 for index, _, in_scope in layout], dtype=torch.long)
    labels = owners[None, :] == torch.arange(len(cases))[:, None]
    return [probe.prompt for _, probe, _ in layout], labels.float()


def classifier_pairs(cases: Sequence[EditCase]) -> list[tuple]:
    """In-scope pairs (prompt and rephrases) and out-of-scope pairs (hard and other-edit negatives)."""
    pairs = [(case.edit, case.edit.prompt, True) for case in cases]
    return pairs + calibration_pairs(list(cases))


def decline_examples(
    cases: Sequence[EditCase], probes: Sequence[str], labels: torch.Tensor, scope_logits: torch.Tensor, rng: random.Random, drop_subject: float,
    limit: int = 0,
) -> list[str]:
    """Counterfactual inputs that pair each out-of-scope probe with the batch's edit it is most
    easily mistaken for (highest classifier logit). Their target is the end-of-sequence token alone.

    The classifier will sometimes route an out-of-scope input; the counterfactual model then sees
    an edit that does not apply. Trained to decline at once on these pairs, it hands the probe back
    to the base model (see `editor.answer`), so a false route costs no locality. `probes`, `labels`
    and the columns of `scope_logits` are those of `scope_matrix(cases)`. With a `limit`, that many
    out-of-scope probes at random (a language-model pass each is most of a step's time). The edit
    in context is never a scope-only case's: it has no answer to decline against."""
    columns = torch.nonzero(~labels.bool().any(0)).flatten().tolist()  # in scope of no edit
    if limit and len(columns) > limit:
        columns = sorted(rng.sample(columns, limit))
    if not columns:
        return []
    answerable = torch.tensor([not case.scope_only for case in cases], device=scope_logits.device)
    if not answerable.any():
        return []
    logits = scope_logits.detach()[:, columns].masked_fill(~answerable[:, None], float("-inf"))
    nearest = logits.argmax(0).tolist()
    return [counterfactual_input(edit_for_training(cases[e], rng, drop_subject), probes[c]) for c, e in zip(columns, nearest)]


class BatchSampler:
    """Batches of edit cases where part of each batch are the nearest neighbours of a random seed
    case, each case augmented afresh when drawn (`augmenter`, see `searc.augment`), followed by the
    scope-only cases the augmenter draws for them.

    Neighbours are found once, by the untrained encoder's cosine similarity of the edit prompts:
    "BMW M54, developed by" next to "BMW N54 is produced by". With the classifier's loss over every
    pair of the batch, they become the hard negatives that batch evaluation (many edits in memory)
    punishes."""

    def __init__(
        self, cases: Sequence[EditCase], system: SeracSystem, batch_edits: int, hard_fraction: float, rng: random.Random,
        augmenter: Augmenter | None = None,
    ) -> None:
        self.cases, self.rng, self.augmenter = list(cases), rng, augmenter
        self.size = min(batch_edits, len(self.cases))
        n_hard = int(round(self.size * hard_fraction))
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
        cases = [self.cases[i] for i in chosen]
        if self.augmenter is None:
            return cases
        augmented = [self.augmenter(case, self.rng) for case in cases]
        scope_cases = [self.augmenter.scope_case(case, self.rng) for case in cases]
        return augmented + [case for case in scope_cases if case is not None]
