"""Consequence probes: the base model's consistent answers about new objects, composed with the edit."""

from __future__ import annotations

import random

import pytest

from searc.augment import AugmentConfig, Augmenter
from searc.consequences import CAPITAL, COUNTRY, FORMS, LANGUAGE, agree, answer_of, consequence_probes, facts_for, known_facts, with_consequences
from searc.data import EditCase, Probe
from searc.lm import Generation
from searc.memory import Edit
from searc.relations import case_relation_of
from searc.train import TrainConfig

LOUVRE = EditCase(
    Edit("The location of the Louvre is", "Rome", subject="the Louvre", target_true="Paris"),
    (Probe("The location of the Louvre is", "Rome"),),
    (Probe("The location of Big Ben is", "London"),),
)


class ScriptedLM:
    """Answers each prompt from a table (the unedited model's beliefs), "" otherwise."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers, self.asked = answers, []

    def generate(self, prompts, max_new_tokens=None):
        self.asked += list(prompts)
        return [Generation(text=self.answers.get(p, "\n\nI do not know"), token_ids=[], end_probability=0.0) for p in prompts]


def test_an_answer_is_the_first_words_of_a_continuation_up_to_punctuation():
    assert answer_of(" Italy.\n\nThe capital") == "Italy"
    assert answer_of(" the United States of America, and") == "United States of America"
    assert answer_of(" New York City, which is") == "New York City"
    assert answer_of("\n\nThe answer is") == "" and answer_of(" a city in the north") == ""
    assert agree("New York", "New York City") == "New York" and agree("Italy", "France") == ""


def test_known_facts_keep_only_answers_both_wordings_give():
    lm = ScriptedLM({
        "Rome is located in the country of": " Italy.", "Rome is a city in the country of": " Italy, in Europe",
        "Lyon is located in the country of": " France.", "Lyon is a city in the country of": " Belgium.",  # inconsistent
        "The capital of Albania is": " capital of Albania", "The capital city of Albania is": " capital of Albania.",  # echoes
        "The capital of Italy is": " Rome.", "The capital city of Italy is": " Rome, the",
        "Italy is located in the country of": " Spain.", "Italy is a city in the country of": " Spain.",  # a country: none
        "The official language of Italy is": " Italian.", "In Italy, the language spoken is": " Italian and",
    })
    asks = [("Rome", COUNTRY), ("Lyon", COUNTRY), ("Albania", CAPITAL), ("Italy", CAPITAL), ("Italy", COUNTRY), ("Italy", LANGUAGE)]
    facts = known_facts(lm, asks)
    assert facts == {("Rome", "country"): "Italy", ("Italy", "capital"): "Rome", ("Italy", "official language"): "Italian"}
    assert len(lm.asked) == 2 * len(asks)


def test_consequence_probes_compose_the_edit_with_the_step():
    relation = case_relation_of(LOUVRE)
    assert relation is not None and relation.id == "P276"
    probes = consequence_probes(LOUVRE, relation, {("Rome", "country"): "Italy"})
    assert {p.answer for p in probes} == {"Italy"}
    prompts = [p.prompt for p in probes]
    assert "the Louvre is located in the country of" in prompts  # the natural wording of a located thing
    assert "The country of the location of the Louvre is" in prompts
    # each carries its second step, asked of the new object alone, as the ceiling reads it
    assert {s.prompt: s.answer for p in probes for s in p.second_steps} == {
        "Rome is located in the country of": "Italy", "Rome is a city in the country of": "Italy"}
    assert consequence_probes(LOUVRE, relation, {}) == []


def test_consequence_probes_ask_only_in_the_forms_given():
    relation = case_relation_of(LOUVRE)
    facts = {("Rome", "country"): "Italy"}
    by_form = {form: [p.prompt for p in consequence_probes(LOUVRE, relation, facts, (form,))] for form in FORMS}
    assert by_form == {"cloze": ["The country of the location of the Louvre is"],
                       "question": ["What is the country of the location of the Louvre? It is"],
                       "natural": ["the Louvre is located in the country of"]}
    augmenter = Augmenter([LOUVRE], AugmentConfig(consequence_forms=("natural",)), facts=facts)
    for seed in range(5):
        consequences = [p.prompt for p in augmenter(LOUVRE, random.Random(seed)).in_scope if p.group == "consequence"]
        assert consequences == by_form["natural"]
    with pytest.raises(ValueError, match="consequence forms must be some of cloze, question, natural, got prose"):
        TrainConfig(consequences=True, consequence_forms=("natural", "prose"))


def test_the_augmenter_adds_a_consequence_in_scope_with_its_own_answer():
    plain = Augmenter([LOUVRE])(LOUVRE, random.Random(0))
    assert all(p.answer == "Rome" for p in plain.in_scope)
    augmented = Augmenter([LOUVRE], facts={("Rome", "country"): "Italy"})(LOUVRE, random.Random(0))
    consequences = [p for p in augmented.in_scope if p.group == "consequence"]
    assert len(consequences) == 1 and consequences[0].answer == "Italy"
    assert all(p.prompt != consequences[0].prompt for p in augmented.out_of_scope)
    # the counterfactual model always trains on it, beside the edit prompt and one other wording
    from searc.batches import counterfactual_examples

    assert len(augmented.in_scope) > 3
    for seed in range(5):
        inputs, targets = counterfactual_examples([augmented], random.Random(seed), drop_subject=0.0, per_case=2)
        assert len(inputs) == 3 and targets[0] == "Rome" and targets.count("Italy") == 1


def test_training_with_consequences_asks_the_base_model_once_and_records_how_many_facts(monkeypatch, tmp_path):
    import searc.train as training
    from searc.checkpoint import read_checkpoint
    from searc.train import TrainConfig, train
    from tests.conftest import make_system

    asked = []

    def facts_for(lm, cases, names):
        asked.append((len(cases), names))
        return {("Rome", "country"): "Italy"}

    monkeypatch.setattr(training, "facts_for", facts_for)
    cases = [LOUVRE, EditCase(Edit("The location of the Colosseum is", "Paris", subject="the Colosseum"),
                              (Probe("The location of the Colosseum is", "Paris"),), (Probe("The location of Big Ben is", "London"),))]
    config = TrainConfig(steps=1, batch_edits=2, val_every=1, val_cases=2, consequences=True, held_out_relations=(),
                         consequence_steps=("country", "capital"))
    events = list(train(make_system("llama"), cases, cases, config, out=tmp_path / "ck"))
    assert events[-1].kind == "done" and asked == [(2, ("country", "capital"))]
    assert read_checkpoint(tmp_path / "ck").config["training"]["consequence_facts"] == 1
    list(train(make_system("llama"), cases, cases, TrainConfig(steps=1, batch_edits=2, val_every=1, val_cases=2, held_out_relations=())))
    assert len(asked) == 1, "off by default"
    with pytest.raises(ValueError, match="consequence steps must be some of country, capital"):
        TrainConfig(consequences=True, consequence_steps=("country", "continent"))


def test_only_the_steps_asked_for_are_asked_of_the_model():
    lm = ScriptedLM({})
    facts_for(lm, [LOUVRE], ("capital",))
    assert lm.asked == ["The capital of Rome is", "The capital city of Rome is"]


def test_evaluation_cases_get_their_consequences_as_portability_probes():
    """`searc eval --consequences`: each case's consequence probes join its portability probes;
    a case the unedited model knows nothing for gets none."""
    lm = ScriptedLM({"Rome is located in the country of": " Italy.", "Rome is a city in the country of": " Italy."})
    question = EditCase(Edit("Who wrote Hamlet?", "Marlowe", subject="Hamlet"), (Probe("Who wrote Hamlet?", "Marlowe"),), ())
    known = EditCase(Edit("Hamlet is in", "Rome", subject="Hamlet"), (), (), portability=(Probe("Is Hamlet in Europe?", "yes"),))
    louvre, hamlet = with_consequences(lm, [LOUVRE, question])
    assert hamlet == question
    assert louvre.in_scope == LOUVRE.in_scope and louvre.out_of_scope == LOUVRE.out_of_scope
    assert louvre.portability and {p.answer for p in louvre.portability} == {"Italy"}
    assert all(p.group == "consequence" and p.second_steps for p in louvre.portability)
    assert with_consequences(lm, [known])[0].portability[0] == known.portability[0]  # the data's own are kept, first


def test_a_country_has_no_country_step():
    """Country, country of origin and citizenship have a country as object: no "country of the country"."""
    from searc.consequences import STEPS

    for relation in ("P17", "P495", "P27"):
        assert COUNTRY not in STEPS[relation] and CAPITAL in STEPS[relation]
    assert COUNTRY in STEPS["P276"] and COUNTRY.label in {s.label for s in STEPS["P19"]}
