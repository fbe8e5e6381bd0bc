"""masked_log_probs against a slow reference computed token by token, on every architecture."""

from __future__ import annotations

import pytest
import torch

from searc.lm import LanguageModel
from searc.losses import IGNORE_INDEX, TargetLogProbs, masked_log_probs
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


def test_packed_batch_gives_every_example_its_own_nll_and_gradient(arch):
    """A packed batch (examples end to end, position ids restarting) scores each example as the
    token-by-token reference does, per example (exact match too), and back-propagates the same
    gradient as the padded batch; seq2seq models are not packed."""
    tokenizer = make_lm_tokenizer()
    lm = LanguageModel(make_lm(arch, len(tokenizer)), tokenizer)
    prompts, targets = PROMPTS * 3, TARGETS * 3
    packed = lm.make_batch(prompts, targets, append_eos=True, packed=True)
    if lm.is_seq2seq:
        assert not lm.packs and packed.packing is None
        return
    assert lm.packs and packed.packing is not None and packed.attention_mask is None
    assert packed.input_ids.numel() < lm.make_batch(prompts, targets, append_eos=True).input_ids.numel(), "packing must save padding"
    with torch.no_grad():
        stats = lm.target_log_probs(packed)
    reference = [slow_reference_nll(lm, p, t) for p, t in zip(PROMPTS, TARGETS)] * 3
    for row, expected in enumerate(reference):
        assert stats.token_nll[row][stats.mask[row]].tolist()[: len(expected)] == pytest.approx(expected, abs=1e-4)

    def gradient(batch) -> tuple[TargetLogProbs, list[torch.Tensor]]:
        lm.model.zero_grad(set_to_none=True)
        result = lm.target_log_probs(batch)
        result.nll.backward()
        return result, [p.grad.clone() for p in lm.model.parameters() if p.grad is not None]

    padded_stats, padded_grads = gradient(lm.make_batch(prompts, targets, append_eos=True))
    packed_stats, packed_grads = gradient(packed)
    assert float(packed_stats.nll.detach()) == pytest.approx(float(padded_stats.nll.detach()), abs=1e-5)
    assert float(packed_stats.exact_match) == float(padded_stats.exact_match)
    assert packed_stats.n_tokens == padded_stats.n_tokens
    for a, b in zip(padded_grads, packed_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_packed_rows_come_out_even():
    """As many rows as `row_tokens` a row needs, filled longest first into the emptiest row, so no
    row is mostly padding; every example starts its own run of position ids."""
    tokenizer = make_lm_tokenizer()
    lm = LanguageModel(make_lm("llama", len(tokenizer)), tokenizer)
    encoded = [lm.encode_prompt_target(p, t, True) for p, t in zip(PROMPTS * 4, TARGETS * 4)]
    lengths = sorted(len(ids) for ids, _ in encoded)
    batch = lm._packed_batch(encoded, row_tokens=30)
    rows, width = batch.input_ids.shape
    assert rows == -(-sum(lengths) // 30) and rows > 1
    assert rows * width - sum(lengths) < rows * lengths[-1], "padding stays under one example a row"
    assert int((batch.position_ids == 0).sum()) >= len(encoded)


class _IgnoresPositions(torch.nn.Module):
    """A causal LM that reads packed rows as one sequence (drops the restarting position ids)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.config = model, model.config

    def forward(self, position_ids=None, **kwargs):
        return self.inner(**kwargs)


def test_a_model_that_mixes_packed_examples_gets_padded_batches():
    tokenizer = make_lm_tokenizer()
    lm = LanguageModel(_IgnoresPositions(make_lm("llama", len(tokenizer))), tokenizer)
    assert not lm.packs
    batch = lm.make_batch(PROMPTS, TARGETS, packed=True)
    assert batch.packing is None and batch.attention_mask is not None


def test_packing_is_checked_in_the_weights_precision_under_autocast():
    """Training calls make_batch under bf16 autocast (`--mixed-precision bf16`); the check that a
    model keeps packed examples apart must not fail on bf16 rounding and fall back to padding."""
    tokenizer = make_lm_tokenizer()
    lm = LanguageModel(make_lm("llama", len(tokenizer)), tokenizer)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        batch = lm.make_batch(PROMPTS, TARGETS, append_eos=True, packed=True)
    assert lm.packs and batch.packing is not None


def test_packed_batch_scores_what_the_padded_batch_scores_when_a_target_starts_the_text():
    """With an empty prompt (and no beginning-of-sequence token) no logit predicts the target's
    first token; the padded batch's shift drops it, and so must packing."""
    tokenizer = make_lm_tokenizer()
    lm = LanguageModel(make_lm("llama", len(tokenizer)), tokenizer)
    prompts, targets = ["", "The capital of Japan is"], ["Tokyo", "Tokyo"]
    assert lm.encode_prompt_target("", "Tokyo")[1][0] != IGNORE_INDEX, "the first token must be a label"
    with torch.no_grad():
        packed = lm.target_log_probs(lm.make_batch(prompts, targets, packed=True))
        padded = lm.target_log_probs(lm.make_batch(prompts, targets))
    assert packed.n_tokens == padded.n_tokens
    assert float(packed.nll) == pytest.approx(float(padded.nll), abs=1e-5)
