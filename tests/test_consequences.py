"""Consequence probes: the base model's consistent answers about new objects, composed with the edit."""

from __future__ import annotations

import random

from searc.augment import Augmenter
from searc.consequences import CAPITAL, COUNTRY, LANGUAGE, agree, answer_of, consequence_probes, known_facts
from searc.data import EditCase, Probe
from searc.lm import Generation
from searc.memory import Edit
from searc.relations import case_relation_of

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
    assert consequence_probes(LOUVRE, relation, {}) == []


def test_the_augmenter_adds_a_consequence_in_scope_with_its_own_answer():
    plain = Augmenter([LOUVRE])(LOUVRE, random.Random(0))
    assert all(p.answer == "Rome" for p in plain.in_scope)
    augmented = Augmenter([LOUVRE], facts={("Rome", "country"): "Italy"})(LOUVRE, random.Random(0))
    consequences = [p for p in augmented.in_scope if p.group == "consequence"]
    assert len(consequences) == 1 and consequences[0].answer == "Italy"
    assert all(p.prompt != consequences[0].prompt for p in augmented.out_of_scope)


def test_training_with_consequences_asks_the_base_model_once_and_records_how_many_facts(monkeypatch, tmp_path):
    import searc.train as training
    from searc.checkpoint import read_checkpoint
    from searc.train import TrainConfig, train
    from tests.conftest import make_system

    asked = []

    def facts_for(lm, cases):
        asked.append(len(cases))
        return {("Rome", "country"): "Italy"}

    monkeypatch.setattr(training, "facts_for", facts_for)
    cases = [LOUVRE, EditCase(Edit("The location of the Colosseum is", "Paris", subject="the Colosseum"),
                              (Probe("The location of the Colosseum is", "Paris"),), (Probe("The location of Big Ben is", "London"),))]
    config = TrainConfig(steps=1, batch_edits=2, val_every=1, val_cases=2, consequences=True, held_out_relations=())
    events = list(train(make_system("llama"), cases, cases, config, out=tmp_path / "ck"))
    assert events[-1].kind == "done" and asked == [2]
    assert read_checkpoint(tmp_path / "ck").config["training"]["consequence_facts"] == 1
    list(train(make_system("llama"), cases, cases, TrainConfig(steps=1, batch_edits=2, val_every=1, val_cases=2, held_out_relations=())))
    assert asked == [2], "off by default"
