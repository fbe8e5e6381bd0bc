"""Relations of CounterFact's edits, read from their prompt templates.

CounterFact's prompts are relation templates filled with the subject ("The mother tongue of {} is",
"{} is a native speaker of"): 215 templates of 31 Wikidata relations in the train and val splits.
Knowing a case's relation lets training build what the raw data lacks (see `searc.augment`):
the same fact in other wordings (other templates of the relation, filled with the subject: in
scope) and *other* facts of the same subject (templates of other relations: out of scope), and
lets validation and evaluation group cases by relation, so that a relation can be held out of
training entirely.

A few templates are too short to tell their relation ("{}, in", "{} plays", "{}, the"); they are
`AMBIGUOUS`: a case with one has no known relation, and they are never used to build probes.
Relations that answer the same kind of question in closely related ways (city, country and
continent of a place; a player's position and sport) share a `family`: a template of another
relation of the same family is neither a positive nor a negative for an edit (changing a
landmark's city may well change its country: that is the portability issue, not scope).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from searc.data import EditCase, Probe


@dataclass(frozen=True)
class Relation:
    id: str  # Wikidata property
    label: str  # Wikidata label, for cloze wordings ("The {label} of {subject} is")
    family: str
    templates: tuple[str, ...]


RELATIONS: tuple[Relation, ...] = (
    Relation("P30", "continent", "place", ("{} is located in the continent", "{} belongs to the continent of", "{} is a part of the continent of")),
    Relation("P17", "country", "place", ("{} is located in the country of", "{}, which is located in", "{}, located in")),
    Relation("P276", "location", "place", ("{} can be found in", "The location of {} is", "Where is {}? It is located in", "{} is within")),
    Relation("P159", "headquarters location", "place", (
        "The headquarter of {} is located in", "The headquarters of {} is in", "{}'s headquarters are in", "{} is based in",
        "{}, whose headquarters are in", "The headquarter of {} is in", "{} is headquartered in")),
    Relation("P740", "location of formation", "place", (
        "{} originates from", "{} originated from", "{} formed in", "{}, that was formed in", "{} was formed in", "{} that was founded in",
        "{}, founded in", "{} was founded in", "{} started in", "{} was started in", "{}, that was started in")),
    Relation("P495", "country of origin", "place", (
        "{} was created in the country of", "{}, created in", "{}, that was created in", "{} was created in", "{} was developed in",
        "{}, developed in", "{}, that was developed in", "{} was formulated in", "{}, formulated in", "{}, that was formulated in",
        "{} originated in", "{}, that originated in", "{}, that was from", "{} was from")),
    Relation("P103", "native language", "language", (
        "The mother tongue of {} is", "The native language of {} is", "{} is a native speaker of", "{}, a native", "{}, speaker of")),
    Relation("P1412", "languages spoken, written or signed", "language", (
        "{} speaks the language", "{} speaks", "{} writes in", "The language used by {} is", "{} spoke the language")),
    Relation("P37", "official language", "language", (
        "The official language of {} is", "In {}, an official language is", "The law in {} declares the language", "In {}, they understand",
        "In {}, the language spoken is")),
    Relation("P364", "original language of work", "language", (
        "The original language of {} is", "The original language of {} was", "The language of {} is", "The language of {} was",
        "{} was written in", "{} is written in")),
    Relation("P413", "position played on team", "sport", (
        "{} plays as", "{} plays in the position of", "{}, who plays the position", "Which position does {} play? They play as")),
    Relation("P641", "sport", "sport", ("{} professionally plays the sport", "What sport does {} play? They play", "{} is a professional")),
    Relation("P136", "genre", "genre", (
        "The genre played by {} is", "{} is known for performing", "What does {} play? They play", "{} performs", "{}, who plays")),
    Relation("P1303", "instrument", "instrument", (
        "{} plays the instrument", "{}, playing the", "{} plays the", "{}, performing on the", "{} performs on the")),
    Relation("P176", "manufacturer", "maker", (
        "{}, developed by", "{}, created by", "{} is developed by", "{} is created by", "{} is a product of", "{} is produced by",
        "{}, produced by", "{} was a product of", "{} was developed by", "{}, a product of", "{}, a product manufactured by",
        "{} was created by", "{}, a product created by", "{}, a product developed by")),
    Relation("P190", "twinned administrative body", "twin", ("What is the twin city of {}? It is", "The twin city of {} is", "{} is a twin city of")),
    Relation("P27", "country of citizenship", "citizenship", (
        "{} has a citizenship from", "{} is a citizen of", "{}, a citizen of", "{} holds a citizenship from", "{}, who is a citizen of",
        "{}, who holds a citizenship from", "{}, who has a citizenship from")),
    Relation("P937", "work location", "work location", (
        "{} was employed in", "{} worked in the city of", "{} found employment in", "{} used to work in", "{} worked in", "{} took up work in")),
    Relation("P449", "original broadcaster", "broadcaster", (
        "{} debuted on", "{} premieres on", "{} was released on", "{} was originally aired on", "{} is to debut on", "{} premiered on")),
    Relation("P106", "occupation", "occupation", (
        "The occupation of {} is", "{} works as", "{}'s profession is a", "{}'s profession is an", "{}, who works as", "The profession of {} is",
        "{}'s occupation is")),
    Relation("P19", "place of birth", "birth", ("{} was born in", "{} is native to", "{} was native to", "{} is originally from", "{} was originally from")),
    Relation("P20", "place of death", "death", (
        "{} died at", "{} died in the city of", "{} died in", "{} passed away in", "{} passed away at", "{}'s life ended in", "{} expired at",
        "{} lost their life at", "{} succumbed at")),
    Relation("P140", "religion", "religion", (
        "{} follows the religion of", "{} is follower of", "The official religion of {} is", "{} is affiliated with the religion")),
    Relation("P101", "field of work", "field", (
        "{}'s domain of work is", "{}'s area of work is", "{}'s expertise is", "The domain of activity of {} is", "{} works in the field of",
        "{}'s domain of activity is", "{} specializes in", "The domain of work of {} is", "{} works in the area of", "The expertise of {} is")),
    Relation("P39", "position held", "position held", (
        "{} holds the position of", "{} holds the title of", "{}, whose position is that of", "{}, who has the position of",
        "{}, who holds the position of", "{} has the position of", "{}'s position is")),
    Relation("P36", "capital", "capital", (
        "The capital of {} is", "{}, which has the capital city", "{}, which has the capital", "{}'s capital city is", "The capital city of {} is",
        "{}'s capital is", "{}'s capital,", "{}'s capital city,")),
    Relation("P138", "named after", "named after", (
        "{} is named for", "{}, named after", "{}, which is called after", "{}, which was named for", "{}, named for", "{} was called after",
        "{} is named after", "{}, which was named after", "{} is called after", "{} was named for", "{}, which is named for",
        "{}, which was called after", "{}, called after", "{} was named after", "{}, which is named after")),
    Relation("P463", "member of", "member", (
        "{} is a part of the", "{} is affiliated with the", "{} belongs to the organization of", "{} is a member of", "{} is affiliated with")),
    Relation("P108", "employer", "employer", ("{} works for", "{}, who is employed by", "{} is employed by", "{}, who works for")),
    Relation("P264", "record label", "label", (
        "{} is represented by music label", "{}'s record label is", "{} is represented by record label", "The music label that is representing {} is",
        "The music label representing {} is", "{}'s record company is", "{} recorded for")),
    Relation("P127", "owned by", "owner", ("{} is owned by", "{}'s owner", "{} owner")),
)

# Relations that neither CounterFact nor zsRE's training split edits, each in several wordings (cloze,
# statement, question), for scope-only training cases (`searc.augment.Augmenter.scope_case`): an
# edit of one wording, in scope its other wordings, out of scope the same relation of another
# subject and other facts of the same subject. They teach the classifier what "the same fact in
# other words" is beyond CounterFact's relations, so that it carries to relations it never saw. None
# is a relation CounterFact edits; death (place, date, cause, burial) is left out so that the held-out
# place of death stays unseen.
SCOPE_RELATIONS: tuple[Relation, ...] = tuple(Relation(pid, label, pid, templates) for pid, label, templates in (
    ("P569", "date of birth", ("{} was born on", "The date of birth of {} is", "{}'s birthday is", "When was {} born? On")),
    ("P26", "spouse", ("{} is married to", "The spouse of {} is", "{}'s husband or wife is", "Who is {} married to?")),
    ("P22", "father", ("The father of {} is", "{}'s father is", "{} is the child of the father", "Who is the father of {}?")),
    ("P25", "mother", ("The mother of {} is", "{}'s mother is", "{} was born to the mother", "Who is the mother of {}?")),
    ("P3373", "sibling", ("The sibling of {} is", "{}'s brother or sister is", "{} has a sibling named", "Who is the sibling of {}?")),
    ("P40", "child", ("The child of {} is", "{}'s son or daughter is", "{} is the parent of", "Who is the child of {}?")),
    ("P69", "educated at", ("{} studied at", "{} was educated at", "{} graduated from", "Where did {} study? At")),
    ("P1066", "student of", ("{} was a student of", "The teacher of {} was", "{} studied under", "Who taught {}?")),
    ("P166", "award received", ("{} received the award", "{} was awarded the", "The award received by {} is", "What award did {} win?")),
    ("P102", "member of political party", (
        "{} is a member of the political party", "{} belongs to the party", "The political party of {} is", "Which party does {} belong to?")),
    ("P54", "member of sports team", ("{} plays for the club", "The sports team of {} is", "{} signed for the team", "Which team does {} play for?")),
    ("P21", "sex or gender", ("The gender of {} is", "{} is of the sex", "What is the gender of {}?", "{}'s sex is")),
    ("P172", "ethnic group", ("The ethnic group of {} is", "{} belongs to the ethnic group", "{} is ethnically", "What is the ethnicity of {}?")),
    ("P241", "military branch", (
        "{} served in the military branch", "The military branch of {} is", "In which branch of the military did {} serve?",
        "{} was a soldier in the")),
    ("P607", "conflict", ("{} fought in the war", "The conflict {} took part in is", "Which war did {} serve in?", "{} saw action in the")),
    ("P412", "voice type", ("The voice type of {} is", "{} sings with the voice of a", "What voice type is {}?", "{}'s vocal range is")),
    ("P135", "movement", ("{} belongs to the art movement", "The movement of {} is", "Which movement was {} part of?", "{} is a leading figure of")),
    ("P2048", "height", ("The height of {} is", "{} is this tall:", "How tall is {}?", "{} stands at a height of")),
    ("P2044", "elevation above sea level", (
        "The elevation of {} is", "{} rises above sea level to", "How high above sea level is {}?", "{} lies at an altitude of")),
    ("P1082", "population", ("The population of {} is", "{} has a population of", "How many people live in {}?", "The number of inhabitants of {} is")),
    ("P38", "currency", ("{} has the currency", "The currency of {} is", "In {}, people pay with", "What currency is used in {}?")),
    ("P6", "head of government", (
        "The head of government of {} is", "{} is governed by", "The mayor or prime minister of {} is", "Who leads the government of {}?")),
    ("P571", "inception", ("{} was established in the year", "The inception of {} was", "When was {} established? In", "{} has existed since")),
    ("P112", "founded by", ("{} was founded by", "The founder of {} is", "Who founded {}?", "{} was set up by")),
    ("P169", "chief executive officer", (
        "The CEO of {} is", "{} is run by its chief executive", "Who is the CEO of {}?", "The chief executive officer of {} is")),
    ("P1128", "employees", ("The number of employees of {} is", "{} has a workforce of", "How many people work at {}?", "{} employs a staff of")),
    ("P84", "architect", ("The architect of {} was", "{} was designed by", "Who designed {}?", "{} is the work of the architect")),
    ("P186", "material used", ("{} is built from", "{} is made of", "The material of {} is", "What is {} made of?")),
    ("P50", "author", ("The author of {} is", "{} was written by", "Who wrote {}?", "{} is a book by")),
    ("P57", "director", ("{} was directed by", "The director of {} is", "Who directed {}?", "{} is a film by the director")),
    ("P86", "composer", ("The composer of {} is", "{} was composed by", "Who composed {}?", "The music of {} was written by")),
    ("P123", "publisher", ("{} was published by", "The publisher of {} is", "Who published {}?", "{} is brought out by the publisher")),
    ("P577", "publication date", ("{} was first published in", "The publication date of {} is", "When was {} published? In", "{} came out in the year")),
    ("P400", "platform", ("{} runs on the platform", "The platform of {} is", "On what platform is {} available?", "{} is available on")),
))

# Short templates that several relations share; a case with one of these has no known relation.
AMBIGUOUS = frozenset({
    "{} is located in", "{}, in", "{} is in", "{}, the", "{} plays", "{}, from", "{} from", "{}, by", "{}, of", "{} is a", "{} is from",
    "{}, released by", "{}, that is represented by", "{}, which is represented by", "{} is represented by", "{} label :",
})

BY_ID = {relation.id: relation for relation in RELATIONS}
_BY_TEMPLATE = {template: relation for relation in RELATIONS for template in relation.templates}


def template_of(prompt: str, subject: str | None) -> str | None:
    """The prompt with its subject replaced by "{}", or None without a subject in it."""
    if not subject or subject not in prompt:
        return None
    return prompt.replace(subject, "{}", 1)


def relation_of(prompt: str, subject: str | None) -> Relation | None:
    """The CounterFact relation of an edit prompt, or None (unknown template, ambiguous, no subject)."""
    template = template_of(prompt, subject)
    return _BY_TEMPLATE.get(template) if template else None


def relation_id(name: str) -> str:
    """A relation named by its Wikidata id or label, as its id; ValueError naming the choices."""
    for relation in RELATIONS:
        if name in (relation.id, relation.label):
            return relation.id
    raise ValueError(f"unknown relation {name!r}; known: {', '.join(r.id for r in RELATIONS)}")


@lru_cache(maxsize=1)
def _template_patterns() -> list[tuple[re.Pattern, Relation]]:
    longest_first = sorted(_BY_TEMPLATE, key=len, reverse=True)
    return [(re.compile("^" + re.escape(t).replace(r"\{\}", "(.+)") + "$"), _BY_TEMPLATE[t]) for t in longest_first]


def relation_of_text(prompt: str) -> Relation | None:
    """The relation of a prompt whose subject is unknown (a CounterFact locality prompt), by template match."""
    for pattern, relation in _template_patterns():
        if pattern.match(prompt):
            return relation
    return None


def case_relation(prompt: str, subject: str | None, neighbour_prompts: tuple[str, ...] = ()) -> Relation | None:
    """The relation of an edit: by its own template, else by its same-relation neighbours' prompts
    (CounterFact's locality prompts share the edit's relation, and often a clearer template)."""
    relation = relation_of(prompt, subject)
    for text in neighbour_prompts:
        relation = relation or relation_of_text(text)
    return relation


def case_relation_of(case: EditCase) -> Relation | None:
    """A case's CounterFact relation, by its prompt's template or its locality prompts'."""
    return case_relation(case.edit.prompt, case.edit.subject, tuple(p.prompt for p in case.out_of_scope))


# Words a Wikidata label shares with any question ("member *of* sports team", "designed *by*").
_LABEL_FILLERS = frozenset({"of", "the", "a", "an", "in", "by", "for", "to", "on", "at"})


def wikidata_label(prompt: str, subject: str) -> str | None:
    """The property label a KnowEdit relation-specificity prompt asks: its prompts are the label
    around the subject, "The record label of {} is" or "{} record label"; None in any other form."""
    cloze = re.fullmatch(r"The (.+) of " + re.escape(subject) + r" is", prompt)
    if cloze:
        return cloze.group(1)
    if prompt.startswith(subject + " "):
        return prompt[len(subject):].strip()
    return None


def _words(text: str) -> set[str]:
    return {word.casefold().removesuffix("s") for word in re.findall(r"\w+", text)}


def question_asks_label(question: str, label: str) -> bool:
    """Whether a question names every word of a relation's label, in any order and number
    ("What type of voice does Ernst Kraus have?" asks "voice type"; "Who are the cast members of
    Cherry Tree Lane?" asks "cast member")."""
    label_words = _words(label) - _LABEL_FILLERS
    return bool(label_words) and label_words <= _words(question)


def asks_another_fact(case: EditCase, rewording: Probe) -> bool:
    """Whether a rewording the data gives for the case's edit is, by its template, a wording of a
    relation of another family: it asks another fact of the subject. CounterFact words some
    language edits' paraphrase as a place of birth ("The mother tongue of Thomas Joannes Stieltjes
    is -> English" beside "Thomas Joannes Stieltjes was born in"); an editor that scopes by fact
    leaves that to the base model, one that scopes by subject answers "English". Evaluation and
    validation count such a rewording apart, as they count claimed locality prompts."""
    edited, asked = case_relation_of(case), relation_of(rewording.prompt, case.edit.subject)
    return edited is not None and asked is not None and edited.family != asked.family
