"""Evaluation of an edited system on edit cases, scored two ways.

For each case the edit is stored, then:
- reliability: the edit prompt is answered with target_new;
- generalization: the rephrases are answered with target_new;
- locality: out-of-scope prompts are answered exactly as the unedited model answers them;
- portability (where the data has it): the one-hop question is answered with its new answer;
- by group (KnowEdit's categories: rephrase and Subject_Aliasing in generalization,
  Relation_Specificity in locality, Reasoning and Logical_Generalization in portability), each apart;
  an answer is right when it starts with any of the probe's acceptable answers (alias lists);
- classifier: precision and recall of "routed to this probe's own edit", the false-route rate
  (per locality group too: how many other facts of an edited subject are routed at all), and how
  often a route is declined, for in-scope probes (wrongly) and out-of-scope ones (rightly);
- with its own edit routed: reliability and generalization (and each group) had the classifier
  routed every in-scope probe to its own edit, the counterfactual model and its decline as they
  are. What this gains over the real figure is the classifier's share of the failures; what it
  still misses is the counterfactual model's (a KnowEdit alias that it cannot tie to the edit).

Scorings: teacher-forced token accuracy (EasyEdit-compatible: argmax == target token at every
target position; for locality, argmax agreement with the unedited model on the true answer)
and greedy generation (the continuation, leading spaces stripped, starts with the target; for
locality, the output is identical to the unedited model's).

Modes: `single` keeps one edit in memory at a time; `batch` stores all the run's edits at once,
which is where a scope classifier is really tested.

With many edits stored, a dataset's out-of-scope prompt can ask for the very fact that *another*
stored edit changed: CounterFact has "Hank Aaron professionally plays the sport" as one case's edit
and "What sport does Hank Aaron play? They play" as another case's locality prompt. The edited
system is right to answer it with the new target, so such a prompt is not counted in locality: it
is *claimed* (it names the other edit's subject and expects that edit's old answer). KnowEdit's
relation-specificity probes sometimes ask the case's *own* edited fact ("The constellation of
Butterfly Cluster is" -> the old constellation, beside the edit of that constellation): the case's
own edit claims those the same way, and also when the old answer is worded otherwise ("Blue Note"
for "Blue Note Records", "Heldentenor" for "tenor"): its prompt is the property's Wikidata label
around the subject, and the edit's question names that label. The report keeps the count and the locality over all
out-of-scope prompts (`locality_all`) beside it. In the same way a rewording the data gives for
an edit that is, by its CounterFact template, a wording of another relation asks another fact
(CounterFact gives "Thomas Joannes Stieltjes was born in" as a paraphrase of "The mother tongue of
Thomas Joannes Stieltjes is -> English"; `relations.asks_another_fact`): it is left out of
generalization and of the classifier's in-scope figures, and counted, with the generalization over
every rewording (`generalization_all`) beside it.

`stored` adds edits to batch mode's memory beyond those of the probed cases: 300 cases probed with
10,000 edits in memory is `evaluate(system, cases[:300], "batch", stored=cases)`. One memory holds
one answer per fact: in batch mode a case that re-edits a fact an earlier case edits (zsRE's edit
set edits a third of its subjects two to four times, with different answers) is set aside and
counted (`one_edit_per_fact`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator, Literal, Sequence

from searc import scheduler
from searc.counterfactual import counterfactual_input
from searc.data import EditCase, Probe
from searc.editor import Editor, ProbeResult, SeracSystem, TargetComparison, answer, compare_targets, declines, threshold_or
from searc.memory import Edit
from searc.relations import asks_another_fact, case_relation_of, question_asks_label, relation_of, wikidata_label

Mode = Literal["single", "batch"]
KINDS = ("reliability", "generalization", "locality", "portability")
IN_SCOPE = ("reliability", "generalization")
PROBE_CHUNK = 32


@dataclass
class Scored:
    teacher_forced: float
    generation: float


@dataclass
class Failure:
    """One probe the edited system got wrong (generation scoring): what an inspector looks at."""

    kind: str  # reliability | generalization | locality | portability
    group: str
    prompt: str
    expected: str  # the first acceptable answer; for locality, the unedited model's output
    output: str
    routed: bool
    declined: bool
    score: float
    best_edit: Edit | None  # the nearest stored edit
    edit: Edit  # the probe's own case's edit (what a workbench loads to look at the failure)


MAX_FAILURES = 500  # kept in a report (the metrics count every probe)


@dataclass
class Ceiling:
    """What an editor built on this base model can reach on portability probes (generation).

    `second_step`: the fraction whose second step the unedited model answers alone, in any of its
    wordings ("Volkswagen Group headquartered in" -> Wolfsburg), where the data gives the step
    (zsRE), else nan;
    `told`: the fraction it answers when told the edit (the counterfactual model's input, untrained
    weights, the right edit: what reading the edit with this model's knowledge gives).
    `within_*`: this editor's portability on the probes within that ceiling."""

    probes: int
    second_step: float
    within_second_step: float
    told: float
    within_told: float


@dataclass
class EvalReport:
    n_cases: int  # cases scored
    set_aside_cases: int  # batch mode: cases that re-edit a fact an earlier case edits
    mode: str
    reliability: Scored
    generalization: Scored  # rewordings that ask the edited fact
    generalization_all: Scored  # every rewording the data gives, those that ask another fact included
    other_fact_rewordings: int  # rewordings that ask another fact of the subject (`relations.asks_another_fact`)
    locality: Scored  # out-of-scope prompts that no other stored edit claims
    locality_all: Scored  # every out-of-scope prompt
    claimed_locality_prompts: int
    portability: Scored | None
    groups: dict[str, Scored]  # "metric/group" -> scores of the data's categories (KnowEdit), generation and teacher-forced
    group_sizes: dict[str, int]
    ceilings: dict[str, Ceiling]  # "portability" and "portability/<group>" -> what the base model can reach
    own_edit_routed: dict[str, float]  # "reliability", "generalization", "generalization/<group>" -> generation score had every in-scope probe been routed to its own edit
    edits_in_memory: int
    threshold: float  # routing
    decline_threshold: float  # the counterfactual model's
    name_weight: float  # the classifier's name check (`searc.names`); 0: none
    finish_targets: bool  # a begun target was finished verbatim (lm.FinishTargets); False: decoded freely
    classifier: dict[str, float]
    unedited: dict[str, float]  # the base model alone, generation scoring
    seconds: float
    failures: list[Failure] = field(default_factory=list)  # the first MAX_FAILURES wrong probes, in data order

    def to_json(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        rows = [("metric", "teacher-forced", "generation")]
        for name in ("reliability", "generalization", "generalization_all", "locality", "locality_all", "portability"):
            scored = getattr(self, name)
            if scored is not None:
                rows.append((name, f"{scored.teacher_forced:.3f}", f"{scored.generation:.3f}"))
        rows += [(f"{name} (n={self.group_sizes[name]})", f"{scored.teacher_forced:.3f}", f"{scored.generation:.3f}") for name, scored in self.groups.items()]
        rows += [(f"{name} with its own edit routed", "", f"{value:.3f}") for name, value in self.own_edit_routed.items()]
        for name, c in self.ceilings.items():
            rows.append((f"{name} ceiling: second step alone", "", f"{c.second_step:.3f}"))
            rows.append((f"{name} within that ceiling", "", f"{c.within_second_step:.3f}"))
            rows.append((f"{name} ceiling: told the edit", "", f"{c.told:.3f}"))
            rows.append((f"{name} within that ceiling", "", f"{c.within_told:.3f}"))
        rows.append(("rewordings asking another fact", "", str(self.other_fact_rewordings)))
        rows.append(("claimed locality prompts", "", str(self.claimed_locality_prompts)))
        rows += [(f"classifier {k}", "", f"{v:.3f}") for k, v in self.classifier.items()]
        rows += [(f"unedited {k}", "", f"{v:.3f}") for k, v in self.unedited.items()]
        width = max(len(r[0]) for r in rows)
        lines = [f"{r[0]:<{width}}  {r[1]:>14}  {r[2]:>10}" for r in rows]
        set_aside = f" ({self.set_aside_cases} re-editing an earlier case's fact set aside)" if self.set_aside_cases else ""
        settings = (f"threshold {self.threshold:.2f}, decline threshold {self.decline_threshold:.2f}, name weight {self.name_weight:g}"
                    + ("" if self.finish_targets else ", decoding freely"))
        return "\n".join(lines + [f"{self.n_cases} cases{set_aside}, {self.mode} mode, {self.edits_in_memory} edits in memory, {settings}, {self.seconds:.0f} s"])


@dataclass
class _Tally:
    sums: dict[str, list[float]] = field(default_factory=dict)
    failures: list["Failure"] = field(default_factory=list)

    def add(self, key: str, value: float) -> None:
        self.sums.setdefault(key, []).append(value)

    def mean(self, key: str) -> float:
        values = self.sums.get(key, [])
        return sum(values) / len(values) if values else float("nan")

    def has(self, key: str) -> bool:
        return bool(self.sums.get(key))


@dataclass(frozen=True)
class _Probe:
    kind: str  # reliability | generalization | locality | portability
    prompt: str
    answers: tuple[str, ...]  # the first is scored teacher-forced; any counts by generation
    edit_index: int  # index of the case's edit in the editor's memory
    group: str = ""
    claimed: bool = False  # a locality prompt that asks for a stored edit's fact
    other_fact: bool = False  # a rewording that asks another fact of the subject (`relations.asks_another_fact`)
    second_steps: tuple[Probe, ...] = ()  # portability: the second step alone, its wordings (see `Ceiling`)

    @property
    def answer(self) -> str:
        return self.answers[0]


def claims(edit: Edit, out_of_scope: Probe) -> bool:
    """Whether `out_of_scope` asks for the fact that `edit` changes: it names the edit's subject and
    expects the edit's old answer (or one of its aliases), or asks the edit's relation, or one of
    its family, in a CounterFact wording ("Helsinki is a twin city of" beside the edit "Helsinki is
    a twin city of -> Istanbul", whose old answer the data gives as another of Helsinki's twins),
    or, as a KnowEdit relation-specificity prompt, asks a property whose label the edit's question
    names ("The record label of Ray Guns Are Not Just the Future is" -> "Blue Note" beside the edit
    "Which was the record label for Ray Guns Are Not Just the Future?", old answer "Blue Note Records")."""
    subject = edit.subject
    if not subject or subject.casefold() not in out_of_scope.prompt.casefold():
        return False
    old = (edit.target_true or "").strip().casefold()
    if old and any(a.strip().casefold() == old for a in out_of_scope.answers):
        return True
    edited, asked = relation_of(edit.prompt, subject), relation_of(out_of_scope.prompt, subject)
    if edited is not None and asked is not None:
        return edited.family == asked.family
    label = wikidata_label(out_of_scope.prompt, subject) if out_of_scope.group == "Relation_Specificity" else None
    return label is not None and question_asks_label(edit.prompt, label)


def _probes(case: EditCase, edit_index: int, claimants: Sequence[Edit]) -> list[_Probe]:
    """The case's probes; `claimants` are the stored edits (its own among them) that may claim its locality prompts."""
    probes = [_Probe("reliability", case.in_scope[0].prompt, case.in_scope[0].answers, edit_index)]
    probes += [
        _Probe("generalization", p.prompt, p.answers, edit_index, p.group, other_fact=asks_another_fact(case, p)) for p in case.rephrases
    ]
    probes += [
        _Probe("locality", p.prompt, p.answers, edit_index, p.group, claimed=any(claims(e, p) for e in claimants)) for p in case.out_of_scope
    ]
    probes += [_Probe("portability", p.prompt, p.answers, edit_index, p.group, second_steps=p.second_steps) for p in case.portability]
    return probes


def starts_with_target(output: str, target: str) -> bool:
    return output.lstrip().startswith(target.strip())


def starts_with_any(output: str, answers: Sequence[str]) -> bool:
    return any(starts_with_target(output, a) for a in answers if a.strip())


def _score(sessions: Sequence[tuple[Editor, list[_Probe]]], tally: _Tally) -> None:
    """Route every probe once in its own session, then answer and score all of them in shared batches."""
    items = [(editor, probe) for editor, probes in sessions for probe in probes]
    for start in range(0, len(items), PROBE_CHUNK):
        chunk = items[start : start + PROBE_CHUNK]
        routes = [editor.route([probe.prompt])[0] for editor, probe in chunk]
        editor0 = chunk[0][0]
        prompts = [p.prompt for _, p in chunk]
        results = answer(
            editor0.system, prompts, routes, editor0.threshold, editor0.decline_threshold, editor0.routing,
            finish_targets=editor0.finish_targets,
        )
        scored = [i for i, (_, p) in enumerate(chunk) if p.answer]
        comparisons = {}
        if scored:
            answers = [chunk[i][1].answer for i in scored]
            compared = compare_targets(
                editor0.system, [prompts[i] for i in scored], answers, [routes[i] for i in scored], editor0.decline_threshold, editor0.routing
            )
            comparisons = dict(zip(scored, compared))
        ceilings = _ceilings(chunk)
        own_outputs = _own_edit_outputs(chunk, results)
        for i, ((editor, probe), result) in enumerate(zip(chunk, results)):
            _tally_probe(editor, probe, result, comparisons.get(i), tally)
            if probe.kind in IN_SCOPE and not probe.other_fact:
                right = starts_with_any(own_outputs.get(i, result.output), probe.answers)
                for name in (probe.kind, *([f"{probe.kind}/{probe.group}"] if probe.group else [])):
                    tally.add(f"{name} own", float(right))
            if i in ceilings:
                _tally_ceiling(probe, starts_with_any(result.output, probe.answers), *ceilings[i], tally)


def _routed_to_own(editor: Editor, probe: _Probe, result: ProbeResult) -> bool:
    return result.routed and result.best_edit is not None and result.best_edit.id == editor.memory.edits[probe.edit_index].id


def _own_edit_outputs(chunk: Sequence[tuple[Editor, _Probe]], results: Sequence[ProbeResult]) -> dict[int, str]:
    """For the chunk's in-scope probes that were not routed to their own edit: the output had they
    been (the counterfactual model with that edit in context, or the base output where it declines)."""
    missed = [
        i for i, ((editor, probe), result) in enumerate(zip(chunk, results))
        if probe.kind in IN_SCOPE and not probe.other_fact and not _routed_to_own(editor, probe, result)
    ]
    if not missed:
        return {}
    editor = chunk[0][0]
    system = editor.system
    edits = [chunk[i][0].memory.edits[chunk[i][1].edit_index] for i in missed]
    generated = system.counterfactual.generate(
        [counterfactual_input(edit, chunk[i][1].prompt) for i, edit in zip(missed, edits)],
        max_new_tokens=system.counterfactual.budget_for([e.target_new for e in edits]),
        answer=True,
    )
    return {
        i: results[i].base_output if declines(g.end_probability, editor.decline_threshold) else g.text for i, g in zip(missed, generated)
    }


def _ceilings(chunk: Sequence[tuple[Editor, _Probe]]) -> dict[int, tuple[bool, bool | None]]:
    """For the chunk's portability probes: (the unedited model answers when told the edit, it
    answers the second step alone or None without one); see `Ceiling`."""
    ported = [i for i, (_, p) in enumerate(chunk) if p.kind == "portability"]
    if not ported:
        return {}
    base = chunk[0][0].system.base
    budget = base.budget_for([a for i in ported for a in chunk[i][1].answers])
    told = base.generate(
        [counterfactual_input(editor.memory.edits[probe.edit_index], probe.prompt) for editor, probe in (chunk[i] for i in ported)],
        max_new_tokens=budget,
    )
    steps = [(i, step) for i in ported for step in chunk[i][1].second_steps]
    alone = base.generate([s.prompt for _, s in steps], max_new_tokens=base.budget_for([a for _, s in steps for a in s.answers]))
    known: dict[int, bool] = {}
    for (i, step), generated in zip(steps, alone):  # known if any wording gets it
        known[i] = known.get(i, False) or starts_with_any(generated.text, step.answers)
    return {i: (starts_with_any(g.text, chunk[i][1].answers), known.get(i)) for i, g in zip(ported, told)}


def _tally_ceiling(probe: _Probe, right: bool, told: bool, alone: bool | None, tally: _Tally) -> None:
    for name in ("portability", *([f"portability/{probe.group}"] if probe.group else [])):
        tally.add(f"{name} ceiling told", float(told))
        if told:
            tally.add(f"{name} within told", float(right))
        if alone is not None:
            tally.add(f"{name} ceiling step", float(alone))
            if alone:
                tally.add(f"{name} within step", float(right))


def _tally_probe(editor: Editor, probe: _Probe, result: ProbeResult, comparison: TargetComparison | None, tally: _Tally) -> None:
    own = editor.memory.edits[probe.edit_index]
    routed_to_own = _routed_to_own(editor, probe, result)
    group = f"{probe.kind}/{probe.group}" if probe.group else None
    if probe.kind == "locality":
        kept = float(result.output == result.base_output)
        tally.add("locality_all_gen", kept)
        tally.add("claimed", float(probe.claimed))
        if not probe.claimed:
            tally.add("locality_gen", kept)
            tally.add("false_routes", float(result.routed))
            if result.routed:
                tally.add("declined_false_routes", float(result.declined))
            if group:
                tally.add(f"{group}_gen", kept)
                tally.add(f"routed {group}", float(result.routed))
            if not kept:
                _note_failure(probe, result, result.base_output, own, tally)
    elif probe.other_fact:
        tally.add("other_fact", 1.0)
        tally.add("generalization_all_gen", float(starts_with_any(result.output, probe.answers)))
    else:
        right = float(starts_with_any(result.output, probe.answers))
        if probe.kind == "generalization":
            tally.add("generalization_all_gen", right)
        if not right:
            _note_failure(probe, result, probe.answer, own, tally)
        tally.add(f"{probe.kind}_gen", right)
        tally.add(f"unedited_{probe.kind}", float(starts_with_any(result.base_output, probe.answers)))
        if group:
            tally.add(f"{group}_gen", right)
        if probe.kind in IN_SCOPE:
            tally.add("true_routes", float(routed_to_own))
            tally.add("wrong_edit_routes", float(result.routed and not routed_to_own))
            if routed_to_own:
                tally.add("declined_own_routes", float(result.declined))
    if comparison is not None:
        if probe.kind == "locality":
            agree = [a == b for a, b in zip(comparison.edited_predicted, comparison.base_predicted)]
            tally.add("locality_all_tf", sum(agree) / len(agree))
            if not probe.claimed:
                tally.add("locality_tf", sum(agree) / len(agree))
                if group:
                    tally.add(f"{group}_tf", sum(agree) / len(agree))
        else:
            hits = [a == b for a, b in zip(comparison.edited_predicted, comparison.token_ids)]
            if probe.kind == "generalization":
                tally.add("generalization_all_tf", sum(hits) / len(hits))
            if probe.other_fact:
                return
            tally.add(f"{probe.kind}_tf", sum(hits) / len(hits))
            if group:
                tally.add(f"{group}_tf", sum(hits) / len(hits))


def _note_failure(probe: _Probe, result: ProbeResult, expected: str, own: Edit, tally: _Tally) -> None:
    """Keep a wrong probe (up to MAX_FAILURES); `expected` is its answer, or the unedited output for locality."""
    if len(tally.failures) < MAX_FAILURES:
        tally.failures.append(Failure(
            probe.kind, probe.group, probe.prompt, expected, result.output, result.routed, result.declined, result.score,
            result.best_edit, own,
        ))


def evaluate(
    system: SeracSystem,
    cases: Sequence[EditCase],
    mode: Mode = "single",
    threshold: float | None = None,
    decline_threshold: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    stored: Sequence[EditCase] = (),
    kinds: Sequence[str] = KINDS,
    finish_targets: bool | None = None,
) -> EvalReport:
    """Evaluate `system` on `cases`; see the module docstring. `stored`: more cases whose edits
    batch mode keeps in memory beside the probed cases' own (one per prompt). `kinds`: the probes
    scored (the memory is the same whichever are asked; the others' metrics are nan). `threshold` and
    `decline_threshold`: default the system's."""
    if mode not in ("single", "batch"):
        raise ValueError(f"mode must be 'single' or 'batch', got {mode!r}")
    if not kinds or set(kinds) - set(KINDS):
        raise ValueError(f"kinds must be some of {', '.join(KINDS)}, got {', '.join(kinds) or 'none'}")
    if not cases:
        raise ValueError("no cases to evaluate")
    if stored and mode != "batch":
        raise ValueError("more stored edits need batch mode")
    threshold, decline_threshold = threshold_or(threshold, system.threshold), threshold_or(decline_threshold, system.decline_threshold)
    finish_targets = system.finish_targets if finish_targets is None else finish_targets
    started = time.perf_counter()
    tally = _Tally()
    set_aside = 0
    if mode == "batch":
        cases, stored, set_aside = batch_memory(cases, stored)
    sessions = [(editor, [p for p in probes if p.kind in kinds]) for editor, probes in _sessions(system, cases, mode, threshold, decline_threshold, finish_targets, stored)]
    group = max(1, PROBE_CHUNK // 4)  # about one generation batch of probes per group of sessions
    for start in range(0, len(sessions), group):
        scheduler.shared().background_turn()  # minutes of work: probes of other sessions go first
        _score(sessions[start : start + group], tally)
        if progress is not None:
            progress(min(start + group, len(sessions)) if mode == "single" else len(cases), len(cases))
    true, wrong, false = (sum(tally.sums.get(k, [])) for k in ("true_routes", "wrong_edit_routes", "false_routes"))
    n_in_scope = len(tally.sums.get("true_routes", []))
    classifier = {
        "precision": true / (true + wrong + false) if true + wrong + false else float("nan"),
        "recall": true / n_in_scope if n_in_scope else float("nan"),
        "false_route_rate": tally.mean("false_routes"),
        # the decline, both ways: in-scope probes routed to their own edit yet declined (should be
        # near 0), out-of-scope probes routed yet declined (should be near 1)
        "declined_own_routes": tally.mean("declined_own_routes"),
        "declined_false_routes": tally.mean("declined_false_routes"),
        **{f"false_route_rate {k[len('routed '):]}": tally.mean(k) for k in sorted(tally.sums) if k.startswith("routed ")},
    }
    groups = sorted(k[: -len("_gen")] for k in tally.sums if "/" in k and k.endswith("_gen"))
    unedited = {k: tally.mean(f"unedited_{k}") for k in ("reliability", "generalization", "portability") if tally.has(f"unedited_{k}")}
    return EvalReport(
        n_cases=len(cases),
        set_aside_cases=set_aside,
        mode=mode,
        reliability=Scored(tally.mean("reliability_tf"), tally.mean("reliability_gen")),
        generalization=Scored(tally.mean("generalization_tf"), tally.mean("generalization_gen")),
        generalization_all=Scored(tally.mean("generalization_all_tf"), tally.mean("generalization_all_gen")),
        other_fact_rewordings=int(sum(tally.sums.get("other_fact", []))),
        locality=Scored(tally.mean("locality_tf"), tally.mean("locality_gen")),
        locality_all=Scored(tally.mean("locality_all_tf"), tally.mean("locality_all_gen")),
        claimed_locality_prompts=int(sum(tally.sums.get("claimed", []))),
        portability=Scored(tally.mean("portability_tf"), tally.mean("portability_gen")) if tally.has("portability_gen") else None,
        groups={name: Scored(tally.mean(f"{name}_tf"), tally.mean(f"{name}_gen")) for name in groups},
        group_sizes={name: len(tally.sums[f"{name}_gen"]) for name in groups},
        ceilings={
            name: Ceiling(
                len(tally.sums[f"{name} ceiling told"]), tally.mean(f"{name} ceiling step"), tally.mean(f"{name} within step"),
                tally.mean(f"{name} ceiling told"), tally.mean(f"{name} within told"),
            )
            for name in sorted({k[: -len(" ceiling told")] for k in tally.sums if k.endswith(" ceiling told")})
        },
        own_edit_routed={k[: -len(" own")]: tally.mean(k) for k in sorted((k for k in tally.sums if k.endswith(" own")), key=_kind_first)},
        edits_in_memory=max(len(editor.memory) for editor, _ in sessions),
        threshold=threshold,
        decline_threshold=decline_threshold,
        name_weight=system.classifier.config.name_weight,
        finish_targets=finish_targets,
        classifier=classifier,
        unedited=unedited,
        seconds=time.perf_counter() - started,
        failures=tally.failures,
    )


def _kind_first(key: str) -> tuple[int, str]:
    """Report order: reliability, then generalization, each before its groups."""
    kind = key.split("/")[0].split(" ")[0]
    return (KINDS.index(kind), key)


def _sessions(
    system: SeracSystem, cases: Sequence[EditCase], mode: Mode, threshold: float, decline_threshold: float, finish_targets: bool,
    stored: Sequence[EditCase] = (),
) -> Iterator[tuple[Editor, list[_Probe]]]:
    """Editors with their memory filled as the mode says, and the probes to ask them: single mode
    keys each case's edit in its own small memory; batch mode keys them all at once."""
    if mode == "batch":
        editor = Editor(system, threshold=threshold, decline_threshold=decline_threshold, finish_targets=finish_targets)
        edits = editor.add_edits([c.edit for c in (*cases, *stored)])
        stored_claimants = claimants(cases, edits)
        yield editor, [probe for i, case in enumerate(cases) for probe in _probes(case, i, stored_claimants[i])]
        return
    for case in cases:
        editor = Editor(system, threshold=threshold, decline_threshold=decline_threshold, finish_targets=finish_targets)
        editor.add_edits([case.edit])
        yield editor, _probes(case, 0, editor.edits)


def claimants(cases: Sequence[EditCase], edits: Sequence[Edit]) -> list[list[Edit]]:
    """For each case, the stored edits (its own included) whose subject one of its out-of-scope prompts names."""
    with_subject = [(e, e.subject.casefold()) for e in edits if e.subject]
    result = []
    for case in cases:
        prompts = [p.prompt.casefold() for p in case.out_of_scope]
        result.append([e for e, subject in with_subject if any(subject in p for p in prompts)])
    return result


def batch_memory(cases: Sequence[EditCase], stored: Sequence[EditCase] = ()) -> tuple[list[EditCase], list[EditCase], int]:
    """(the probed cases, the further stored cases, how many probed cases were set aside) for one
    memory of all their edits: it holds one answer per fact (`one_edit_per_fact`), so a re-edit
    among the probed cases is set aside and one among the stored ones is not stored."""
    kept, repeats = one_edit_per_fact(cases)
    return kept, one_edit_per_fact([*kept, *stored])[0][len(kept) :], len(repeats)


def one_edit_per_fact(cases: Sequence[EditCase]) -> tuple[list[EditCase], list[EditCase]]:
    """(cases that edit a fact no earlier case edits, the later re-edits). A memory holds one answer
    per fact, so in batch mode a re-edit is set aside and counted, never scored against the earlier
    edit's contrary answer. A case re-edits an earlier one when it has the same prompt, or the same
    subject and the same relation; where either relation is unknown (zsRE and KnowEdit carry none:
    every subject that their edit sets name twice is the same question reworded, "What voice type is
    Lola Beeth?" -> mezzo-soprano and "What is the vocal range for Lola Beeth?" -> mezzo soprano),
    the same subject. CounterFact also repeats prompts ("Saint Petersburg is a twin city of" ->
    Lisbon, Tokyo and Atlanta)."""
    prompts: set[str] = set()
    relations: dict[str, list[str | None]] = {}  # subject -> relations of the kept cases naming it
    kept, repeats = [], []
    for case in cases:
        prompt, subject = case.edit.prompt.casefold(), (case.edit.subject or "").casefold()
        relation = case_relation_of(case)
        mine = relation.id if relation else None
        earlier = relations.get(subject, []) if subject else []
        if prompt in prompts or any(theirs is None or mine is None or theirs == mine for theirs in earlier):
            repeats.append(case)
            continue
        kept.append(case)
        prompts.add(prompt)
        if subject:
            relations.setdefault(subject, []).append(mine)
    return kept, repeats


def comparison_rows(trained: EvalReport, zero_shot: EvalReport | None = None) -> dict[str, dict[str, float]]:
    """Generation scores by category (portability and the data's groups where it has them) of the
    unedited model, the zero-shot editor and the trained editor."""
    def row(report: EvalReport) -> dict[str, float]:
        scores = {name: getattr(report, name).generation for name in ("reliability", "generalization", "locality")}
        if report.portability is not None:
            scores["portability"] = report.portability.generation
        return scores | {name: scored.generation for name, scored in report.groups.items()}

    mine = row(trained)
    # the unedited model agrees with itself (locality 1) and was scored on the in-scope kinds only as a whole
    unedited = {name: 1.0 if name.startswith("locality") else trained.unedited.get(name, float("nan")) for name in mine}
    rows = {"unedited model": unedited}
    if zero_shot is not None:
        rows["zero-shot editor"] = row(zero_shot)
    rows["this editor"] = mine
    return rows
