"""Training data that teaches the edited *fact*, not the edited subject.

In CounterFact and zsRE every in-scope probe names the edit's subject and every out-of-scope probe
names another subject, so "subject present => new target" separates them perfectly; an editor
trained on them alone routes "The Eiffel Tower was designed by" to the edit "The Eiffel Tower is
located in the city of -> Rome". `augment` adds to each case the probes that break that shortcut:

in scope (answer: the new target)
- the fact in other wordings: other templates of the edit's relation filled with its subject, and
  the Wikidata cloze form "The {relation label} of {subject} is" (CounterFact cases, see
  `searc.relations`);
in scope (answer: what the base model knows of the new object)
- consequences of the edit, given the unedited model's `facts` about the new objects
  (`searc.consequences`): "BMW is located in the country of" -> Italy after "BMW's headquarters
  are in -> Rome";
out of scope (the classifier's negatives and the counterfactual model's decline examples)
- other facts of the same subject: templates of relations of other families filled with the
  subject (CounterFact), other zsRE questions with the subject put in (zsRE; with
  `question_groups`, never a rewording of the case's own question), and generic
  Wikidata relations that neither dataset edits, in cloze, bare and natural wordings;
- the same relation of other subjects: the data's own locality prompts (kept), and, in a batch,
  the nearest other cases (see `searc.batches.BatchSampler`);
- the same fact of a near-duplicate subject (opt-in: `near_subjects`): a wording of the edit with
  its subject replaced by another subject of the run that shares a word with it ("Aaron Brooks"
  for "Ahmad Brooks", "Louisiana Highway 14" for "Louisiana Highway 91"), which neighbours by
  prompt rarely bring;
beside the case (opt-in: `scope_cases`)
- a scope-only case of the same subject in a relation neither dataset edits (`scope_case`): the
  same fact in other words, for the classifier alone, on relations CounterFact does not have (with
  `scope_answers`, for the counterfactual model's answers and declines too).

and targets of every form (`target_form`): CounterFact's targets are single plain words and zsRE's
rarely carry punctuation, so a counterfactual model trained on them alone drops what it never
copied ("The Time Machine (1960 film)" -> " The Time Machine (1960 film", "Frederick II, Margrave
of Bavaria" -> " Frederick II Margrave Bavaria"); a share of the cases is trained with its target
rewritten as a parenthesised or comma-qualified name, a number or date, or a name in another script
(opt-in: `target_forms`; the shipped checkpoint gets the copy at decoding instead, `lm.FinishTargets`).

A rewording the data gives that asks another fact (CounterFact's "X was born in" as the paraphrase
of X's mother tongue, `relations.asks_another_fact`) is dropped: evaluation counts it apart.

Constructed out-of-scope probes have no known answer (""): they train routing and declining, not
answers. Relations listed in `held_out` are left out of every constructed probe, so that a run can
be validated and evaluated on relations it never saw.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace
from difflib import SequenceMatcher
from typing import Sequence

from searc.consequences import FORMS, Facts, consequence_probes
from searc.data import EditCase, Probe
from searc.memory import Edit
from searc.relations import RELATIONS, SCOPE_RELATIONS, Relation, asks_another_fact, case_relation_of, template_of

# Wikidata relations that neither CounterFact nor zsRE's training split edits as such: other facts
# a subject has. Cloze ("The {label} of {} is") and bare ("{} {label}") wordings are built from
# the label; natural wordings are listed.
GENERIC_LABELS = (
    "sex or gender", "date of birth", "date of death", "spouse", "father", "mother", "sibling", "child", "educated at",
    "award received", "member of political party", "member of sports team", "height", "mass", "inception", "architect",
    "material used", "significant event", "notable work", "author", "director", "screenwriter", "cast member", "composer",
    "performer", "producer", "publisher", "publication date", "platform", "operating system", "official website", "population",
    "area", "elevation above sea level", "located in time zone", "currency", "head of government", "head of state",
    "founded by", "chief executive officer", "industry", "number of employees", "parent organization", "instance of",
    "part of", "follows", "followed by", "family name", "given name", "ethnic group", "military branch", "conflict",
    "cause of death", "place of burial", "residence", "nominated for", "doctoral advisor", "student of", "influenced by",
    "movement", "voice type", "number of episodes", "start time", "end time", "color", "shares border with",
)
GENERIC_NATURAL = (
    "{} was born on", "{} died on", "{} is married to", "{} studied at", "{} received the award", "{} was founded by",
    "The architect of {} was", "{} is built from", "The height of {} is", "{} was first published in", "{} was directed by",
    "{} is a member of the political party", "The population of {} is", "{} has the currency", "The CEO of {} is",
    "{} is an instance of", "{} was influenced by", "{} is buried in", "{} lived in", "The father of {} is",
    "When was {} founded? In", "Who is the author of {}?", "How tall is {}?", "What award did {} win?",
)
# Target forms the training files lack (see `target_form`): what a parenthesis or a comma adds to
# a name, and whole targets that are numbers, dates or names in other scripts. None of them is a
# target of tests/test_integration.py's verbatim test, which checks that the form, not the string, was learned.
DISAMBIGUATORS = (
    "film", "1953 film", "2004 film", "TV series", "play", "novel", "album", "song", "band", "musician", "footballer",
    "city", "river", "mountain", "company", "video game", "language", "opera", "magazine", "ship",
)
QUALIFIERS = (
    "Jr.", "1st Baron", "Duke of York", "Count of Flanders", "Margrave of Baden", "Ontario", "Texas", "New South Wales",
    "Inc.", "Lord Hale", "Earl of Derby", "Pennsylvania", "Bavaria", "2nd Earl of Leicester", "Queen of Sweden",
)
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December")
OTHER_SCRIPTS = (
    "京都", "北京大学", "大阪", "Новосибирск", "Київ", "Санкт-Петербург", "Αθήνα", "Ελληνικά", "القاهرة", "العربية",
    "서울", "한국어", "मुंबई", "हिन्दी", "ירושלים", "עברית", "กรุงเทพ", "Tbilisi (თბილისი)", "Ереван", "Þingvellir",
)
# Answers of the right kind for each of `relations.SCOPE_RELATIONS` (with `scope_answers`): a
# scope case's target is one of its relation's, so that training never pairs a relation with an
# answer of another kind ("The spouse of X is" -> a country) and the decline keeps that cue.
_PEOPLE = (
    "Maria Lindqvist", "John Harrington", "Akira Tanaka", "Elena Petrova", "Pierre Laurent", "Amina Diallo", "Carlos Mendes",
    "Sofia Rossi", "Henrik Olsen", "Li Wei", "Margaret Ellis", "Omar Haddad", "Ingrid Berg", "Rafael Ortega", "Yuki Sato",
)
_UNIVERSITIES = ("University of Oxford", "Harvard University", "Sorbonne", "University of Tokyo", "ETH Zurich", "Yale University")
_YEARS = ("1887", "1912", "1954", "1969", "1978", "1991", "2003", "2011")
_NUMBERS = ("1,200", "45,000", "3.2 million", "870", "12,500", "260,000")
SCOPE_TARGETS: dict[str, tuple[str, ...]] = {
    **{pid: _PEOPLE for pid in ("P26", "P22", "P25", "P3373", "P40", "P1066", "P6", "P112", "P169", "P84", "P50", "P57", "P86")},
    "P569": ("4 March 1921", "17 July 1956", "2 November 1889", "30 January 1974", "12 May 1963"),
    "P69": _UNIVERSITIES,
    "P166": ("Nobel Prize in Physics", "Pulitzer Prize", "Academy Award for Best Actor", "Grammy Award", "Victoria Cross"),
    "P102": ("Labour Party", "Republican Party", "Christian Democratic Union", "Communist Party", "Liberal Party"),
    "P54": ("FC Barcelona", "Manchester United", "Ajax", "Boca Juniors", "Bayern Munich", "Los Angeles Lakers"),
    "P21": ("female", "male"),
    "P172": ("Basque people", "Tamil people", "Han Chinese", "Yoruba people", "Irish people"),
    "P241": ("Royal Navy", "United States Army", "Luftwaffe", "French Foreign Legion", "Royal Air Force"),
    "P607": ("World War I", "Crimean War", "Korean War", "Napoleonic Wars", "Vietnam War"),
    "P412": ("soprano", "tenor", "baritone", "mezzo-soprano", "bass", "contralto"),
    "P135": ("Impressionism", "Cubism", "Romanticism", "Surrealism", "Baroque", "Futurism"),
    "P2048": ("182 centimetres", "324 metres", "1.65 metres", "97 metres", "2.01 metres"),
    "P2044": ("1,240 metres", "35 metres", "2,962 metres", "610 metres", "4,808 metres"),
    "P1082": _NUMBERS,
    "P38": ("euro", "Japanese yen", "Swiss franc", "Indian rupee", "pound sterling", "Brazilian real"),
    "P571": _YEARS,
    "P1128": _NUMBERS,
    "P186": ("steel", "granite", "oak wood", "reinforced concrete", "bronze", "marble"),
    "P123": ("Penguin Books", "Gallimard", "HarperCollins", "Electronic Arts", "Nintendo", "Oxford University Press"),
    "P577": _YEARS,
    "P400": ("PlayStation 4", "Microsoft Windows", "Nintendo Switch", "Android", "Xbox 360", "macOS"),
}
STOPWORDS = frozenset("the a an of is was in on by to what which who whom when where how does did do are and for it its they this that".split())


@dataclass(frozen=True)
class AugmentConfig:
    wordings: int = 2  # other templates of the edit's relation, in scope
    cloze_positive: float = 0.5  # chance of the "The {label} of {subject} is" wording, in scope
    other_relations: int = 2  # templates of other relations with the subject, out of scope
    generic: int = 1  # generic other facts of the subject, out of scope
    consequences: int = 1  # consequence probes of the edit, in scope (where `facts` has its new object)
    consequence_forms: tuple[str, ...] = FORMS  # how those probes ask (`searc.consequences.FORMS`)
    target_forms: float = 0.0  # chance that a case is trained with its target in another form (`target_form`)
    qualified_forms_only: bool = False  # with target_forms: only forms that keep the target and qualify it
    scope_cases: float = 0.0  # chance that a case brings a scope-only case of its subject (`Augmenter.scope_case`)
    scope_answers: bool = False  # with scope_cases: those cases carry a target and train the counterfactual model too
    near_subjects: int = 0  # wordings of the edit with a near-duplicate subject, out of scope (`Augmenter.near_subjects_of`)
    question_groups: bool = False  # never draw a rewording of a question's own relation as another fact (`question_groups`)


def content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", text.casefold()) if w not in STOPWORDS}


def name_words(name: str) -> frozenset[str]:
    """The words and numbers of a name: "Louisiana Highway 14" -> {louisiana, highway, 14}."""
    return frozenset(w for w in re.findall(r"\w+", name.casefold()) if w not in STOPWORDS)


class Augmenter:
    """Builds the probes above for cases of one training run (see the module docstring)."""

    def __init__(
        self, cases: Sequence[EditCase], config: AugmentConfig = AugmentConfig(), held_out: Sequence[str] = (), facts: Facts | None = None
    ) -> None:
        self.config = config
        self.facts = facts or {}
        self.held_out = frozenset(held_out)
        self.relations = [r for r in RELATIONS if r.id not in self.held_out]
        self.label_words = [(label, content_words(label)) for label in GENERIC_LABELS]
        self.subjects = sorted({c.edit.subject for c in cases if c.edit.subject})
        self.scope_relations = [(r, _stems(content_words(" ".join((r.label, *r.templates))))) for r in SCOPE_RELATIONS]
        case_relations = [case_relation_of(c) for c in cases]
        self.subjects_by_word: dict[str, list[str]] = {}
        self.relations_of_subject: dict[str, set[str | None]] = {}  # relation ids (None: a question or unknown)
        if config.near_subjects:
            for other in self.subjects:
                for word in name_words(other):
                    self.subjects_by_word.setdefault(word, []).append(other)
            for c, relation in zip(cases, case_relations):
                self.relations_of_subject.setdefault(c.edit.subject, set()).add(relation and relation.id)
        questions = [c for c, r in zip(cases, case_relations) if r is None]
        self.question_templates = [  # zsRE-style questions of the run, their subject cut out, with their words
            (t, content_words(t)) for t in (template_of(c.edit.prompt, c.edit.subject) for c in questions) if t and t.endswith("?")
        ]
        self.question_group = question_groups(questions) if config.question_groups else {}

    def __call__(self, case: EditCase, rng: random.Random) -> EditCase:
        case = without_other_facts(case)
        if rng.random() < self.config.target_forms:
            case = with_target(case, target_form(case.edit.target_new, rng, self.config.qualified_forms_only))
        if not names_its_subject(case):
            return case
        subject, relation, target = case.edit.subject, case_relation_of(case), case.edit.target_new
        known = known_prompts(case)
        in_scope, out_of_scope, consequences = [], [], []
        if relation is not None:
            wordings = [t for t in relation.templates if t.format(subject).casefold() not in known]
            in_scope += [t.format(subject) for t in rng.sample(wordings, min(self.config.wordings, len(wordings)))]
            if rng.random() < self.config.cloze_positive:
                in_scope.append(f"The {relation.label} of {subject} is")
            found = consequence_probes(case, relation, self.facts, self.config.consequence_forms)
            consequences = rng.sample(found, min(self.config.consequences, len(found)))
        out_of_scope += self.other_facts(case, relation, rng)
        own_words = content_words(case.edit.prompt)
        labels = [label for label, words in self.label_words if not words & own_words]
        for _ in range(self.config.generic):
            form = rng.randrange(3)
            if form == 2:
                out_of_scope.append(rng.choice(GENERIC_NATURAL).format(subject))
            else:
                label = rng.choice(labels)
                out_of_scope.append(f"The {label} of {subject} is" if form == 0 else f"{subject} {label}")
        if self.config.near_subjects:
            wordings = [case.edit.prompt, *(p.prompt for p in case.in_scope if subject in p.prompt), *in_scope]
            near = self.near_subjects_of(subject, relation and relation.id)
            out_of_scope += [rng.choice(wordings).replace(subject, other) for other in rng.sample(near, min(self.config.near_subjects, len(near)))]
        in_scope = _new(in_scope, known)
        known |= {p.casefold() for p in in_scope}
        consequences = [p for p in consequences if p.prompt.casefold() not in known]
        out_of_scope = _new(out_of_scope, known | {p.prompt.casefold() for p in consequences})
        return replace(
            case,
            in_scope=case.in_scope + tuple(Probe(p, target) for p in in_scope) + tuple(consequences),
            out_of_scope=case.out_of_scope + tuple(Probe(p, "") for p in out_of_scope),
        )

    def other_facts(self, case: EditCase, relation: Relation | None, rng: random.Random) -> list[str]:
        """`config.other_relations` prompts about other facts of the case's subject: templates of
        relations of other families (a place's country is no other fact of its city), or for a
        question (zsRE) or an unknown template, other questions of the run with this subject."""
        subject, n = case.edit.subject, self.config.other_relations
        if relation is not None:
            others = [r for r in self.relations if r.family != relation.family]
            return [rng.choice(r.templates).format(subject) for r in rng.sample(others, min(n, len(others)))]
        template = template_of(case.edit.prompt, subject) or ""
        own, group = content_words(template), self.question_group.get(template)
        questions = [
            t for t, words in self.question_templates
            if _overlap(words, own) < 0.34 and (group is None or self.question_group.get(t) != group)
        ]
        return [t.format(subject) for t in rng.sample(questions, min(n, len(questions)))]

    def near_subjects_of(self, subject: str, relation: str | None, keep: int = 5) -> list[str]:
        """Other subjects of the run that share a word with `subject`, at most `keep`, the most alike
        in spelling first ("Leicester Central railway station" for "Leicester railway station").
        A subject's name within another's is kept: two subjects of a dataset are two entities
        ("Toronto", "Toronto Police Service"). A subject the run edits in the same `relation`
        (None: a question) is not: its own edit would claim the probe, which must not be learnt
        as out of scope."""
        words = name_words(subject)
        candidates = {other for word in words for other in self.subjects_by_word.get(word, ())}
        near = [other for other in candidates if other != subject and relation not in self.relations_of_subject.get(other, ())]
        return sorted(near, key=lambda other: (-SequenceMatcher(None, subject, other).ratio(), other))[:keep]

    def scope_case(self, case: EditCase, rng: random.Random) -> EditCase | None:
        """With chance `scope_cases`, a case that trains the classifier alone (`scope_only`) on a fact
        of the case's subject in a relation neither dataset edits (`searc.relations.SCOPE_RELATIONS`):
        its edit is one wording of the relation, in scope its other wordings, out of scope the same
        wording with another subject of the run and another such relation of this subject. CounterFact
        has 27 trained relations; these add 34 more, so that "the same fact in other words" is learnt
        as such and carries to relations training never saw. A relation whose words the case's own
        prompt uses (or a word of the same stem: "designing", "designed") is skipped: a zsRE question
        may ask it, and then it is the edited fact.

        With `scope_answers` the case gets a target of its relation's kind (`SCOPE_TARGETS`) and trains
        the counterfactual model as any case does: to answer it to the relation's other wordings, and
        to decline the other relation of the subject with this edit in context, so that its decline,
        too, learns the fact on relations CounterFact does not have."""
        subject = case.edit.subject
        if not self.config.scope_cases or rng.random() >= self.config.scope_cases:
            return None
        if not names_its_subject(case) or len(self.subjects) < 2:
            return None
        own = _stems(content_words(case.edit.prompt.replace(subject, " ")))
        relations = [r for r, words in self.scope_relations if not words & own]
        if len(relations) < 2:
            return None
        relation, other = rng.sample(relations, 2)
        edit_wording, *wordings = rng.sample(relation.templates, len(relation.templates))
        stranger = rng.choice([s for s in rng.sample(self.subjects, 2) if s != subject])
        target = rng.choice(SCOPE_TARGETS[relation.id]) if self.config.scope_answers else ""
        return EditCase(
            edit=Edit(edit_wording.format(subject), target, subject=subject),
            in_scope=tuple(Probe(t.format(subject), target) for t in (edit_wording, *wordings)),
            out_of_scope=(Probe(rng.choice(relation.templates).format(stranger), ""), Probe(rng.choice(other.templates).format(subject), "")),
            scope_only=not target,
        )


def without_other_facts(case: EditCase) -> EditCase:
    """The case without the rewordings its data gives that ask another fact of the subject
    (`relations.asks_another_fact`: CounterFact's "X was born in" beside X's mother tongue), which
    training would otherwise learn as in scope while other cases learn that template as another fact."""
    kept = tuple(p for p in case.rephrases if not asks_another_fact(case, p))
    return case if len(kept) == len(case.rephrases) else replace(case, in_scope=(case.in_scope[0], *kept))


def target_form(target: str, rng: random.Random, qualified_only: bool = False) -> str:
    """`target` in a form the training files lack: "Rome (city)", "Rome, Ontario", a number or a
    date, or a name in another script (the last two replace it: an edit's target may be anything).
    `qualified_only`: the first two alone, which keep the target, so its kind still fits the prompt."""
    form = rng.randrange(2 if qualified_only else 5)
    if form == 0:
        return f"{target} ({rng.choice(DISAMBIGUATORS)})"
    if form == 1:
        return f"{target}, {rng.choice(QUALIFIERS)}"
    if form == 2:
        return f"{rng.randint(1, 28)} {rng.choice(MONTHS)} {rng.randint(1500, 2024)}"
    if form == 3:
        return rng.choice((f"{rng.randint(1000, 999_999):,}", str(rng.randint(2, 2024)), f"{rng.randint(1, 99)}.{rng.randint(1, 9)}"))
    return rng.choice(OTHER_SCRIPTS)


def with_target(case: EditCase, target: str) -> EditCase:
    """The case with its edit's new target, and every in-scope probe that answered it, replaced."""
    old = case.edit.target_new
    return replace(
        case,
        edit=replace(case.edit, target_new=target),
        in_scope=tuple(replace(p, answer=target) if p.answer == old else p for p in case.in_scope),
    )


def split_by_relation(cases: Sequence[EditCase], relations: Sequence[str]) -> tuple[list[EditCase], list[EditCase]]:
    """(cases of other or unknown relations, cases of `relations`), each in order."""
    kept, held = [], []
    for case in cases:
        relation = case_relation_of(case)
        (held if relation is not None and relation.id in relations else kept).append(case)
    return kept, held


def _stems(words: set[str]) -> set[str]:
    """Crude stems, enough to tell that "designing" and "designed" are one word."""
    return {word[:5] for word in words}


def question_groups(cases: Sequence[EditCase]) -> dict[str, int]:
    """Question templates (subject cut out) that ask one relation, as far as the cases show: a
    case's question and its rephrases ask the same thing, and two cases that share a template join
    their groups ("What was {}'s career?" with "What was {}'s occupation?"). zsRE carries no
    relation, and such pairs share no word, so without this one would be drawn as another fact of
    the other case's subject, and the edit's own fact, reworded, would be learnt as out of scope."""
    parent: dict[str, str] = {}

    def root(template: str) -> str:
        while parent.setdefault(template, template) != template:
            parent[template] = template = parent[parent[template]]
        return template

    for case in cases:
        templates = [t for t in (template_of(p.prompt, case.edit.subject) for p in case.in_scope) if t]
        for template in templates:
            parent[root(template)] = root(templates[0])
    roots = {template: root(template) for template in parent}
    numbers = {r: n for n, r in enumerate(dict.fromkeys(roots.values()))}
    return {template: numbers[r] for template, r in roots.items()}


def _overlap(a: set[str], b: set[str]) -> float:
    return len(a & b) / max(1, len(a | b))


def names_its_subject(case: EditCase) -> bool:
    """Whether the case's edit prompt names its subject: every probe built here puts the subject
    into another wording, so a case without one gets none."""
    return bool(case.edit.subject) and case.edit.subject in case.edit.prompt


def known_prompts(case: EditCase) -> set[str]:
    """The case's probes, casefolded: a probe built here is never one of them (`_new`)."""
    return {p.prompt.casefold() for p in (*case.in_scope, *case.out_of_scope)}


def _new(prompts: list[str], known: set[str]) -> list[str]:
    """Prompts not already known, each once, in order."""
    fresh = []
    for prompt in prompts:
        if prompt.casefold() not in known:
            known.add(prompt.casefold())
            fresh.append(prompt)
    return fresh


def check_other_facts(per_case: object) -> int:
    """A count of other facts a case (`with_other_facts`), or a ValueError that says what is wrong."""
    if isinstance(per_case, bool) or not isinstance(per_case, int) or per_case < 0:
        raise ValueError(f"other facts a case must be a whole number, 0 or more, got {per_case!r}")
    return per_case


def with_other_facts(cases: Sequence[EditCase], per_case: int, seed: int = 0) -> list[EditCase]:
    """Test cases with `per_case` out-of-scope probes each about other facts of the edited subject
    (`Augmenter.other_facts`, every relation's templates, group "other_fact"; for questions, other
    questions of the cases, none that the cases word as one relation, `question_groups`), drawn once
    with a fixed seed: evaluation's measure of scope by fact, where the data gives only other subjects."""
    if not check_other_facts(per_case):
        return list(cases)
    augmenter = Augmenter(cases, AugmentConfig(other_relations=per_case, question_groups=True))
    rng = random.Random(seed)
    extended = []
    for case in cases:
        if not names_its_subject(case):
            extended.append(case)
            continue
        prompts = _new(augmenter.other_facts(case, case_relation_of(case), rng), known_prompts(case))
        extended.append(replace(case, out_of_scope=case.out_of_scope + tuple(Probe(p, "", group="other_fact") for p in prompts)))
    return extended


def augmented_validation(
    cases: Sequence[EditCase], config: AugmentConfig = AugmentConfig(), held_out: Sequence[str] = (), seed: int = 0
) -> list[EditCase]:
    """Validation cases with the same kinds of probes as training adds (consequences, scope-only
    cases and near-duplicate subjects aside: validation measures the edits' own scope), drawn once
    with a fixed seed, so that validations (and threshold tuning) compare like with like and
    include other facts of each edited subject."""
    config = replace(config, consequences=0, scope_cases=0.0, near_subjects=0)
    augmenter, rng = Augmenter(cases, config, held_out=held_out), random.Random(seed)
    return [augmenter(case, rng) for case in cases]
