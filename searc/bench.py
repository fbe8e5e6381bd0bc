"""`searc bench`: the speed and memory of editing, probing and training, measured in one run.

Each figure is the median of several repeats, in milliseconds unless it says otherwise, with the
target it is held to. The memories of N edits are filled through `EditMemory.add` like any other;
for the large N the edits reuse the keys of the distinct CounterFact train/val prompts (a copy's
prompt gets a " #k" suffix so it is a distinct edit): scoring time depends on how many keys there
are, not on what they say, and encoding 100,000 prompts would only measure the encoder again
(its throughput is a row of its own).
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch

from searc.classifier import ScopeClassifier
from searc.data import EditCase, load_cases
from searc.editor import Editor, SeracSystem
from searc.evaluate import evaluate
from searc.memory import Edit, EditMemory
from searc.train import TrainConfig, train

SCORING_SIZES = (10, 1_000, 10_000, 100_000)


@dataclass
class Row:
    name: str
    value: float
    unit: str = "ms"
    target: str = ""  # e.g. "< 20 ms"
    met: bool | None = None  # None: no target
    note: str = ""


@dataclass
class BenchReport:
    rows: list[Row] = field(default_factory=list)
    machine: str = ""
    seconds: float = 0.0

    def add(self, name: str, value: float, unit: str = "ms", below: float | None = None, note: str = "") -> Row:
        row = Row(name, value, unit, f"< {below:g} {unit}" if below is not None else "", value < below if below is not None else None, note)
        self.rows.append(row)
        return row

    def value(self, name: str) -> float:
        return next(r.value for r in self.rows if r.name == name)

    def table(self) -> str:
        lines = [("measurement", "value", "target", "met", "note")]
        for r in self.rows:
            met = "" if r.met is None else ("yes" if r.met else "NO")
            lines.append((r.name, f"{r.value:,.2f} {r.unit}" if r.value < 100 else f"{r.value:,.0f} {r.unit}", r.target, met, r.note))
        widths = [max(len(line[i]) for line in lines) for i in range(5)]
        text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]
        return "\n".join(text + [f"{self.machine}; {self.seconds:.0f} s in all"])

    def to_json(self) -> dict:
        return {"machine": self.machine, "seconds": self.seconds, "rows": [asdict(r) for r in self.rows]}


def median_ms(fn: Callable[[], object], repeats: int, setup: Callable[[], object] | None = None) -> float:
    """Median wall time of `fn` in ms over `repeats` runs (one warm-up run first, untimed)."""
    times = []
    for i in range(repeats + 1):
        if setup is not None:
            setup()
        started = time.perf_counter()
        fn()
        if i:
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def peak_rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB


class PrecomputedKeys:
    """Stands in for the classifier when filling a memory: keys looked up from texts encoded once;
    `subjects` gives each text's subject, so that routing's name check reads real names."""

    def __init__(self, classifier: ScopeClassifier, texts: Sequence[str], subjects: Mapping[str, str] | None = None) -> None:
        self.classifier = classifier
        self.subjects = subjects or {}
        self.key_version = classifier.key_version
        self.row = {text: i for i, text in enumerate(texts)}
        edits = [Edit(text, "x") for text in texts]
        self.keys = classifier.edit_keys(edits)

    def new_key_store(self):
        return self.classifier.new_key_store()

    def edit_keys(self, edits: Sequence[Edit]):
        rows = [self.row[e.prompt] if e.prompt in self.row else self.row[e.prompt.rsplit(" #", 1)[0]] for e in edits]
        if isinstance(self.keys, tuple):  # cross-encoder: (token ids, embeddings)
            return [self.keys[0][i] for i in rows], self.keys[1][rows]
        return self.keys[rows]


def filled_memory(keys: PrecomputedKeys, texts: Sequence[str], n: int) -> EditMemory:
    """A memory of `n` distinct edits keyed from `keys` (copies of a text get a " #k" suffix)."""
    edits = [
        Edit(texts[i % len(texts)] + (f" #{i // len(texts)}" if i >= len(texts) else ""), "x", subject=keys.subjects.get(texts[i % len(texts)]))
        for i in range(n)
    ]
    memory = EditMemory()
    memory.add(edits, keys)  # type: ignore[arg-type]
    return memory


def scoring_rows(report: BenchReport, keys: PrecomputedKeys, texts: Sequence[str], probes: Sequence[str], sizes: Sequence[int], repeats: int) -> None:
    """Scoring one probe against memories of each size."""
    classifier = keys.classifier
    targets = {10_000: 50.0, 100_000: 300.0} if classifier.config.variant == "dense" else {10_000: 300.0}
    for n in sizes:
        memory = filled_memory(keys, texts, n)
        probe = iter(probes * (repeats + 1))
        ms = median_ms(lambda: classifier.scores([next(probe)], memory), repeats)
        report.add(f"{classifier.config.variant} scoring, 1 probe vs {n:,} edits", ms, below=targets.get(n),
                   note=f"top-{classifier.config.top_k} cross-encoded" if classifier.config.variant == "cross" else "")


def naive_cross_rows(
    report: BenchReport, keys: PrecomputedKeys, texts: Sequence[str], probes: Sequence[str], n: int,
    recall_edits: Sequence[str], recall_probes: Sequence[tuple[str, str]], note: str,
) -> None:
    """EasyEdit-style scoring (cross-encode every edit) at N, and how often top-k retrieval keeps
    the edit that exhaustive cross-encoding ranks first, and the probe's own edit (edits:
    validation prompts; probes: (rephrase, its own edit's prompt))."""
    classifier = keys.classifier
    top_k = classifier.config.top_k
    memory = filled_memory(keys, texts, n)
    classifier.config = replace(classifier.config, top_k=0)
    try:
        naive = median_ms(lambda: classifier.scores([probes[0]], memory), 1)
        report.add(f"naive cross scoring (every edit), 1 probe vs {n:,} edits", naive, note="EasyEdit's SERAC scores every stored edit")
        small = filled_memory(keys, recall_edits, len(recall_edits))
        exhaustive = classifier.scores([probe for probe, _ in recall_probes], small).argmax(1)
    finally:
        classifier.config = replace(classifier.config, top_k=top_k)
    top = report.value(f"cross scoring, 1 probe vs {n:,} edits")
    report.add(f"naive / top-{top_k} time at {n:,} edits", naive / top, unit="x")
    candidates = classifier.candidates([probe for probe, _ in recall_probes], small.ensure_keys(classifier))
    found = (candidates == exhaustive[:, None]).any(1).float().mean()
    sample = f"{len(recall_probes)} probes, {len(recall_edits):,} edits"
    report.add(f"top-{top_k} recall of the exhaustive best edit", float(found), unit="", note=f"{sample}, {note}")
    index = {edit.prompt: i for i, edit in enumerate(small.edits)}
    own = torch.tensor([index[prompt] for _, prompt in recall_probes])
    report.add(f"top-{top_k} recall of the probe's own edit", float((candidates == own[:, None]).any(1).float().mean()), unit="", note=sample)


def editing_rows(report: BenchReport, system: SeracSystem, keys: PrecomputedKeys, texts: Sequence[str], n: int, repeats: int) -> None:
    """Adding one edit to a memory of N, and one full probe with 1 and with N edits stored."""
    editor = Editor(system, memory=filled_memory(keys, texts, n), threshold=0.5)
    counter = iter(range(10**9))

    def add_one() -> None:
        editor.add_edit(f"The benchmark fact number {next(counter)} is about", "Rome")

    def back_to_n() -> None:  # untimed: each add starts from exactly n edits
        while len(editor.memory) > n:
            editor.remove_edit(editor.memory.edits[-1].id)

    ms = median_ms(add_one, repeats, setup=back_to_n)
    report.add(f"add one edit to a memory of {n:,}", ms, below=20.0)
    # the same routed probe against the same edit, alone and among n others; the base model's answer
    # is generated each time, as for a probe not asked before (`editor.KeptAnswers`)
    edit = Edit("The Eiffel Tower is located in the city of", "Rome")
    alone = Editor(system, threshold=0.5)
    alone.add_edits([edit])
    editor.add_edits([edit])
    probe = "Where is the Eiffel Tower? It is in the city of"
    one = median_ms(lambda: alone.probe([probe]), repeats // 2, setup=system.kept_answers.clear)
    many = median_ms(lambda: editor.probe([probe]), repeats // 2, setup=system.kept_answers.clear)
    report.add("full probe (score, route, generate 12 tokens), 1 edit", one)
    report.add(f"full probe, {n + 1:,} edits", many)
    report.add(f"full probe {n + 1:,} edits / 1 edit", many / one, unit="x", below=1.2)


WORKSPACE_PROBES = (
    "The Eiffel Tower stands in the city of",
    "The Eiffel Tower was designed by",
    "The Louvre is located in the city of",
    "The capital of Japan is",
)


def workspace_rows(report: BenchReport, system: SeracSystem, repeats: int) -> None:
    """What a workbench user waits for: an edit added and the workspace's 4 probes probed again
    (their base answers kept from the first probe, `editor.KeptAnswers`), and the token view of one
    probe (both outputs, both models' NLL, top-5 alternatives)."""
    from searc.session import Session

    session = Session(system)
    probes = "\n".join(WORKSPACE_PROBES)
    session.probe(probes, session.editor.threshold)

    def add_and_reprobe() -> None:
        session.add_edit("The Eiffel Tower is located in the city of", "Rome", "Eiffel Tower")
        session.reprobe(probes, session.editor.threshold)

    def fresh_edit() -> None:  # untimed: as for an edit not stored before, its counterfactual answers are new
        session.clear()
        system.kept_answers.clear()
        system.base_outputs(WORKSPACE_PROBES)

    ms = median_ms(add_and_reprobe, repeats, setup=fresh_edit)
    report.add("workspace: add an edit, re-probe 4 probes", ms, below=1500.0)
    first = median_ms(lambda: session.probe(probes, session.editor.threshold), repeats, setup=system.kept_answers.clear)
    report.add("workspace: probe 4 probes not asked before", first, note="the base model's answers generated too")
    routed = next((r.prompt for r in session.results if r.routed and not r.declined), WORKSPACE_PROBES[0])
    report.add("workspace: token view of a routed probe", median_ms(lambda: session.output_tokens(routed), repeats), below=500.0,
               note="base and final outputs, both models' NLL, top-5 alternatives")


def throughput_rows(report: BenchReport, trainee: SeracSystem, system: SeracSystem, train_cases: Sequence[EditCase], eval_cases: Sequence[EditCase], steps: int) -> None:
    for checkpointing, suffix in ((False, ""), (True, ", --gradient-checkpointing")):
        config = TrainConfig(steps=steps, batch_edits=8, val_every=10**6, val_cases=2, gradient_checkpointing=checkpointing)
        events = [e for e in train(trainee, train_cases, train_cases[:2], config) if e.kind == "step"][1:]  # first step warms up
        report.add("training throughput" + suffix, statistics.median(e.examples_per_s for e in events), unit="examples/s",
                   note=f"batch of 8 edits, median of {len(events)} steps")
        elapsed = [e.elapsed_s for e in events]
        report.add("training step" + suffix, statistics.median(b - a for a, b in zip(elapsed, elapsed[1:])) * 1000)
    started = time.perf_counter()
    evaluate(system, eval_cases, mode="single")
    report.add("evaluation throughput", len(eval_cases) / (time.perf_counter() - started), unit="cases/s",
               note=f"{len(eval_cases)} CounterFact cases, single mode, both scorings")


def training_memory_rows(report: BenchReport, data_dir: Path, steps: int) -> None:
    note = "batch of 8 edits; EasyEdit's SERAC: 5.6 GiB on the same model and data (brief)"
    report.add("peak memory of a training process", training_process(data_dir, steps).peak_mib, unit="MiB", note=note)
    report.add("peak memory of a training process, --gradient-checkpointing",
               training_process(data_dir, steps, "--gradient-checkpointing").peak_mib, unit="MiB", note="recomputes activations in backward")


# Runs `searc ARGS` and prints the process's own peak resident memory (VmHWM) as it ends. The
# parent's rusage cannot give it: Linux carries a forking parent's peak into the child's maxrss.
_REPORT_PEAK = (
    "import re, sys\n"
    "from searc.cli import main\n"
    "status = main(sys.argv[1:])\n"
    "print('\\nVmHWM', re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
    "sys.exit(status)\n"
)


@dataclass
class ProcessRun:
    seconds: float  # process start to exit
    peak_mib: float  # the process's own peak resident memory


def run_searc(args: Sequence[str], env: dict[str, str] | None = None) -> ProcessRun:
    """One `searc` command in a fresh Python process."""
    started = time.perf_counter()
    completed = subprocess.run([sys.executable, "-c", _REPORT_PEAK, *args], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(f"searc {args[0]} process failed: {completed.stderr[-2000:]}")
    return ProcessRun(seconds, int(completed.stdout.rsplit("VmHWM", 1)[1]) / 1024)


def cold_start(cache: str | None) -> ProcessRun:
    """Process start to the first probe answered (a `searc probe` run)."""
    env = dict(os.environ)
    if cache is not None:
        env["SEARC_CACHE"] = cache
    return run_searc(["probe", "--edit", "The Eiffel Tower is located in the city of|Rome", "--probe", "The Eiffel Tower stands in"], env)


def cold_start_rows(report: BenchReport, repeats: int) -> None:
    warm = [cold_start(None) for _ in range(repeats)]
    report.add("cold start to first probe, warm model cache", statistics.median(r.seconds for r in warm), unit="s", below=10.0)
    with tempfile.TemporaryDirectory() as empty:
        report.add("cold start to first probe, empty model cache", cold_start(empty).seconds, unit="s",
                   note="GGUF dequantised and cached once")
    report.add("peak memory of a probe process", max(r.peak_mib for r in warm), unit="MiB")


def training_process(data_dir: Path, steps: int, *options: str) -> ProcessRun:
    """A `searc train` process: models loaded, `steps` steps, one small validation."""
    with tempfile.TemporaryDirectory() as out:
        return run_searc(["train", "--data", str(data_dir / "counterfact" / "train.json"), "--val", str(data_dir / "counterfact" / "val.json"),
                          "--limit", "200", "--steps", str(steps), "--val-every", str(steps), "--val-cases", "2", "--out", out, *options])


@dataclass
class BenchSizes:
    scoring: tuple[int, ...] = SCORING_SIZES
    edits: int = 10_000  # memory size for adding and full probes; the naive cross-encoder baseline too
    recall_edits: int = 1_000
    recall_probes: int = 20
    repeats: int = 20
    train_steps: int = 6
    eval_cases: int = 20
    cold_starts: int = 3
    texts: int | None = None  # distinct prompts encoded for keys (None: all CounterFact train/val prompts)


QUICK = BenchSizes(scoring=(10, 1_000), edits=1_000, recall_edits=200, recall_probes=5, repeats=5, train_steps=3, eval_cases=4, cold_starts=1, texts=2_000)


def run_bench(
    load: Callable[..., SeracSystem],
    data_dir: Path,
    sizes: BenchSizes = BenchSizes(),
    cross_checkpoint: str | None = None,
    processes: bool = True,
    progress: Callable[[str], None] = lambda message: None,
) -> BenchReport:
    """Every measurement of the benchmark. `load()` gives the default system, `load(checkpoint=...,
    classifier=...)` another one; `cross_checkpoint` a trained cross-encoder (else an untrained one).
    `processes`: also the rows that start `searc` processes on the bundled models (cold start,
    peak memory of probing and training)."""
    from searc.classifier import ClassifierConfig

    started = time.perf_counter()
    report = BenchReport(machine=f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads")
    train_cases = load_cases(data_dir / "counterfact" / "train.json")
    val_cases = load_cases(data_dir / "counterfact" / "val.json")
    texts = list(dict.fromkeys(p.prompt for c in val_cases + train_cases for p in c.in_scope))[: sizes.texts]
    subjects = {p.prompt: c.edit.subject for c in val_cases + train_cases for p in c.in_scope if c.edit.subject}
    probes = [p.prompt for c in val_cases for p in c.rephrases]
    if processes:
        progress("cold start")
        cold_start_rows(report, sizes.cold_starts)
    system = load()
    progress("encoding")
    encode_started = time.perf_counter()
    dense_keys = PrecomputedKeys(system.classifier, texts, subjects)
    report.add("encode edit prompts (keys)", len(texts) / (time.perf_counter() - encode_started), unit="edits/s",
               note=f"{len(texts):,} distinct CounterFact train/val prompts")
    progress("dense scoring")
    scoring_rows(report, dense_keys, texts, probes, sizes.scoring, sizes.repeats)
    progress("adding and probing")
    editing_rows(report, system, dense_keys, texts, sizes.edits, sizes.repeats)
    workspace_rows(report, system, max(3, sizes.repeats // 2))
    del dense_keys
    progress("cross-encoder scoring")
    if cross_checkpoint:
        cross, note = load(checkpoint=cross_checkpoint), f"trained cross-encoder {Path(cross_checkpoint).name}"
    else:
        cross, note = load(checkpoint=None, classifier=ClassifierConfig(variant="cross")), "untrained cross-encoder"
    cross_keys = PrecomputedKeys(cross.classifier, texts, subjects)
    scoring_rows(report, cross_keys, texts, probes, sizes.scoring, max(3, sizes.repeats // 2))
    recall_edits = list({c.edit.prompt.casefold(): c.edit.prompt for c in val_cases[: sizes.recall_edits]}.values())  # one edit per prompt
    stored = set(recall_edits)
    recall_probes = [(c.rephrases[0].prompt, c.edit.prompt) for c in val_cases if c.rephrases and c.edit.prompt in stored][: sizes.recall_probes]
    naive_cross_rows(report, cross_keys, texts, probes, sizes.edits, recall_edits, recall_probes, note)
    del cross, cross_keys
    progress("training and evaluation")
    trainee = load(checkpoint=None)
    eval_cases = load_cases(data_dir / "counterfact" / "edit.json", limit=sizes.eval_cases)
    throughput_rows(report, trainee, system, train_cases, eval_cases, sizes.train_steps)
    del trainee
    if processes:
        progress("training processes")
        training_memory_rows(report, data_dir, sizes.train_steps)
    report.add("peak memory of the benchmark process", peak_rss_mib(), unit="MiB")
    report.seconds = time.perf_counter() - started
    return report
