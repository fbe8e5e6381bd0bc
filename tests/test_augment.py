"""Relations and the training data built from them: other wordings in scope, other facts of the
same subject out of scope, held-out relations never used."""

from __future__ import annotations

import random
from dataclasses import replace
from collections import Counter

import pytest
import torch

from searc.augment import (
    SCOPE_TARGETS, AugmentConfig, Augmenter, augmented_validation, question_groups, split_by_relation, target_form,
    with_other_facts, without_other_facts,
)
from searc.batches import counterfactual_examples, decline_examples, scope_matrix
from searc.data import EditCase, Probe, load_cases
from searc.memory import Edit
from searc.relations import (
    AMBIGUOUS, BY_ID, RELATIONS, SCOPE_RELATIONS, asks_another_fact, case_relation, relation_id, relation_of, relation_of_text,
)
from tests.conftest import require_shared_data


def counterfact_case(template: str, subject: str, target: str, neighbour: str = "Michel Rocard is a native speaker of") -> EditCase:
    prompt = template.format(subject)
    return EditCase(Edit(prompt, target, subject=subject), (Probe(prompt, target),), (Probe(neighbour, "French"),))


DARRIEUX = counterfact_case("The mother tongue of {} is", "Danielle Darrieux", "English")
SAME_TARGET = AugmentConfig(target_forms=0.0)  # for tests of the probes built: targets as given
ZSRE = EditCase(
    Edit("What is the product made by UniFirst?", "unmanned aircraft", subject="UniFirst"),
    (Probe("What is the product made by UniFirst?", "unmanned aircraft"), Probe("What will be the product of UniFirst?", "unmanned aircraft")),
    (Probe("nq question: who wrote hamlet", "Shakespeare"),),
)
QUESTIONS = [
    EditCase(Edit(f"Which river flows through {s}?", "Nile", subject=s), (Probe(f"Which river flows through {s}?", "Nile"),), ())
    for s in ("Cairo", "Khartoum")
] + [EditCase(Edit("Who founded Acme Corp?", "Jane Doe", subject="Acme Corp"), (Probe("Who founded Acme Corp?", "Jane Doe"),), ())]


def test_every_template_has_one_relation_and_ambiguous_ones_none():
    templates = Counter(t for r in RELATIONS for t in r.templates)
    assert max(templates.values()) == 1 and not set(templates) & AMBIGUOUS
    assert all("{}" in t for t in templates)
    assert relation_of("The mother tongue of Danielle Darrieux is", "Danielle Darrieux") is BY_ID["P103"]
    assert relation_of("Toko Yasuda, the", "Toko Yasuda") is None  # ambiguous
    # an ambiguous prompt takes the relation of its same-relation neighbour
    assert case_relation("Toko Yasuda, the", "Toko Yasuda", ("John Lennon performs on the",)) is BY_ID["P1303"]
    assert relation_of_text("John Lennon performs on the") is BY_ID["P1303"]
    assert relation_id("place of death") == "P20" and relation_id("P20") == "P20"
    with pytest.raises(ValueError, match="unknown relation"):
        relation_id("P99999")


def test_a_rewording_in_another_relations_template_asks_another_fact():
    """CounterFact gives "X was born in" as a paraphrase of X's mother tongue: another relation's wording."""
    stieltjes = EditCase(
        Edit("The mother tongue of Thomas Joannes Stieltjes is", "English", subject="Thomas Joannes Stieltjes"),
        (Probe("The mother tongue of Thomas Joannes Stieltjes is", "English"),),
        (Probe("Arend Lijphart is a native speaker of", "Dutch"),),
    )
    assert asks_another_fact(stieltjes, Probe("Thomas Joannes Stieltjes was born in", "English"))  # place of birth
    assert not asks_another_fact(stieltjes, Probe("Thomas Joannes Stieltjes speaks the language", "English"))  # same family
    assert not asks_another_fact(stieltjes, Probe("Two species live there. Thomas Joannes Stieltjes, a native", "English"))
    question = EditCase(Edit("What is the native language of Bob?", "English", subject="Bob"), (), ())  # no relation known
    assert not asks_another_fact(question, Probe("Bob was born in", "English"))
    # training does not learn it as in scope: augmentation drops it, and keeps the true rewording
    given = replace(stieltjes, in_scope=stieltjes.in_scope + (
        Probe("Thomas Joannes Stieltjes was born in", "English"), Probe("Thomas Joannes Stieltjes speaks the language", "English")))
    augmented = Augmenter([given])(given, random.Random(0))
    prompts = [p.prompt for p in augmented.in_scope]
    assert "Thomas Joannes Stieltjes was born in" not in prompts and "Thomas Joannes Stieltjes speaks the language" in prompts
    assert without_other_facts(stieltjes) is stieltjes


def test_the_shared_counterfact_files_have_known_relations():
    data = require_shared_data()
    for name in ("train", "val"):
        cases = load_cases(data / "counterfact" / f"{name}.json")
        unknown = [c for c in cases if case_relation(c.edit.prompt, c.edit.subject, tuple(p.prompt for p in c.out_of_scope)) is None]
        assert len(unknown) / len(cases) < 0.06, name  # only cases whose prompt and neighbour are both ambiguous


def test_counterfact_case_gets_other_wordings_in_scope_and_other_facts_out_of_scope():
    augmenter = Augmenter([DARRIEUX], SAME_TARGET)
    for seed in range(20):
        case = augmenter(DARRIEUX, random.Random(seed))
        assert case.in_scope[0] == DARRIEUX.in_scope[0] and case.out_of_scope[0] == DARRIEUX.out_of_scope[0]
        added_in, added_out = case.in_scope[1:], case.out_of_scope[1:]
        assert all("Danielle Darrieux" in p.prompt and p.answer == "English" for p in added_in)
        assert all(relation_of(p.prompt, "Danielle Darrieux") in (BY_ID["P103"], None) for p in added_in)
        assert any(relation_of(p.prompt, "Danielle Darrieux") is BY_ID["P103"] for p in added_in)
        assert len(added_out) == 3 and all("Danielle Darrieux" in p.prompt and p.answer == "" for p in added_out)
        for probe in added_out:  # never another relation of the language family (native language vs languages spoken)
            relation = relation_of(probe.prompt, "Danielle Darrieux")
            assert relation is None or relation.family != "language"
        prompts = [p.prompt.casefold() for p in (*case.in_scope, *case.out_of_scope)]
        assert len(prompts) == len(set(prompts))


def test_evaluation_adds_other_facts_of_each_subject_apart_and_nothing_else():
    """`eval --other-facts N`: N out-of-scope probes a case in group other_fact, of every relation
    (held-out ones too) but the edit's family, the same on every call; questions get other
    questions; a case whose prompt does not name its subject is left as it is."""
    unnamed = EditCase(Edit("Who wrote it?", "Marlowe", subject="Hamlet"), (Probe("Who wrote it?", "Marlowe"),), ())
    cases = [DARRIEUX, ZSRE, *QUESTIONS, unnamed]
    extended = with_other_facts(cases, 2)
    assert extended == with_other_facts(cases, 2) and extended[-1] == unnamed
    for case, before in zip(extended, cases):
        assert case.in_scope == before.in_scope and case.out_of_scope[: len(before.out_of_scope)] == before.out_of_scope
    added = extended[0].out_of_scope[1:]
    assert len(added) == 2 and all(p.group == "other_fact" and p.answer == "" and "Danielle Darrieux" in p.prompt for p in added)
    assert all(relation_of(p.prompt, "Danielle Darrieux").family != "language" for p in added)
    assert {p.prompt for p in extended[1].out_of_scope[1:]} <= {"Which river flows through UniFirst?", "Who founded UniFirst?"}
    held = {relation_of(p.prompt, "Danielle Darrieux").id for seed in range(40) for p in with_other_facts([DARRIEUX], 2, seed)[0].out_of_scope[1:]}
    assert "P20" in held  # relations held out of training are asked too


def test_held_out_relations_never_appear_in_built_probes():
    held = [r.id for r in RELATIONS if r.family not in ("language", "occupation")]
    augmenter = Augmenter([DARRIEUX], held_out=held)
    for seed in range(30):
        case = augmenter(DARRIEUX, random.Random(seed))
        relations = {relation_of(p.prompt, "Danielle Darrieux") for p in case.out_of_scope[1:]} - {None}
        assert relations <= {BY_ID["P106"]}


def test_questions_get_other_questions_about_their_subject():
    augmenter = Augmenter([ZSRE, *QUESTIONS], SAME_TARGET)
    cases = [augmenter(ZSRE, random.Random(seed)) for seed in range(5)]
    assert all([p.prompt for p in case.in_scope] == [p.prompt for p in ZSRE.in_scope] for case in cases)  # no relation: no new wordings
    built = {p.prompt for case in cases for p in case.out_of_scope[1:]}
    assert "Which river flows through UniFirst?" in built and "Who founded UniFirst?" in built
    # a question of the same wording as the case's own is never a negative
    assert not any(p.prompt == "Which river flows through Khartoum?" for p in augmenter(QUESTIONS[0], random.Random(0)).out_of_scope)


def test_a_question_is_never_a_negative_for_another_wording_of_its_own_relation():
    """Two zsRE-style cases that share a question wording ("What was {}'s job?") join their wordings
    into one group, so the case asking "What was Bob's career?" never draws "What was Bob's
    occupation?" (the other case's question) as another fact of Bob, though the two share no word."""
    def question(subject: str, *wordings: str) -> EditCase:
        probes = tuple(Probe(w.format(subject), "pilot") for w in wordings)
        return EditCase(Edit(probes[0].prompt, "pilot", subject=subject), probes, ())

    cases = [question("Ada", "What was {}'s occupation?", "What was {}'s job?"), question("Bob", "What was {}'s career?", "What was {}'s job?"),
             question("Cy", "Who founded {}?", "Who set up {}?")]
    groups = question_groups(cases)
    assert groups["What was {}'s occupation?"] == groups["What was {}'s career?"] != groups["Who founded {}?"] == groups["Who set up {}?"]
    def built(config: AugmentConfig) -> set[str]:
        augmenter = Augmenter(cases, config)
        return {p.prompt for seed in range(20) for p in augmenter(cases[1], random.Random(seed)).out_of_scope}

    grouped = built(AugmentConfig(target_forms=0.0, question_groups=True))
    assert "Who founded Bob?" in grouped and "What was Bob's occupation?" not in grouped
    assert "What was Bob's occupation?" in built(SAME_TARGET)  # off by default: the shipped recipe's data


def test_cases_without_their_subject_are_left_as_they_are():
    plain = EditCase(Edit("The sky is", "green"), (Probe("The sky is", "green"),), ())
    assert Augmenter([plain], SAME_TARGET)(plain, random.Random(0)) == plain


def test_split_by_relation_and_fixed_validation_wordings():
    place = counterfact_case("{} is located in the country of", "Biure", "Spain", "Girona, which is located in")
    kept, held = split_by_relation([DARRIEUX, place], ["P17"])
    assert kept == [DARRIEUX] and held == [place]
    assert augmented_validation([DARRIEUX, place], seed=1) == augmented_validation([DARRIEUX, place], seed=1)


def test_target_forms_rewrite_the_edit_and_its_in_scope_answers_together():
    forms = {target_form("Rome", random.Random(seed)) for seed in range(200)}
    assert any(f.startswith("Rome (") and f.endswith(")") for f in forms)  # "Rome (city)": the parenthesis is the last token
    assert any(f.startswith("Rome, ") for f in forms)
    assert any(not f.isascii() for f in forms) and any(f[:1].isdigit() for f in forms)
    always = Augmenter([DARRIEUX], AugmentConfig(target_forms=1.0))
    for seed in range(20):
        case = always(DARRIEUX, random.Random(seed))
        assert case.edit.target_new != "English" and case.edit.prompt == DARRIEUX.edit.prompt
        assert {p.answer for p in case.in_scope} == {case.edit.target_new}  # the edit prompt and every new wording
        assert [p.answer for p in case.out_of_scope[:1]] == ["French"]  # out of scope untouched
    never = Augmenter([DARRIEUX], AugmentConfig(target_forms=0.0))
    assert all(never(DARRIEUX, random.Random(seed)).edit.target_new == "English" for seed in range(20))


def test_qualified_forms_keep_the_target_and_only_qualify_it():
    forms = {target_form("Rome", random.Random(seed), qualified_only=True) for seed in range(200)}
    assert all(f.startswith(("Rome (", "Rome, ")) for f in forms)  # never a number, a date or another script
    assert any(f.endswith(")") for f in forms) and any(", " in f for f in forms)
    qualified = Augmenter([DARRIEUX], AugmentConfig(target_forms=1.0, qualified_forms_only=True))
    assert all(qualified(DARRIEUX, random.Random(seed)).edit.target_new.startswith("English") for seed in range(20))
    validation = augmented_validation([DARRIEUX], AugmentConfig(target_forms=1.0, qualified_forms_only=True))
    assert validation[0].edit.target_new.startswith("English") and validation[0].edit.target_new != "English"


def test_validation_rewrites_targets_only_when_the_run_did():
    cases = [DARRIEUX, counterfact_case("{} is located in the country of", "Biure", "Spain", "Girona, which is located in")]
    assert [c.edit.target_new for c in augmented_validation(cases)] == ["English", "Spain"]
    rewritten = augmented_validation(cases, AugmentConfig(target_forms=1.0))
    assert all(c.edit.target_new not in ("English", "Spain") for c in rewritten)
    assert rewritten == augmented_validation(cases, AugmentConfig(target_forms=1.0))  # fixed seed: the same cases each validation


def test_scope_cases_teach_other_relations_and_train_no_answer():
    augmenter = Augmenter([DARRIEUX, ZSRE, *QUESTIONS], AugmentConfig(scope_cases=1.0))
    built = [augmenter.scope_case(DARRIEUX, random.Random(seed)) for seed in range(20)]
    assert all(case is not None and case.scope_only and case.edit.target_new == "" for case in built)
    for case in built:
        relation = next(r for r in SCOPE_RELATIONS if case.edit.prompt in {t.format("Danielle Darrieux") for t in r.templates})
        # in scope: the edit's wording first, then every other wording of its relation, all with the subject
        assert case.in_scope[0].prompt == case.edit.prompt
        assert {p.prompt for p in case.in_scope} == {t.format("Danielle Darrieux") for t in relation.templates}
        # out of scope: the same relation of another subject, another relation of this subject
        stranger, other_fact = (p.prompt for p in case.out_of_scope)
        assert "Danielle Darrieux" not in stranger and any(stranger == t.format(s) for t in relation.templates for s in augmenter.subjects)
        assert "Danielle Darrieux" in other_fact and other_fact not in {p.prompt for p in case.in_scope}
    assert len({case.edit.prompt for case in built}) > 10  # drawn afresh each time
    # never a relation the case's own prompt already asks (a question about a founder: no "founded by" case)
    founded = [augmenter.scope_case(QUESTIONS[2], random.Random(seed)) for seed in range(50)]
    assert not any("found" in p.prompt.casefold() for case in founded for p in case.in_scope)
    # off by default, and then not even a random draw is taken (the shipped recipe's batches stay as they were)
    rng = random.Random(0)
    assert Augmenter([DARRIEUX, ZSRE], SAME_TARGET).scope_case(DARRIEUX, rng) is None and rng.random() == random.Random(0).random()


def test_scope_answers_give_scope_cases_a_target_that_trains_the_counterfactual_model():
    cases = [DARRIEUX, ZSRE, *QUESTIONS]
    augmenter = Augmenter(cases, AugmentConfig(scope_cases=1.0, scope_answers=True))
    plain = Augmenter(cases, AugmentConfig(scope_cases=1.0))
    assert set(SCOPE_TARGETS) == {r.id for r in SCOPE_RELATIONS}  # every scope relation has answers of its kind
    for seed in range(20):
        case = augmenter.scope_case(DARRIEUX, random.Random(seed))
        relation = next(r for r in SCOPE_RELATIONS if case.edit.prompt in {t.format("Danielle Darrieux") for t in r.templates})
        # an answer of its relation's kind, given to every in-scope wording; out of scope as without answers
        assert not case.scope_only and case.edit.target_new in SCOPE_TARGETS[relation.id]
        assert {p.answer for p in case.in_scope} == {case.edit.target_new} and {p.answer for p in case.out_of_scope} == {""}
        without = plain.scope_case(DARRIEUX, random.Random(seed))
        assert [p.prompt for p in case.in_scope] == [p.prompt for p in without.in_scope]
    # such a case trains answers and may be the edit a decline reads
    case = augmenter.scope_case(DARRIEUX, random.Random(0))
    inputs, targets = counterfactual_examples([case], random.Random(0), drop_subject=0.0)
    assert targets and set(targets) == {case.edit.target_new} and all(case.edit.prompt in i for i in inputs)
    probes, labels = scope_matrix([case])
    logits = torch.zeros(labels.shape)
    assert decline_examples([case], probes, labels, logits, random.Random(0), drop_subject=0.0)


def test_near_subjects_put_the_edits_wordings_to_other_names_that_share_a_word():
    position = "Which position does {} play? They play as"
    brooks = counterfact_case(position, "Ahmad Brooks", "goaltender", "Tarvaris Jackson, who plays the position")
    cases = [
        brooks,
        counterfact_case("{} plays in the position of", "Aaron Brooks", "pitcher"),  # same relation: never its negative
        counterfact_case("The mother tongue of {} is", "Garth Brooks", "French"),
        counterfact_case("The mother tongue of {} is", "Ahmad Brooks Stadium", "French"),  # a name within another: two entities
        counterfact_case("The mother tongue of {} is", "Louisiana Highway 14", "French"),
        counterfact_case("{}, in", "Louisiana Highway 91", "England"),
        DARRIEUX,
    ]
    augmenter = Augmenter(cases, AugmentConfig(near_subjects=1))
    assert augmenter.near_subjects_of("Ahmad Brooks", "P413") == ["Ahmad Brooks Stadium", "Garth Brooks"]  # likest spelling first
    assert augmenter.near_subjects_of("Louisiana Highway 91", "P131") == ["Louisiana Highway 14"]  # numbers are words
    assert augmenter.near_subjects_of("Danielle Darrieux", "P103") == []
    relation = BY_ID["P413"]
    wordings = {t.format(s) for t in (*relation.templates, f"The {relation.label} of {{}} is") for s in ("Garth Brooks", "Ahmad Brooks Stadium")}
    for seed in range(10):  # one of the edit's in-scope wordings, with a near-duplicate subject
        assert len([p for p in augmenter(brooks, random.Random(seed)).out_of_scope if p.prompt in wordings]) == 1
    # off by default: no such probe
    assert not any(p.prompt in wordings for p in Augmenter(cases)(brooks, random.Random(0)).out_of_scope)


def test_scope_relations_are_none_of_counterfacts_and_leave_death_unseen():
    counterfact = {t for r in RELATIONS for t in r.templates}
    assert len(SCOPE_RELATIONS) >= 30 and not {r.id for r in SCOPE_RELATIONS} & {r.id for r in RELATIONS}
    for relation in SCOPE_RELATIONS:
        assert len(relation.templates) >= 3 and not set(relation.templates) & counterfact
        assert all(relation_of_text(t.format("Foo Bar")) is None for t in relation.templates)
        assert not {"died", "death", "buried", "passed", "dead"} & {w for t in relation.templates for w in t.casefold().split()}
