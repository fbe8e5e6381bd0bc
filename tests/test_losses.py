"""masked_log_probs against a slow reference computed token by token, on every architecture."""

from __future__ import annotations

import pytest
import torch

from searc.lm import LanguageModel
from searc.losses import IGNORE_INDEX, masked_log_probs
from tests.conftest import make_lm, make_lm_tokenizer

PROMPTS = ["The mother tongue of Danielle Darrieux is", "The capital of Japan is", "Toko Yasuda plays the"]
TARGETS = ["English", "Tokyo", "piano and the guitar"]


@torch.no_grad()
def slow_reference_nll(lm: LanguageModel, prompt: str, target: str) -> list[float]:
    """One unpadded forward pass per target token; no shifting tricks, no batching."""
    model = lm.model
    if lm.is_seq2seq:
        source = torch.tensor([lm.encode(prompt)])
        target_ids = lm.tokenizer(target, add_special_tokens=False)["input_ids"]
        start = model.config.decoder_start_token_id
        nll = []
        for t, token in enumerate(target_ids):
            decoder = torch.tensor([[start, *target_ids[:t]]])
            logits = model(input_ids=source, decoder_input_ids=decoder).logits[0, -1]
            nll.append(-float(torch.log_softmax(logits, -1)[token]))
        return nll
    ids, labels = lm.encode_prompt_target(prompt, target)
    nll = []
    for t in range(1, len(ids)):
        if labels[t] == IGNORE_INDEX:
            continue
        logits = model(input_ids=torch.tensor([ids[:t]])).logits[0, -1]
        nll.append(-float(torch.log_softmax(logits, -1)[ids[t]]))
    return nll


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_batched_nll_matches_token_by_token_reference(arch, padding_side):
    tokenizer = make_lm_tokenizer(padding_side)
    lm = LanguageModel(make_lm(arch, len(tokenizer)), tokenizer)
    batch = lm.make_batch(PROMPTS, TARGETS)
    assert (batch.attention_mask[:, 0 if padding_side == "left" else -1] == 0).any(), "the batch must contain padding"
    with torch.no_grad():
        logits, labels = lm.target_logits(batch)
        stats = masked_log_probs(logits, labels, shift=not lm.is_seq2seq)
    if not lm.is_seq2seq:  # no vocabulary projection for the prompt positions that carry no label
        assert logits.shape[1] < batch.input_ids.shape[1]
    expected = [slow_reference_nll(lm, p, t) for p, t in zip(PROMPTS, TARGETS)]
    for row, reference in enumerate(expected):
        got = stats.token_nll[row][stats.mask[row]].tolist()
        assert got == pytest.approx(reference, abs=1e-4)
    flat = [x for row in expected for x in row]
    assert stats.n_tokens == len(flat)
    assert float(stats.nll) == pytest.approx(sum(flat) / len(flat), abs=1e-4)


def test_targets_are_tokenised_in_context():
    """ " English" after a prompt is not "English" alone; the labels must be the in-context ids."""
    lm = LanguageModel(make_lm("llama", len(make_lm_tokenizer())), make_lm_tokenizer())
    ids, labels = lm.encode_prompt_target("The mother tongue of Danielle Darrieux is", "English")
    target_ids = [label for label in labels if label != IGNORE_INDEX]
    alone = lm.tokenizer("English", add_special_tokens=False)["input_ids"]
    in_context = lm.tokenizer(" English", add_special_tokens=False)["input_ids"]
    assert target_ids == in_context
    assert target_ids != alone
    assert ids[-len(target_ids):] == target_ids


def test_prompt_ending_in_space_is_not_doubled():
    lm = LanguageModel(make_lm("gpt2", len(make_lm_tokenizer())), make_lm_tokenizer())
    with_space, _ = lm.encode_prompt_target("The capital of Japan is ", "Tokyo")
    without, _ = lm.encode_prompt_target("The capital of Japan is", "Tokyo")
    assert with_space == without


def test_shift_semantics_on_handmade_logits():
    vocab = 5
    # decoder-only: logits at t predict labels at t+1
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 3, 4]])
    logits = torch.full((1, 4, vocab), -10.0)
    logits[0, 1, 3] = 10.0  # predicts label at position 2
    logits[0, 2, 2] = 10.0  # wrong for label 4 at position 3
    stats = masked_log_probs(logits, labels, shift=True)
    assert stats.n_tokens == 2
    assert float(stats.token_accuracy) == 0.5
    assert float(stats.exact_match) == 0.0
    logits[0, 2, 4] = 20.0
    stats = masked_log_probs(logits, labels, shift=True)
    assert float(stats.token_accuracy) == 1.0 and float(stats.exact_match) == 1.0
    assert float(stats.nll) < 1e-3
    # seq2seq: no shift, logits at t predict labels at t
    stats = masked_log_probs(logits, torch.tensor([[IGNORE_INDEX, 3, 4, IGNORE_INDEX]]), shift=False)
    assert float(stats.token_accuracy) == 1.0


def test_masked_positions_carry_no_loss_or_gradient():
    logits = torch.randn(2, 6, 7, requires_grad=True)
    labels = torch.tensor([[IGNORE_INDEX] * 4 + [1, 2], [IGNORE_INDEX, IGNORE_INDEX, 3, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]])
    stats = masked_log_probs(logits, labels, shift=True)
    stats.nll.backward()
    # with the shift, only positions 3, 4 (row 0) and 1 (row 1) predict a target
    touched = logits.grad.abs().sum(-1) > 0
    assert touched.tolist() == [[False, False, False, True, True, False], [False, True, False, False, False, False]]
    assert (stats.token_nll[~stats.mask] == 0).all()


def test_misaligned_shapes_are_refused():
    with pytest.raises(ValueError):
        masked_log_probs(torch.zeros(2, 5, 3), torch.zeros(2, 4, dtype=torch.long), shift=True)
