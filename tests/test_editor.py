"""Routing: empty memory is the base model bit for bit; in-scope probes go to the counterfactual model."""

from __future__ import annotations

import math

import pytest
import torch

from searc.classifier import ScopeScores
from searc.counterfactual import counterfactual_input
from searc.editor import Editor, soft_generate
from searc.lm import LanguageModel
from searc.memory import Edit
from tests.conftest import make_lm, make_lm_tokenizer, make_system

PROBES = ["The Eiffel Tower stands in", "The capital of Japan is"]
EIFFEL = ("The Eiffel Tower is located in the city of", "Rome")


def set_dense_bias(editor: Editor, bias: float) -> None:
    """Make every (probe, edit) score sigmoid(bias) regardless of text."""
    with torch.no_grad():
        editor.system.classifier.scale.fill_(0.0)
        editor.system.classifier.bias.fill_(bias)


def perturb_adapter(system) -> None:
    """Give LoRA non-zero weights, as training would: the counterfactual model now differs."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in system.counterfactual.model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn_like(param) * 0.5)


def test_empty_memory_answers_exactly_as_the_unedited_model(arch):
    system = make_system(arch)
    perturb_adapter(system)
    editor = Editor(system)
    results = editor.probe(PROBES)
    tokenizer = make_lm_tokenizer()
    unedited = LanguageModel(make_lm(arch, len(tokenizer)), tokenizer).generate(PROBES)
    for result, reference in zip(results, unedited):
        assert not result.routed and result.best_edit is None and result.scores == {}
        assert result.output == result.base_output == reference.text
        assert result.counterfactual_output is None


def test_base_view_switches_the_adapter_off_only_while_it_runs():
    """The base view turns the shared adapter's layers off and back on itself: nested base calls
    keep it off until the outermost ends, and the counterfactual view then reads it again."""
    system = make_system("llama")
    perturb_adapter(system)
    ids = torch.tensor([[1, 5, 6, 7]])
    with system.counterfactual.active() as model:
        adapted = model(input_ids=ids).logits
    with system.base.active() as model:
        with system.base.active():
            pass
        inner_exit = model(input_ids=ids).logits
    tokenizer = make_lm_tokenizer()
    unedited = make_lm("llama", len(tokenizer))(input_ids=ids).logits
    with system.counterfactual.active() as model:
        after = model(input_ids=ids).logits
    assert torch.allclose(inner_exit, unedited, atol=1e-5), "the adapter came back on when a nested base call ended"
    assert torch.equal(after, adapted) and not torch.allclose(adapted, unedited, atol=1e-3)


def test_in_scope_probe_is_answered_by_the_counterfactual_model(arch):
    system = make_system(arch)
    perturb_adapter(system)
    editor = Editor(system)
    edit = editor.add_edit(*EIFFEL)
    set_dense_bias(editor, 8.0)
    result = editor.probe(PROBES[:1])[0]
    expected = system.counterfactual.generate([counterfactual_input(edit, PROBES[0])])[0].text
    assert result.routed and result.best_edit == edit
    assert result.output == result.counterfactual_output == expected
    assert result.base_output == system.base.generate(PROBES[:1])[0].text
    comparison = editor.score_target(PROBES[0], "Rome")
    assert comparison.counterfactual_nll != comparison.base_nll, "a trained adapter must change the model"


def test_out_of_scope_probe_keeps_the_base_answer_and_base_weights_are_untouched(arch):
    system = make_system(arch)
    perturb_adapter(system)
    editor = Editor(system)
    editor.add_edit(*EIFFEL)
    set_dense_bias(editor, -8.0)
    tokenizer = make_lm_tokenizer()
    unedited = LanguageModel(make_lm(arch, len(tokenizer)), tokenizer).generate(PROBES)
    for result, reference in zip(editor.probe(PROBES), unedited):
        assert not result.routed
        assert result.output == result.base_output == reference.text
        assert result.counterfactual_output is None


def test_separate_seq2seq_counterfactual_model():
    system = make_system("gpt2", counterfactual_arch="t5")
    assert system.counterfactual.is_seq2seq and not system.base.is_seq2seq
    editor = Editor(system)
    edit = editor.add_edit(*EIFFEL)
    set_dense_bias(editor, 8.0)
    result = editor.probe(PROBES[:1])[0]
    assert result.routed
    assert result.output == system.counterfactual.generate([counterfactual_input(edit, PROBES[0])])[0].text
    comparison = editor.score_target(PROBES[0], "Rome")
    assert comparison.edited_nll == comparison.counterfactual_nll


def test_best_edit_is_the_argmax_and_threshold_reroutes_without_models(monkeypatch):
    system = make_system("llama")
    editor = Editor(system)
    editor.add_edits([Edit(*EIFFEL), Edit("The capital of Japan is", "Kyoto"), Edit("Toko Yasuda plays the", "piano")])
    fixed = torch.tensor([[0.2, 0.7, 0.4], [0.1, 0.3, 0.2]])
    monkeypatch.setattr(system.classifier, "scope_scores", lambda prompts, memory: ScopeScores(fixed[: len(prompts)], fixed[: len(prompts)]))
    results = editor.probe(PROBES, counterfactual_for_all=True)
    assert [r.best_edit.id for r in results] == ["e2", "e2"]
    assert [r.routed for r in results] == [True, False]
    assert results[0].scores == {"e1": pytest.approx(0.2), "e2": pytest.approx(0.7), "e3": pytest.approx(0.4)}
    monkeypatch.setattr(system.base, "generate", lambda *a, **k: pytest.fail("re-routing must not run a model"))
    lowered = results[1].with_thresholds(0.25, 0.5)
    assert lowered.routed and lowered.output == results[1].counterfactual_output
    raised = results[0].with_thresholds(0.9, 0.5)
    assert not raised.routed and raised.output == results[0].base_output
    assert "below the threshold 0.90" in raised.explanation() and "e2" in raised.explanation()


def test_score_target_compares_base_and_edited_system():
    system = make_system("qwen2")
    perturb_adapter(system)
    editor = Editor(system)
    editor.add_edit(*EIFFEL)
    set_dense_bias(editor, 8.0)
    routed = editor.score_target(EIFFEL[0], "Rome")
    assert routed.routed and routed.tokens and len(routed.base_nll) == len(routed.tokens)
    assert routed.edited_nll == routed.counterfactual_nll != routed.base_nll
    set_dense_bias(editor, -8.0)
    kept = editor.score_target(EIFFEL[0], "Rome")
    assert not kept.routed and kept.edited_nll == kept.base_nll


def test_batched_target_comparison_matches_one_probe_at_a_time():
    from searc.editor import compare_targets

    system = make_system("llama", padding_side="left")
    perturb_adapter(system)
    editor = Editor(system)
    editor.add_edit(*EIFFEL)
    prompts = [EIFFEL[0], "The capital of Japan is a city called", "Where is the tower?"]
    targets = ["Rome", "Tokyo", "in Paris, France"]
    editor.threshold = sorted(r.score for r in editor.route(prompts))[1]  # some routed, some not
    batched = compare_targets(system, prompts, targets, editor.route(prompts), editor.decline_threshold)
    assert {c.routed for c in batched} == {True, False}
    for comparison, prompt, target in zip(batched, prompts, targets):
        alone = editor.score_target(prompt, target)
        assert comparison.routed == alone.routed and comparison.token_ids == alone.token_ids
        assert comparison.edited_nll == pytest.approx(alone.edited_nll, abs=1e-4)
        assert comparison.base_nll == pytest.approx(alone.base_nll, abs=1e-4)


def test_a_declining_counterfactual_model_hands_the_probe_back_to_the_base_model(monkeypatch):
    from searc.lm import Generation

    system = make_system("llama")
    perturb_adapter(system)
    editor = Editor(system)
    editor.add_edit(*EIFFEL)
    set_dense_bias(editor, 8.0)  # everything routed
    monkeypatch.setattr(system.counterfactual, "generate", lambda prompts, max_new_tokens=None, answer=False, finish=None: [Generation(" Rome", [5], 0.7) for _ in prompts])
    result = editor.probe([PROBES[1]])[0]
    # ending at once is 70% likely, at or above the decline threshold (0.5 by default)
    assert result.routed and result.declined and result.output == result.base_output
    assert result.counterfactual_output == " Rome" and result.decline_probability == 0.7  # what it would have said
    assert "declined" in result.explanation() and "70%" in result.explanation() and result.to_json()["declined"] is True
    assert result.with_thresholds(0.1, result.decline_threshold).output == result.base_output

    editor.decline_threshold = 0.8  # the same model, a session that declines only when surer
    result = editor.probe([PROBES[1]])[0]
    assert result.routed and not result.declined and result.output == " Rome" and result.decline_threshold == 0.8
    assert result.with_thresholds(1.0, 0.8).output == result.base_output and result.with_thresholds(0.1, 0.8).output == " Rome"
    assert result.with_thresholds(0.1, 0.5).output == result.base_output  # moved back: declined again, no model run
    assert Editor(system).decline_threshold == system.decline_threshold == 0.5  # the shared system kept its own

    system.decline_threshold = 0.8  # a checkpoint tuned to decline only when surer: new sessions start there
    assert Editor(system).decline_threshold == 0.8 and Editor(system, decline_threshold=0.3).decline_threshold == 0.3
    editor.decline_threshold = 0.5
    eos = system.counterfactual.tokenizer.eos_token_id
    original = system.counterfactual.score_targets

    def first_choice_is_eos(prompts, targets):
        scores = original(prompts, targets)
        for score in scores:  # ending at once is certain
            score.log_probs = torch.full_like(score.log_probs, -1e4).index_fill_(-1, torch.tensor([eos]), 0.0)
        return scores

    monkeypatch.setattr(system.counterfactual, "score_targets", first_choice_is_eos)
    comparison = editor.score_target(PROBES[1], "Tokyo")
    assert comparison.routed and comparison.edited_nll == comparison.base_nll
    assert comparison.edited_predicted == comparison.base_predicted


def test_the_counterfactual_answer_is_generated_past_a_likely_end(monkeypatch):
    """answer=True never ends at once, and reports the first step's end probability before that is masked."""
    system = make_system("llama")
    cf = system.counterfactual
    eos = cf.tokenizer.eos_token_id
    prompt = counterfactual_input(Edit(*EIFFEL[:2]), PROBES[1])
    bias = torch.zeros(len(cf.tokenizer))  # make ending the likeliest token everywhere
    bias[eos] = 30.0
    hook = cf.model.get_output_embeddings().register_forward_hook(lambda module, inputs, output: output + bias)
    try:
        plain = cf.generate([prompt])[0]
        answered = cf.generate([prompt], answer=True)[0]
        expected = math.exp(float(cf.next_token_log_probs(prompt, [])[eos]))
    finally:
        hook.remove()
    assert plain.token_ids == [eos] and plain.text == ""
    assert answered.token_ids and answered.token_ids[0] != eos
    assert answered.end_probability == pytest.approx(expected, abs=1e-5) and plain.end_probability == pytest.approx(expected, abs=1e-5)
    assert answered.end_probability > 0.99
    # in a left-padded batch each row reads its own first step
    prompts = [prompt, PROBES[0]]
    batch = cf.generate(prompts, max_new_tokens=2, answer=True)
    assert [g.end_probability for g in batch] == pytest.approx([math.exp(float(cf.next_token_log_probs(p, [])[eos])) for p in prompts], abs=1e-5)


def test_soft_routing_mixes_the_two_distributions(monkeypatch):
    system = make_system("llama")
    editor = Editor(system, routing="soft")
    editor.add_edit(*EIFFEL)
    vocab = len(system.base.tokenizer)
    eos = system.base.tokenizer.eos_token_id
    # base prefers token 5 then EOS; counterfactual prefers token 6 strongly, then EOS
    def distribution(preferred: list[int], mass: float):
        def log_probs(prompt, continuation):
            p = torch.full((vocab,), (1 - mass) / (vocab - 1))
            p[preferred[min(len(continuation), len(preferred) - 1)]] = mass
            return p.log()
        return log_probs
    monkeypatch.setattr(system.base, "next_token_log_probs", distribution([5, eos], 0.6))
    monkeypatch.setattr(system.counterfactual, "next_token_log_probs", distribution([6, eos], 0.9))
    decode = system.base.tokenizer.decode
    assert soft_generate(system, "p", editor.edits[0], 0.2) == decode([5, eos], skip_special_tokens=True)
    assert soft_generate(system, "p", editor.edits[0], 0.8) == decode([6, eos], skip_special_tokens=True)
    set_dense_bias(editor, 0.0)  # score 0.5 -> 0.5*0.9 > 0.5*0.6: counterfactual token wins
    assert editor.probe(["p"])[0].output == decode([6, eos], skip_special_tokens=True)


def test_soft_routing_finishes_a_begun_target_where_the_probe_is_routed(monkeypatch):
    """The mixture that begins the edit's target and would end after its first token goes on to
    the whole target, given the budget a long target needs; decoding freely, or unrouted, it ends."""
    system = make_system("llama")
    base, cf = system.base, system.counterfactual
    edit = Edit(EIFFEL[0], " ".join(["Caligula (play), a drama"] * 3))
    ids = cf.target_ids(counterfactual_input(edit, PROBES[0]), edit.target_new)
    assert len(ids) > base.max_new_tokens
    vocab, eos = len(base.tokenizer), base.tokenizer.eos_token_id

    def prefers(first: int, then: int, mass: float):
        def log_probs(prompt, continuation):
            p = torch.full((vocab,), (1 - mass) / (vocab - 1))
            p[then if continuation else first] = mass
            return p.log()
        return log_probs

    monkeypatch.setattr(base, "next_token_log_probs", prefers(eos, eos, 0.6))
    monkeypatch.setattr(cf, "next_token_log_probs", prefers(ids[0], eos, 0.9))
    finished = soft_generate(system, PROBES[0], edit, 0.9, finish=True)
    assert finished == cf.tokenizer.decode(ids, skip_special_tokens=True)
    assert soft_generate(system, PROBES[0], edit, 0.9, finish=False) == cf.tokenizer.decode([ids[0]], skip_special_tokens=True)
    editor = Editor(system, routing="soft")
    editor.add_edits([edit])
    set_dense_bias(editor, 0.0)  # score 0.5: routed at threshold 0.5, not at 0.6
    routed, = editor.probe([PROBES[0]])
    assert routed.routed and routed.output == finished
    editor.threshold = 0.6
    unrouted, = editor.probe([PROBES[0]])
    assert not unrouted.routed and unrouted.output == cf.tokenizer.decode([ids[0]], skip_special_tokens=True)


def test_soft_target_nll_is_the_mixture():
    system = make_system("mistral")
    perturb_adapter(system)
    editor = Editor(system, routing="soft")
    editor.add_edit(*EIFFEL)
    set_dense_bias(editor, 0.0)
    c = editor.score_target(EIFFEL[0], "Rome")
    for edited, base, cf in zip(c.edited_nll, c.base_nll, c.counterfactual_nll):
        mixture = 0.5 * torch.exp(torch.tensor(-cf)) + 0.5 * torch.exp(torch.tensor(-base))
        assert edited == pytest.approx(-float(torch.log(mixture)), abs=1e-5)


@pytest.mark.parametrize("bad", ["", "   ", "\x00abc", "y" * 5000])
def test_bad_probes_are_refused(bad):
    editor = Editor(make_system("gpt2"))
    with pytest.raises(ValueError):
        editor.probe([bad])


@pytest.mark.parametrize("threshold", [-0.1, 1.5, float("nan")])
def test_threshold_outside_unit_interval_is_refused(threshold):
    with pytest.raises(ValueError, match="threshold"):
        Editor(make_system("gpt2"), threshold=threshold)


def test_a_routed_long_target_gets_a_budget_to_finish(monkeypatch):
    system = make_system("llama")
    cf = system.counterfactual
    long_target = " ".join(["Caligula (play), a drama"] * 4)
    assert cf.budget_for(["Rome"]) == cf.max_new_tokens
    assert cf.budget_for([long_target]) >= len(cf.encode(" " + long_target)) + 1 > cf.max_new_tokens
    budgets, generate = [], LanguageModel.generate
    monkeypatch.setattr(LanguageModel, "generate", lambda self, prompts, max_new_tokens=None, **kw: budgets.append(max_new_tokens) or generate(self, prompts, max_new_tokens, **kw))
    editor = Editor(system, threshold=0.0)
    editor.add_edit("The play of the year is", long_target)
    editor.probe(["The play of the year is"])
    assert cf.budget_for([long_target]) in budgets


def _generate_steered(cf: LanguageModel, prompt: str, first: int, then: int, budget: int, finish) -> list[list[int]]:
    """Generate with the first token steered to `first` and every later one to `then`."""
    steps = []

    def steer(module, inputs, output):
        bias = torch.zeros(output.shape[-1])
        bias[first if not steps else then] = 30.0
        steps.append(None)
        return output + bias

    hook = cf.model.get_output_embeddings().register_forward_hook(steer)
    try:
        return [g.token_ids for g in cf.generate([prompt], max_new_tokens=budget, answer=True, finish=finish)]
    finally:
        hook.remove()


def test_a_begun_target_is_finished_unless_the_model_leaves_it_for_a_word_of_its_own(arch):
    """Once a row's output is the first k tokens of its target, the target's next token is taken
    where the model would end, skip ahead in the target, write punctuation or go on inside the
    word; where it starts another word, or has no target, or began otherwise, it decodes as it
    would have."""
    cf = make_system(arch).counterfactual
    prompt = counterfactual_input(Edit(*EIFFEL), PROBES[0])
    target = "Caligula (play), a drama"
    ids = cf.target_ids(prompt, target)
    eos, budget = cf.tokenizer.eos_token_id, len(ids) + 2
    later = ids[-1]  # a token the target has further on
    punctuation = next(t for t in cf.tokenizer(". ; !", add_special_tokens=False)["input_ids"] if t not in ids)
    word = next(t for t in cf.tokenizer(" Paris Tokyo", add_special_tokens=False)["input_ids"] if t not in ids)
    inside = next(t for t in cf.tokenizer("Paris", add_special_tokens=False)["input_ids"] if t not in ids)
    assert cf.tokenizer.decode([word]).startswith(" ") and not cf.tokenizer.decode([inside]).startswith(" ")
    assert len(ids) > 3 and ids[1] not in (later, punctuation, word, inside) and later in ids[2:]
    for then in (eos, later, punctuation, inside):
        [free] = _generate_steered(cf, prompt, ids[0], then, budget, None)
        [finished] = _generate_steered(cf, prompt, ids[0], then, budget, [target])
        assert free[:2] == [ids[0], then]
        assert finished[: len(ids)] == ids, then  # past the target, decoding is free again:
        assert finished[len(ids):][:1] == [then]
    [free] = _generate_steered(cf, prompt, ids[0], word, budget, None)
    assert _generate_steered(cf, prompt, ids[0], word, budget, [target]) == [free] and free[:2] == [ids[0], word]
    other = next(t for t in ("Rome", "Paris", "Tokyo") if cf.target_ids(prompt, t)[0] != ids[0])
    for unfinished in ([None], [other]):  # no target, or one it did not begin
        assert _generate_steered(cf, prompt, ids[0], eos, budget, unfinished) == [[ids[0], eos]]


def test_the_editor_finishes_targets_unless_the_system_decodes_freely(monkeypatch):
    system = make_system("llama")
    calls, generate = [], LanguageModel.generate
    monkeypatch.setattr(LanguageModel, "generate", lambda self, prompts, max_new_tokens=None, answer=False, finish=None: calls.append(finish) or generate(self, prompts, max_new_tokens, answer, finish))
    editor = Editor(system, threshold=0.0)
    editor.add_edit(*EIFFEL)
    editor.probe([PROBES[0]])
    editor.finish_targets = False  # this session decodes freely; the shared system keeps its setting
    editor.probe([PROBES[0]])
    assert system.finish_targets and calls == [[None], ["Rome"], [None]]  # base, counterfactual; counterfactual decoding freely (base answer kept)
    system.finish_targets = False  # the system's setting is a new editor's default
    assert not Editor(system).finish_targets and Editor(system, finish_targets=True).finish_targets


def test_the_name_check_says_what_it_lowered_and_why():
    """A probe that names an edit's subject only in part: routing reads the lowered score, and the
    result says which words of the subject the probe lacks, where the classifier alone would have
    routed it."""
    editor = Editor(make_system(), threshold=0.6)
    set_dense_bias(editor, 4.0)  # the classifier alone scores every pair sigmoid(4) = 0.982
    edit = editor.add_edit("Ahmad Brooks plays in the position of", "quarterback", subject="Ahmad Brooks")
    editor.system.classifier.config.name_weight = 0.0
    [unchecked] = editor.probe(["Aaron Brooks plays in the position of"])
    assert unchecked.routed and unchecked.name_check is None and "name check" not in unchecked.explanation()

    editor.system.classifier.config.name_weight = 8.0
    near, named = editor.probe(["Aaron Brooks plays in the position of", "Ahmad Brooks is a"])
    assert named.name_check is None and named.routed
    check = near.name_check
    assert check.edit == edit and check.missing == ["Ahmad"]
    assert check.classifier_score == pytest.approx(torch.sigmoid(torch.tensor(4.0)).item())
    assert check.score == pytest.approx(torch.sigmoid(torch.tensor(0.0)).item()) == near.score  # half the subject missing: 4 - 8 / 2
    assert not near.routed and near.output == near.base_output
    assert 'does not name "Ahmad" of its subject "Ahmad Brooks"' in near.explanation()
    assert near.to_json()["name_check"] == {"edit": edit.id, "classifier_score": check.classifier_score, "score": check.score,
                                            "missing": ["Ahmad"]}

    set_dense_bias(editor, -4.0)  # the classifier alone would not route: the lowering is kept, but not told
    [far] = editor.probe(["Aaron Brooks plays in the position of"])
    assert far.name_check is not None and far.name_check_note is None and "name check" not in far.explanation()


def test_the_base_models_answers_are_generated_once_per_prompt(monkeypatch):
    """The base model never changes, so a re-probe after an edit reuses its answers: only prompts
    not asked before are generated, the answers are the same, and a new budget starts afresh."""
    system = make_system()
    editor = Editor(system)
    first = [r.base_output for r in editor.probe(PROBES)]
    generated = []
    original = system.base.generate
    monkeypatch.setattr(system.base, "generate", lambda prompts, *a, **k: generated.append(list(prompts)) or original(prompts, *a, **k))
    editor.add_edit(*EIFFEL)
    again = editor.probe([*PROBES, "The Louvre is in"])
    assert [r.base_output for r in again[:2]] == first and generated == [["The Louvre is in"]]
    assert again[2].base_output == original(["The Louvre is in"])[0].text
    system.kept_answers.size = 2  # the oldest answer is dropped first
    editor.probe([PROBES[1]])
    assert PROBES[0] not in system.kept_answers.kept_inputs() and generated[-1] == ["The Louvre is in"]
    system.base.max_new_tokens = 4
    editor.probe([PROBES[1]])
    assert generated[-1] == [PROBES[1]]
