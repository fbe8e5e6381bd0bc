"""Evaluation mechanics on a tiny model: routing decisions show up in the right metrics."""

from __future__ import annotations

from dataclasses import replace

import pytest

from searc.data import EditCase, Probe
from searc.evaluate import evaluate
from searc.memory import Edit
from tests.conftest import make_system
from tests.test_editor import perturb_adapter

CASES = [
    EditCase(
        Edit("The Eiffel Tower is located in the city of", "Rome"),
        (Probe("The Eiffel Tower is located in the city of", "Rome"), Probe("The Eiffel Tower stands in", "Rome")),
        (Probe("The Louvre is located in the city of", "Paris"),),
    ),
    EditCase(
        Edit("The mother tongue of Danielle Darrieux is", "English"),
        (Probe("The mother tongue of Danielle Darrieux is", "English"), Probe("Danielle Darrieux speaks", "English")),
        (Probe("Michel Rocard is a native speaker of", "French"),),
    ),
]


def system_with_bias(bias: float):
    system = make_system("llama")
    perturb_adapter(system)
    system.classifier.scale.data.fill_(0.0)
    system.classifier.bias.data.fill_(bias)
    return system


@pytest.mark.parametrize("mode", ["single", "batch"])
def test_never_routing_keeps_locality_and_misses_every_edit(mode):
    report = evaluate(system_with_bias(-8.0), CASES, mode=mode)
    assert report.locality.generation == 1.0 and report.locality.teacher_forced == 1.0
    assert report.classifier["recall"] == 0.0 and report.classifier["false_route_rate"] == 0.0
    assert report.n_cases == 2 and report.mode == mode


def test_always_routing_breaks_locality_and_is_imprecise():
    single = evaluate(system_with_bias(8.0), CASES, mode="single")
    assert single.classifier["recall"] == 1.0 and single.classifier["false_route_rate"] == 1.0
    assert single.classifier["precision"] == pytest.approx(4 / 6)
    assert single.locality.generation < 1.0
    assert 0.0 <= single.classifier["declined_own_routes"] <= 1.0 and 0.0 <= single.classifier["declined_false_routes"] <= 1.0
    batch = evaluate(system_with_bias(8.0), CASES, mode="batch")
    # with every score equal the first edit wins: the second case's probes go to the wrong edit
    assert batch.classifier["recall"] == 0.5


def test_report_json_has_the_documented_keys():
    report = evaluate(system_with_bias(-8.0), CASES[:1]).to_json()
    assert {"reliability", "generalization", "locality", "classifier", "n_cases", "mode"} <= set(report)
    assert set(report["reliability"]) == {"teacher_forced", "generation"}


def test_bad_mode_and_empty_cases_are_refused():
    system = system_with_bias(0.0)
    with pytest.raises(ValueError):
        evaluate(system, CASES, mode="bulk")
    with pytest.raises(ValueError):
        evaluate(system, [])


def test_a_locality_prompt_asking_for_another_stored_edit_fact_is_claimed_in_batch_mode():
    from searc.evaluate import claims

    aaron = EditCase(
        Edit("Hank Aaron professionally plays the sport", "basketball", subject="Hank Aaron", target_true="baseball"),
        (Probe("Hank Aaron professionally plays the sport", "basketball"),),
        (Probe("Babe Ruth professionally plays the sport", "baseball"),),
    )
    ruth = EditCase(
        Edit("Babe Ruth is a native speaker of", "French", subject="Babe Ruth", target_true="English"),
        (Probe("Babe Ruth is a native speaker of", "French"),),
        (Probe("What sport does Hank Aaron play? They play", "baseball"),),  # aaron's fact
    )
    assert claims(aaron.edit, ruth.out_of_scope[0]) and not claims(ruth.edit, aaron.out_of_scope[0])
    assert not claims(aaron.edit, Probe("Hank Aaron was born in", "Mobile"))  # same subject, other fact
    always = system_with_bias(8.0)
    batch = evaluate(always, [aaron, ruth], mode="batch")
    assert batch.claimed_locality_prompts == 1
    assert batch.locality_all.generation <= batch.locality.generation
    single = evaluate(always, [aaron, ruth], mode="single")  # one edit stored: nothing to claim
    assert single.claimed_locality_prompts == 0
    never = evaluate(system_with_bias(-8.0), [aaron, ruth], mode="batch")
    assert never.locality.generation == never.locality_all.generation == 1.0


KNOWEDIT_LIKE = EditCase(
    Edit("What constellation is home to Butterfly Cluster?", "Orion", subject="Butterfly Cluster", target_true="Scorpius"),
    (
        Probe("What constellation is home to Butterfly Cluster?", "Orion"),
        Probe("What is the constellation where Butterfly Cluster is located?", "Orion", group="rephrase"),
        Probe("What constellation is home to M6?", "Orion", group="Subject_Aliasing"),
    ),
    (
        Probe("The constellation of Butterfly Cluster is", "Scorpius", group="Relation_Specificity"),  # the edited fact itself
        Probe("The country of Butterfly Cluster is", "Syria", ("Syrian Arab Republic",), group="Relation_Specificity"),
    ),
    (Probe("Another name of that constellation is", "Orion the Hunter", group="Reasoning"),),
)


@pytest.mark.parametrize("mode", ["single", "batch"])
def test_groups_are_scored_apart_and_the_own_edited_fact_is_claimed(mode):
    report = evaluate(system_with_bias(-8.0), [KNOWEDIT_LIKE, *CASES], mode=mode)
    assert set(report.groups) == {
        "generalization/rephrase", "generalization/Subject_Aliasing", "locality/Relation_Specificity", "portability/Reasoning"
    }
    assert report.group_sizes["locality/Relation_Specificity"] == 1  # the other one asks the edited fact: claimed
    assert report.claimed_locality_prompts == 1
    assert report.groups["locality/Relation_Specificity"].generation == 1.0  # never routed
    assert report.classifier["false_route_rate locality/Relation_Specificity"] == 0.0
    assert "locality/Relation_Specificity (n=1)" in report.table()


def test_any_alias_counts_as_a_right_answer():
    from searc.evaluate import starts_with_any

    assert starts_with_any(" Syrian Arab Republic, a country", ("Syria", "Syrian Arab Republic"))
    assert not starts_with_any(" Lebanon", ("Syria", "Syrian Arab Republic"))
    assert not starts_with_any(" anything", ("",))


def test_more_stored_edits_share_the_memory_and_need_batch_mode():
    extra = [
        EditCase(Edit(f"The colour of object {i} is", "blue"), (Probe(f"The colour of object {i} is", "blue"),), ())
        for i in range(5)
    ]
    repeated = EditCase(CASES[0].edit, CASES[0].in_scope, ())  # the probed case's own prompt: stored once
    report = evaluate(system_with_bias(-8.0), CASES, mode="batch", stored=[repeated, *extra, extra[0]])
    assert report.edits_in_memory == 7 and report.n_cases == 2
    with pytest.raises(ValueError, match="batch mode"):
        evaluate(system_with_bias(-8.0), CASES, mode="single", stored=extra)


def test_batch_mode_sets_aside_a_case_that_repeats_a_prompt():
    repeat = EditCase(Edit(CASES[0].edit.prompt, "Madrid"), (Probe(CASES[0].edit.prompt, "Madrid"),), ())
    report = evaluate(system_with_bias(-8.0), [*CASES, repeat], mode="batch")
    assert report.n_cases == 2 and report.set_aside_cases == 1 and report.edits_in_memory == 2
    assert "1 re-editing an earlier case's fact set aside" in report.table()


def _case(prompt: str, target: str, subject: str, locality: str = "") -> EditCase:
    return EditCase(Edit(prompt, target, subject=subject), (Probe(prompt, target),), (Probe(locality, "x"),) if locality else ())


def test_a_case_re_editing_an_earlier_case_fact_is_set_aside():
    from searc.evaluate import one_edit_per_fact

    cases = [
        _case("The mother tongue of Danielle Darrieux is", "English", "Danielle Darrieux"),
        _case("Danielle Darrieux was born in", "Rome", "Danielle Darrieux"),  # other relation: kept
        _case("Danielle Darrieux is a native speaker of", "Dutch", "Danielle Darrieux"),  # same relation (P103)
        _case("What voice type is Lola Beeth?", "mezzo-soprano", "Lola Beeth"),  # zsRE: relation unknown
        _case("What is the vocal range for Lola Beeth?", "mezzo soprano", "Lola Beeth"),  # same subject: same question
        _case("What is the vocal range for Licia Albanese?", "soprano", "Licia Albanese"),
    ]
    kept, repeats = one_edit_per_fact(cases)
    assert [c.edit.target_new for c in kept] == ["English", "Rome", "mezzo-soprano", "soprano"]
    assert [c.edit.target_new for c in repeats] == ["Dutch", "mezzo soprano"]


def test_a_probe_asking_a_stored_edit_relation_is_claimed_whatever_old_answer_the_data_gives():
    from searc.evaluate import claims

    twin = Edit("Helsinki is a twin city of", "Istanbul", subject="Helsinki", target_true="Tallinn")
    assert claims(twin, Probe("The twin city of Helsinki is", "Saint Petersburg"))  # same relation, another old twin
    country = Edit("Toronto is located in the country of", "Denmark", subject="Toronto", target_true="Canada")
    assert claims(country, Probe("Toronto belongs to the continent of", "North America"))  # same family: a consequence
    assert not claims(country, Probe("The mother tongue of Toronto is", "English"))  # other family
    assert not claims(twin, Probe("The twin city of Oslo is", "Helsinki"))  # the subject only as an answer


def test_a_knowedit_probe_asking_the_edited_property_by_its_label_is_claimed_whatever_its_old_answer():
    from searc.evaluate import claims

    label = Edit("Which was the record label for Ray Guns Are Not Just the Future?", "Roc Nation",
                 subject="Ray Guns Are Not Just the Future", target_true="Blue Note Records")
    specificity = "Relation_Specificity"
    assert claims(label, Probe("The record label of Ray Guns Are Not Just the Future is", "Blue Note", group=specificity))
    assert claims(label, Probe("Ray Guns Are Not Just the Future record label", "Blue Note", group=specificity))
    assert not claims(label, Probe("The genre of Ray Guns Are Not Just the Future is", "jazz", group=specificity))
    assert not claims(label, Probe("The record label of Ray Guns Are Not Just the Future is", "Blue Note"))  # not KnowEdit's form
    voice = Edit("What type of voice does Ernst Kraus have?", "baritone", subject="Ernst Kraus", target_true="tenor")
    assert claims(voice, Probe("The voice type of Ernst Kraus is", "Heldentenor", group=specificity))  # any order
    father = Edit("Who was \u00c9vrard Chauveau's father?", "Michel Chauveau", subject="\u00c9vrard Chauveau", target_true="Fran\u00e7ois")
    assert not claims(father, Probe("The family name of \u00c9vrard Chauveau is", "Chauveau", group=specificity))  # "name" unasked
    part = Edit("What constellation does NGC 634 belong to?", "Triangulum", subject="NGC 634", target_true="Cassiopeia")
    assert not claims(part, Probe("NGC 634 part of", "Milky Way", group=specificity))


def test_failing_probes_are_kept_with_why():
    report = evaluate(system_with_bias(-8.0), CASES, mode="batch")  # never routed: every edit missed
    kinds = [(f.kind, f.prompt) for f in report.failures]
    assert kinds == [(k, p.prompt) for c in CASES for k, p in zip(("reliability", "generalization"), c.in_scope)]
    first = report.failures[0]
    assert not first.routed and first.expected == "Rome" and first.best_edit.target_new == "Rome"
    assert first.edit.prompt == CASES[0].edit.prompt and report.failures[-1].edit.target_new == "English"
    assert report.to_json()["failures"][0]["prompt"] == CASES[0].edit.prompt


def test_portability_ceilings_count_what_the_base_model_answers_told_the_edit_and_alone():
    system = system_with_bias(8.0)
    steps = (Probe("Rome is located in the country of", "Italy"), Probe("The country of Rome is", "Italy"))
    ported = EditCase(
        CASES[0].edit, CASES[0].in_scope, CASES[0].out_of_scope,
        (Probe("The Eiffel Tower is in the country of", "Italy", group="New Question", second_steps=steps),
         Probe("The Eiffel Tower's continent is", "Europe", group="New Question")),
    )
    generate = system.base.generate

    def knows(alone_wording):
        """A base model that answers Italy told the edit, and alone only in `alone_wording`."""
        def fake(prompts, max_new_tokens=None, **options):
            right = lambda p: (p.startswith("New fact:") and "country" in p) or p == alone_wording
            return [replace(o, text=" Italy" if right(p) else " ?") for p, o in zip(prompts, generate(prompts, max_new_tokens, **options))]
        return fake

    system.base.generate = knows(alone_wording=None)
    report = evaluate(system, [ported], mode="batch")
    ceiling = report.ceilings["portability/New Question"]
    assert ceiling.probes == 2 and ceiling.told == 0.5 and ceiling.second_step == 0.0
    assert ceiling.within_second_step != ceiling.within_second_step  # nan: no probe within it
    assert 0.0 <= ceiling.within_told <= 1.0 and report.ceilings["portability"].probes == 2
    assert "portability/New Question ceiling: told the edit" in report.table()
    system.base.generate = knows(alone_wording="The country of Rome is")  # the second wording suffices
    assert evaluate(system, [ported], mode="batch").ceilings["portability/New Question"].second_step == 1.0


def test_only_the_asked_kinds_of_probe_are_scored_with_the_same_memory():
    report = evaluate(system_with_bias(-8.0), CASES, mode="batch", kinds=("locality",))
    assert report.locality.generation == 1.0 and report.edits_in_memory == 2
    assert report.reliability.generation != report.reliability.generation  # nan: not asked
    with pytest.raises(ValueError, match="kinds"):
        evaluate(system_with_bias(-8.0), CASES, kinds=("rephrase",))


def test_own_edit_routed_scores_what_the_counterfactual_model_answers_with_the_right_edit():
    """A classifier that routes nothing misses every in-scope probe; had it routed them to their own
    edit, the counterfactual model's answers would count. One that routes everything (one edit
    in memory) already answers from the own edit: the figure is its real one."""
    from searc.counterfactual import counterfactual_input

    never = system_with_bias(-8.0)
    never.decline_threshold = 1.0  # the tiny model's end probability never reaches it: no declines
    case = CASES[0]
    outputs = never.counterfactual.generate(
        [counterfactual_input(case.edit, p.prompt) for p in case.in_scope], max_new_tokens=2, answer=True
    )
    case = replace(case, in_scope=tuple(Probe(p.prompt, g.text.strip()) for p, g in zip(case.in_scope, outputs)))
    report = evaluate(never, [case], mode="single")
    assert report.reliability.generation == 0.0 and report.generalization.generation == 0.0
    assert report.own_edit_routed == {"reliability": 1.0, "generalization": 1.0}
    assert "generalization with its own edit routed" in report.table()
    always = system_with_bias(8.0)
    always.decline_threshold = 1.0
    routed = evaluate(always, [case], mode="single")
    assert routed.own_edit_routed == {"reliability": routed.reliability.generation, "generalization": routed.generalization.generation}


def test_a_rewording_that_asks_another_fact_is_counted_apart():
    """CounterFact's "X was born in" as a paraphrase of X's mother tongue asks the place of birth:
    it is left out of generalization (and the classifier's in-scope figures), and kept in
    generalization_all. Nothing is routed, so each probe gets the base output: the born-in probe's
    answer is that output (right), the true rewording's is not."""
    never = system_with_bias(-8.0)
    subject = "Thomas Joannes Stieltjes"
    born_in, speaks = f"{subject} was born in", f"{subject} speaks the language"
    base = never.base.generate([born_in], max_new_tokens=3)[0].text.strip()
    case = EditCase(
        Edit(f"The mother tongue of {subject} is", "English", subject=subject),
        (Probe(f"The mother tongue of {subject} is", "English"), Probe(born_in, base), Probe(speaks, "English")),
        (Probe("Arend Lijphart is a native speaker of", "Dutch"),),
    )
    report = evaluate(never, [case], mode="batch")
    assert report.other_fact_rewordings == 1
    assert report.generalization.generation == 0.0 and report.generalization_all.generation == 0.5
    assert report.own_edit_routed["generalization"] < 1.0  # the true rewording alone: the tiny model does not answer "English"
    assert "rewordings asking another fact" in report.table() and "generalization_all" in report.table()
    plain = evaluate(never, [replace(case, in_scope=case.in_scope[::2])], mode="batch")
    assert plain.other_fact_rewordings == 0 and plain.generalization_all.generation == plain.generalization.generation


def test_own_edit_routed_is_scored_by_group():
    report = evaluate(system_with_bias(-8.0), [KNOWEDIT_LIKE], mode="batch")
    assert list(report.own_edit_routed) == ["reliability", "generalization", "generalization/Subject_Aliasing", "generalization/rephrase"]
