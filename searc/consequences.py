"""Consequences of an edit: probes that need the edited fact plus one step of the model's knowledge.

After "The Eiffel Tower is located in the city of -> Rome", "The Eiffel Tower is located in the
country of" is in the edit's scope, and its answer under the edit is Italy: what the base model
knows of the *new object* (Rome is in Italy), composed with the edit. No training file has such
probes, so they are made here from the unedited model's own knowledge:

1. every training edit (subject, relation, new object) whose relation gives its object a kind this
   module knows (a place, an organisation, a language, a position in a sport, a religion) has
   follow-on `Step`s: a place has a country, a capital, an official language (`STEPS`);
2. the unedited model is asked each step of each new object in two wordings ("Rome is located in
   the country of", "Rome is a city in the country of"), greedily; an answer is kept only when
   both wordings give it (one's words start the other's), it is not empty and echoes neither the
   question nor the object, and a country gets no country;
3. probes about the subject compose the edit with the step, in scope with that answer as target:
   a relation-and-step cloze and question ("The country of the location of {s} is", "What is the
   country of the location of {s}? It is"), and, where a relation of the step's own kind reads
   naturally of the subject, its templates ("{s} is located in the country of",
   "What sport does {s} play? They play").

The base model's answers are its beliefs, not checked facts: the counterfactual model learns to
answer as the base model would if the edit were true, which is what portability asks of it. Only
consequences the base model knows can be taught or reached this way (`evaluate.Ceiling` measures
the same bound on evaluation data).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Iterable, Mapping, Sequence

from searc.data import EditCase, Probe
from searc.lm import LanguageModel
from searc.relations import BY_ID, Relation, case_relation_of


@dataclass(frozen=True)
class Step:
    name: str  # what `searc train --consequence-steps` calls it
    label: str  # the follow-on relation, as in "The {label} of ..."
    ask: tuple[str, str]  # two wordings asking it of the new object ("{}")
    natural: tuple[str, ...] = ()  # wordings asking it of the edit's subject, where they read naturally


COUNTRY = Step("country", "country", ("{} is located in the country of", "{} is a city in the country of"), BY_ID["P17"].templates[:1])
CAPITAL = Step("capital", "capital", ("The capital of {} is", "The capital city of {} is"))
LANGUAGE = Step("language", "official language", ("The official language of {} is", "In {}, the language spoken is"))
HEADQUARTERS_COUNTRY = Step(
    "headquarters", "headquarters country", ("{} is headquartered in the country of", "The headquarters of {} are in the country of")
)
SPOKEN_IN = Step(
    "spoken-in", "country where it is spoken",
    ("The {} language is mainly spoken in the country of", "{} is a language spoken mainly in the country of"),
)
SPORT = Step("sport", "sport", ("The position of {} is played in the sport of", "A {} is a player in the sport of"), BY_ID["P641"].templates[:2])
FOUNDER = Step("founder", "founder", ("The founder of {} is", "{} was founded by"))
STEP_NAMES = tuple(s.name for s in (COUNTRY, CAPITAL, LANGUAGE, HEADQUARTERS_COUNTRY, SPOKEN_IN, SPORT, FOUNDER))
# How a consequence probe asks: "The country of the location of {s} is" (cloze), "What is the
# country of the location of {s}? It is" (question), "{s} is located in the country of" (natural,
# where the step has such a wording)
FORMS = ("cloze", "question", "natural")

# Steps per edited relation. A located thing's country reads naturally of the thing itself ("BMW
# is located in the country of"); a person's birthplace does not make the person a place. A relation
# whose object is a country (country, country of origin, citizenship) has no country step: "the
# country of the country of origin of X" has no answer. Continents are left out: SmolLM2-135M
# answers "Europe" for Boston, Brisbane and Bolivia alike, in both wordings.
PLACE_STEPS = (COUNTRY, CAPITAL, LANGUAGE)
STEPS: dict[str, tuple[Step, ...]] = {
    **{rid: PLACE_STEPS for rid in ("P276", "P159", "P740")},
    **{rid: (CAPITAL, LANGUAGE) for rid in ("P17", "P495", "P27")},
    **{rid: tuple(replace(s, natural=()) for s in PLACE_STEPS) for rid in ("P19", "P20", "P937", "P190")},
    **{rid: (HEADQUARTERS_COUNTRY,) for rid in ("P176", "P108", "P127", "P449", "P264")},
    **{rid: (SPOKEN_IN,) for rid in ("P103", "P1412", "P37", "P364")},
    "P413": (SPORT,),
    "P140": (FOUNDER,),
}

CONSEQUENCE = "consequence"  # the group of a consequence probe
Facts = Mapping[tuple[str, str], str]  # (new object, step label) -> the base model's answer
_NOT_ANSWERS = frozenset("a an this it its not no yes i you we they he she there here".split())
_CUT = re.compile(r"[.,;:!?\n()\"]| and | or | which | that | is | was ")


def answer_of(generation: str, max_words: int = 4) -> str:
    """The answer a greedy continuation gives: its text up to the first punctuation or clause, at
    most `max_words` words ("" when it says nothing usable)."""
    line = generation.lstrip(" ")
    if not line or line[0] == "\n":  # nothing on the line: the model went on to something else
        return ""
    words = _CUT.split(" " + line + " ", maxsplit=1)[0].split()
    if words and words[0].casefold() == "the":
        words = words[1:]
    if not words or len(words) > max_words or not words[0][0].isalnum() or words[0].casefold() in _NOT_ANSWERS:
        return ""
    return " ".join(words)


def agree(a: str, b: str) -> str:
    """The shorter of two answers when one's words start the other's ("New York" / "New York City"), else ""."""
    short, long = sorted((a.split(), b.split()), key=len)
    return " ".join(short) if short and [w.casefold() for w in long[: len(short)]] == [w.casefold() for w in short] else ""


def case_steps(case: EditCase, relation: Relation | None, names: Sequence[str] = STEP_NAMES) -> tuple[Step, ...]:
    """The steps of `names` that follow from a case's edit."""
    steps = STEPS.get(relation.id, ()) if relation is not None and case.edit.subject else ()
    return tuple(s for s in steps if s.name in names)


def check_step_names(names: Sequence[str]) -> tuple[str, ...]:
    return _some_of("consequence steps", names, STEP_NAMES)


def check_forms(forms: Sequence[str]) -> tuple[str, ...]:
    return _some_of("consequence forms", forms, FORMS)


def _some_of(what: str, names: Sequence[str], choices: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [n for n in names if n not in choices]
    if unknown or not names:
        raise ValueError(f"{what} must be some of {', '.join(choices)}, got {', '.join(unknown) or 'none'}")
    return tuple(names)


def known_facts(lm: LanguageModel, asks: Iterable[tuple[str, Step]], batch: int = 64, max_new_tokens: int = 6) -> dict[tuple[str, str], str]:
    """Ask the unedited `lm` each (object, step) in both wordings; keep the answers it gives
    consistently that do not echo the question ("capital of Albania") or the object. An object
    that is itself a country (another place's answer, or it has a capital) has no country."""
    wanted = sorted({(obj, step.label): step for obj, step in asks}.items())
    prompts = [template.format(obj) for (obj, _), step in wanted for template in step.ask]
    outputs = []
    for start in range(0, len(prompts), batch):
        outputs += [g.text for g in lm.generate(prompts[start : start + batch], max_new_tokens=max_new_tokens)]
    facts = {}
    for index, ((obj, label), step) in enumerate(wanted):
        answer = agree(answer_of(outputs[2 * index]), answer_of(outputs[2 * index + 1]))
        asked = {w.casefold() for template in step.ask for w in re.findall(r"\w+", template)}
        if answer and answer.casefold() != obj.casefold() and not {w.casefold() for w in answer.split()} & asked:
            facts[(obj, label)] = answer
    countries = {a.casefold() for (_, label), a in facts.items() if label == COUNTRY.label}
    countries |= {obj.casefold() for obj, label in facts if label == CAPITAL.label}
    return {(obj, label): a for (obj, label), a in facts.items() if not (label == COUNTRY.label and obj.casefold() in countries)}


def consequence_probes(case: EditCase, relation: Relation | None, facts: Facts, forms: Sequence[str] = FORMS) -> list[Probe]:
    """Every consequence probe of a case that `facts` allows, in the `forms` asked, the step's answer as its target."""
    subject, obj = case.edit.subject, case.edit.target_new
    probes = []
    for step in case_steps(case, relation):
        answer = facts.get((obj, step.label))
        if not answer:
            continue
        by_form = {
            "cloze": [f"The {step.label} of the {relation.label} of {subject} is"],
            "question": [f"What is the {step.label} of the {relation.label} of {subject}? It is"],
            "natural": [template.format(subject) for template in step.natural],
        }
        wordings = [wording for form in FORMS if form in forms for wording in by_form[form]]
        second_steps = tuple(Probe(template.format(obj), answer) for template in step.ask)
        probes += [Probe(w, answer, group=CONSEQUENCE, second_steps=second_steps) for w in wordings]
    return probes


def facts_for(lm: LanguageModel, cases: Sequence[EditCase], names: Sequence[str] = STEP_NAMES) -> dict[tuple[str, str], str]:
    """What the unedited model knows of the new objects of `cases`, in the steps of `names` (see `known_facts`)."""
    asks = [(case.edit.target_new, step) for case in cases for step in case_steps(case, case_relation_of(case), names)]
    return known_facts(lm, asks)


def with_consequences(lm: LanguageModel, cases: Sequence[EditCase]) -> list[EditCase]:
    """`cases` with their consequence probes added as portability probes (`searc eval
    --consequences`): what the unedited `lm` knows of each new object, composed with its edit,
    each probe with its second step for the ceiling. A case whose relation has no step, or whose
    object the model does not know consistently, gets none."""
    facts = facts_for(lm, cases)
    return [replace(case, portability=case.portability + tuple(consequence_probes(case, case_relation_of(case), facts))) for case in cases]
