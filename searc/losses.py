"""Token-level log-likelihood of target tokens: the one loss the counterfactual model trains on.

`masked_log_probs` follows SERAC/MEND's `masked_log_probs`: labels hold the target token ids and
-100 everywhere else (prompt, padding). For decoder-only models the logit at position t predicts
the token at t+1, so logits and labels are shifted against each other; seq2seq decoders already
emit one logit per label, so there is no shift.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


@dataclass
class TargetLogProbs:
    """Per-batch statistics of the target tokens' log-likelihood."""

    nll: torch.Tensor  # mean NLL over all target tokens of the batch (differentiable)
    token_accuracy: torch.Tensor  # fraction of target tokens that are the argmax
    exact_match: torch.Tensor  # fraction of sequences whose target tokens are all argmax
    n_tokens: int  # number of target tokens in the batch
    token_nll: torch.Tensor  # [batch, label_len] NLL per label position, 0 where masked
    mask: torch.Tensor  # [batch, label_len] True where token_nll is a target token

    def sequence_nll(self) -> torch.Tensor:
        """Summed NLL of each sequence's target, shape [batch]."""
        return self.token_nll.sum(-1)


def masked_log_probs(logits: torch.Tensor, labels: torch.Tensor, shift: bool) -> TargetLogProbs:
    """NLL, accuracy and exact match of `labels` (!= -100) under `logits`.

    logits: [batch, seq, vocab]; labels: [batch, seq] aligned with the *inputs* (decoder-only,
    shift=True) or with the decoder outputs (seq2seq, shift=False).
    """
    if logits.dim() != 3 or labels.dim() != 2 or logits.shape[:2] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} do not align")
    if shift:
        logits, labels = logits[:, :-1], labels[:, 1:]
    mask = labels != IGNORE_INDEX
    safe_labels = labels.masked_fill(~mask, 0)
    log_probs = F.log_softmax(logits.float(), dim=-1)
    token_log_probs = log_probs.gather(-1, safe_labels.unsqueeze(-1)).squeeze(-1)
    token_nll = (-token_log_probs).masked_fill(~mask, 0.0)
    n_tokens = int(mask.sum())
    correct = (logits.argmax(-1) == labels) & mask
    has_target = mask.any(-1)
    seq_correct = (correct | ~mask).all(-1) & has_target
    denom = max(n_tokens, 1)
    return TargetLogProbs(
        nll=token_nll.sum() / denom,
        token_accuracy=correct.sum().float() / denom,
        exact_match=seq_correct.sum().float() / max(int(has_target.sum()), 1),
        n_tokens=n_tokens,
        token_nll=token_nll,
        mask=mask,
    )


def balanced_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean BCE over positives and over negatives, averaged: neither class dominates."""
    losses = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    positive, negative = labels > 0.5, labels <= 0.5
    return 0.5 * (losses[positive].mean() + losses[negative].mean())
