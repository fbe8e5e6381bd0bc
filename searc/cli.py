"""The `searc` command. Thin: parse arguments, call the engine, print.

Bad arguments exit with code 2 and one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Iterator, Sequence

from searc.checkpoint import CheckpointError, read_checkpoint
from searc.classifier import ClassifierConfig
from searc.data import DataError, EditCase, interleave, load_cases, refuse_evaluation_files
from searc.evaluate import KINDS
from searc.memory import Edit, EditMemory, typed_edit, validate_text
from searc.models import ModelNotFound
from searc.train import TrainConfig
from searc.validation import MAX_DECLINED_OWN_ROUTES

# `searc tune` rewrites a checkpoint in place: from fewer cases its thresholds follow noise (one
# case wrote 0.5/0.5, every pair of the grid scoring alike)
MIN_TUNE_CASES = 50
# TrainConfig fields that take several of a fixed set of names: (metavar, what they choose)
CHOICE_LISTS = {
    "consequence_steps": ("STEP", "the follow-on facts composed with each edit"),
    "consequence_forms": ("FORM", "how their probes ask"),
}


class UsageError(Exception):
    """Bad user input: printed as one line ("searc COMMAND: message"), exit code 2."""


@contextlib.contextmanager
def bad_input() -> Iterator[None]:
    """A ValueError raised inside comes from what the user gave, not from a bug: one line, exit code 2."""
    try:
        yield
    except ValueError as error:
        raise UsageError(str(error)) from None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse prints usage + exits 2; we want one line
        raise UsageError(message)


def parse_edit(text: str, subject: str | None = None) -> Edit:
    prompt, sep, target = text.rpartition("|")
    if not sep or not prompt.strip() or not target.strip():
        raise UsageError(f"--edit expects PROMPT|TARGET, got {text!r}")
    with bad_input():
        return typed_edit(prompt.strip(), target.strip(), subject)


def parse_edits(edits: list[str], subjects: list[str]) -> list[Edit]:
    """--edit PROMPT|TARGET, each with the --subject given in the same place ("" for none), if any."""
    if subjects and len(subjects) != len(edits):
        raise UsageError(f"give one --subject per --edit, in order (\"\" for an edit without one): "
                         f"{len(edits)} edits, {len(subjects)} subjects")
    return [parse_edit(edit, subject) for edit, subject in zip(edits, subjects or [None] * len(edits))]


def parse_threshold(text: str, option: str = "--threshold") -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{option} expects a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise UsageError(f"{option} expects a number in [0, 1], got {text!r}")
    return value


def json_output(text: str) -> Path:
    """--json OUT: its directory made and checked at parse time, so that a long run cannot end in
    a write error after its work is done."""
    out = Path(text)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise argparse.ArgumentTypeError(f"cannot write {text}: {error.strerror}") from None
    if out.is_dir() or not os.access(out.parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise argparse.ArgumentTypeError(f"cannot write {text}")
    return out


def write_json(out: Path | None, document: object) -> None:
    if out is not None:
        out.write_text(json.dumps(document, indent=2))


def answer_options(p: argparse.ArgumentParser) -> None:
    """How probes are answered: the two thresholds, the classifier's name check and the counterfactual model's decoding."""
    p.add_argument("--threshold", default=None, help="routing threshold in [0, 1] (default: the checkpoint's, else 0.5)")
    p.add_argument("--decline-threshold", default=None,
                   help="the counterfactual model declines when its probability of ending at once reaches this (default: the checkpoint's, else 0.5)")
    p.add_argument("--name-weight", default=None,
                   help="routing logit lowered by this times the share of an edit's subject words a probe lacks; 0 = no name check "
                        "(default: the checkpoint's, tuned with its thresholds)")
    p.add_argument("--free-decoding", action="store_true",
                   help="let the counterfactual model end or reword a target it has begun (default: it finishes the edit's target verbatim)")


def parsed_thresholds(args: argparse.Namespace) -> tuple[float | None, float | None, float | None]:
    """(routing threshold, decline threshold, name weight) as given, None where not: checked before any model loads."""
    routing = parse_threshold(args.threshold) if args.threshold is not None else None
    decline = parse_threshold(args.decline_threshold, "--decline-threshold") if args.decline_threshold is not None else None
    return routing, decline, parse_name_weight(args.name_weight) if args.name_weight is not None else None


def parse_name_weight(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"--name-weight expects a number of 0 or more, got {text!r}") from None
    if not 0.0 <= value < math.inf:
        raise UsageError(f"--name-weight expects a number of 0 or more, got {text!r}")
    return value


def apply_answer_options(system, args: argparse.Namespace, thresholds: tuple[float | None, float | None, float | None]) -> None:
    """Thresholds and name weight given on the command line replace the loaded checkpoint's; --free-decoding applies."""
    system.finish_targets = not args.free_decoding
    routing, decline, name_weight = thresholds
    if routing is not None:
        system.threshold = routing
    if decline is not None:
        system.decline_threshold = decline
    if name_weight is not None:
        system.classifier.config.name_weight = name_weight


def read_data(files: Sequence[tuple[str, int | None]], skip_bad_records: bool) -> list[list[EditCase]]:
    """The cases of each (path, limit) in `files`. A malformed record stops the command with one line
    naming file, record and field; with `skip_bad_records` it is left out and the count printed."""
    skipped: list[str] | None = [] if skip_bad_records else None
    try:
        loaded = [load_cases(path, limit=limit, skipped=skipped) for path, limit in files]
    except DataError as error:
        hint = "" if skip_bad_records else " (--skip-bad-records leaves malformed records out)"
        raise UsageError(f"{error}{hint}") from None
    if skipped:
        print(f"skipped {len(skipped)} malformed records; the first: {skipped[0]}", file=sys.stderr)
    return loaded


def validation_cases(paths: Sequence[str], limit: int | None, skip_bad_records: bool) -> list[EditCase]:
    """The first `limit` (None: all) cases of one or more validation sources, taken in turn
    (`data.interleave`), so that the first N (training's `--val-cases`, tuning's `--limit`) mix them."""
    refuse_evaluation_files(paths)
    return interleave(read_data([(path, limit) for path in paths], skip_bad_records))[:limit]


def skip_bad_records_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--skip-bad-records", action="store_true",
                   help="leave out malformed records (counted on stderr) instead of stopping at the first")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="searc", description="Memory-based model editing with SERAC.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def model_options(p: argparse.ArgumentParser, checkpoint: bool = True) -> None:
        p.add_argument("--lm", default="bundled", help="language model: 'bundled', a hub id, a directory or a .gguf file")
        p.add_argument("--encoder", default="bundled", help="classifier encoder: 'bundled', a hub id or a directory")
        if checkpoint:
            p.add_argument("--checkpoint", default="default", help="trained checkpoint directory; 'default' = the shipped one, 'none' = untrained")

    probe = sub.add_parser("probe", help="store edits, then answer probes with routing details")
    probe.add_argument("--edit", action="append", default=[], metavar="PROMPT|TARGET", help="an edit to store (repeatable)")
    probe.add_argument("--subject", action="append", default=[], metavar="SUBJECT",
                       help="the subject of each --edit, in order, as its prompt writes it (\"\" for none): routing checks "
                            "that a probe names it (see --name-weight)")
    probe.add_argument("--probe", action="append", default=[], metavar="PROMPT", help="a probe prompt (repeatable)")
    answer_options(probe)
    probe.add_argument("--soft", action="store_true", help="SERAC's soft mixture instead of hard routing")
    probe.add_argument("--json", action="store_true", help="print a JSON list")
    model_options(probe)

    lesson = sub.add_parser("lesson", help="run the teaching scenarios and check each probe against its label "
                                           "(exit 1 if one does not hold)")
    lesson.add_argument("titles", nargs="*", metavar="TITLE", help="the lessons to run, by title (default: all of them)")
    answer_options(lesson)
    model_options(lesson)

    train = sub.add_parser("train", help="train the scope classifier and the counterfactual model jointly")
    train.add_argument("--data", required=True, nargs="+", metavar="PATH",
                       help="training cases, one or more files of any supported format (never an edit.json evaluation file)")
    train.add_argument("--val", required=True, nargs="+", metavar="PATH",
                       help="validation cases, one or more files or slices (PATH[START:STOP]), taken in turn")
    train.add_argument("--out", default="runs/checkpoint", help="checkpoint directory (best by validation); new or empty unless --overwrite")
    train.add_argument("--overwrite", action="store_true", help="replace what --out holds (the old checkpoint stays until the first new one is written)")
    train.add_argument("--init", default=None, metavar="CHECKPOINT",
                       help="continue from this checkpoint's classifier and adapter (their settings too: --variant, "
                            "--trainable-layers and --top-k are then the checkpoint's); with --c-edit 0 --c-decline 0 "
                            "only the classifier trains")
    train.add_argument("--new-classifier", action="store_true",
                       help="with --init: keep only the checkpoint's counterfactual model (adapter, decline threshold) "
                            "and train a new classifier of --variant, --trainable-layers and --top-k from the encoder")
    train.add_argument("--variant", choices=["dense", "cross"], default="dense")
    train.add_argument("--trainable-layers", type=int, default=ClassifierConfig.trainable_layers,
                       help="top encoder layers the classifier fine-tunes (each adds ~7 MB to a MiniLM checkpoint)")
    train.add_argument("--top-k", type=int, default=ClassifierConfig.top_k, help="cross: edits cross-encoded per probe (0 = all)")
    train.add_argument("--limit", type=int, default=None, help="use only the first N training cases of each file")
    skip_bad_records_option(train)
    for name, default in asdict(TrainConfig()).items():
        if isinstance(default, bool):
            train.add_argument(f"--{name.replace('_', '-')}", action=argparse.BooleanOptionalAction, default=default)
        elif name == "held_out_relations":
            train.add_argument(f"--{name.replace('_', '-')}", nargs="*", default=default, metavar="RELATION",
                               help=f"default: {' '.join(default)}; give none to hold out nothing")
        elif name in CHOICE_LISTS:
            metavar, what = CHOICE_LISTS[name]
            train.add_argument(f"--{name.replace('_', '-')}", nargs="+", default=default, metavar=metavar,
                               help=f"with --consequences, {what} (default: all, {' '.join(default)})")
        else:
            train.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    train.add_argument("--lm", default="bundled")
    train.add_argument("--encoder", default="bundled")

    evaluate = sub.add_parser("eval", help="measure reliability, generalization and locality on edit cases")
    evaluate.add_argument("--data", required=True)
    evaluate.add_argument("--limit", type=int, default=None, help="first N cases")
    evaluate.add_argument("--mode", choices=["single", "batch"], default="single")
    evaluate.add_argument("--memory", type=int, default=None, metavar="M",
                          help="batch mode with the first M edits of the file in memory (one per prompt), the --limit cases probed")
    evaluate.add_argument("--relation", action="append", default=[], metavar="RELATION",
                          help="probe only CounterFact cases of this relation (Wikidata id or label; repeatable)")
    answer_options(evaluate)
    evaluate.add_argument("--other-facts", type=int, default=0, metavar="N",
                          help="also score N probes a case about other facts of its subject (other relations' templates, "
                               "or other questions of the file, with the subject): locality, group 'other_fact'")
    evaluate.add_argument("--consequences", action="store_true",
                          help="also score consequence probes (portability, group 'consequence') made from the unedited "
                               "model's knowledge of each new object: 'X is located in the country of' after X's city is edited")
    evaluate.add_argument("--only", action="append", default=[], choices=KINDS, metavar="KIND",
                          help=f"score only these probes ({', '.join(KINDS)}; repeatable): same memory, less time")
    evaluate.add_argument("--json", metavar="OUT", type=json_output, help="also write the report as JSON")
    skip_bad_records_option(evaluate)
    model_options(evaluate)

    tune = sub.add_parser("tune", help="re-tune a checkpoint's routing and decline thresholds and its classifier's name weight together on validation cases (all edits in memory)")
    tune.add_argument("--checkpoint", required=True, help="the checkpoint directory to re-tune (rewritten in place)")
    tune.add_argument("--val", nargs="+", metavar="PATH",
                      help="validation cases, one or more files or slices (PATH[START:STOP]), taken in turn (never an edit.json "
                           "evaluation file); default: what the checkpoint's training validated on")
    skip_bad_records_option(tune)
    tune.add_argument("--limit", type=int, default=200, help="validation cases probed (their edits in memory)")
    tune.add_argument("--memory", type=int, default=None, metavar="M",
                      help="the first M validation edits in memory (one per fact), the --limit cases probed: tune for memory at scale")
    tune.add_argument("--max-declined-own-routes", type=float, default=MAX_DECLINED_OWN_ROUTES, metavar="F",
                      help="choose among the pairs that decline at most this share of in-scope probes routed to their own edit, "
                           "over all cases and over the held-out relations' alone (if none does: the best of all, with a warning)")
    tune.add_argument("--validation-of", metavar="CHECKPOINT", default=None,
                      help="validate as CHECKPOINT's training did (its augmentation, seed and held-out relations, and without --val "
                           "its sources), so that two checkpoints are tuned and compared on the same cases")
    tune.add_argument("--json", metavar="OUT", type=json_output, help="also write every pair of the grid with its figures")
    model_options(tune, checkpoint=False)  # the models the checkpoint was trained on

    bench = sub.add_parser("bench", help="measure speed and memory of editing, probing and training (a table)")
    bench.add_argument("--json", metavar="OUT", type=json_output, help="also write the measurements as JSON")
    bench.add_argument("--data-dir", default="../shared/data", help="the shared data directory (CounterFact train/val/edit)")
    bench.add_argument("--cross-checkpoint", default=None, help="a trained cross-encoder checkpoint (default: untrained)")
    bench.add_argument("--quick", action="store_true", help="small sizes, a minute or two: a smoke run, not the figures")
    bench.add_argument("--no-processes", action="store_true", help="skip the rows that start searc processes (cold start, process memory)")

    calibrate = sub.add_parser("calibrate", help="fit the untrained dense classifier's scale and bias on a training file")
    calibrate.add_argument("--data", required=True)
    calibrate.add_argument("--limit", type=int, default=2000)
    skip_bad_records_option(calibrate)
    calibrate.add_argument("--encoder", default="bundled")
    return parser


def run_probe(args: argparse.Namespace) -> int:
    from searc.editor import MAX_PROBES, Editor
    from searc.system import load_system

    thresholds = parsed_thresholds(args)
    edits = parse_edits(args.edit, args.subject)
    if not args.probe:
        raise UsageError("give at least one --probe")
    with bad_input():  # everything a user typed is checked before minutes go into loading models
        EditMemory().check_new(edits)
        for probe in args.probe:
            validate_text("probe", probe)
    system = load_system(args.lm, args.encoder, args.checkpoint)
    apply_answer_options(system, args, thresholds)
    editor = Editor(system, routing="soft" if args.soft else "hard")
    with bad_input():
        editor.add_edits(edits)
        results = [r for start in range(0, len(args.probe), MAX_PROBES) for r in editor.probe(args.probe[start : start + MAX_PROBES])]
    if args.json:
        print(json.dumps([r.to_json() for r in results], indent=2, ensure_ascii=False))
        return 0
    print(f"checkpoint: {system.info.checkpoint or 'none (untrained editor)'}")
    for edit in editor.edits:
        print(f"edit {edit.id}: {edit.prompt} -> {edit.target_new}" + (f" (subject: {edit.subject})" if edit.subject else ""))
    for result in results:
        scores = ", ".join(f"{k}={v:.3f}" for k, v in result.scores.items()) or "(no edits)"
        print(f"\nprobe: {result.prompt}")
        print(f"  scores: {scores}")
        routed = ("yes, but the counterfactual model declined" if result.declined else "yes") if result.routed else "no"
        print(f"  routed: {routed} (best {result.score:.3f}, threshold {result.threshold:.2f})")
        if result.decline_probability is not None:
            print(f"  declines:       p(end at once) {result.decline_probability:.3f}, decline threshold {result.decline_threshold:.2f}")
        print(f"  base:           {result.base_output!r}")
        print(f"  counterfactual: {result.counterfactual_output!r}")
        print(f"  output:         {result.output!r}")
        if result.name_check_note:
            print(f"  name check:     {result.name_check_note}")
    return 0


def run_lesson(args: argparse.Namespace) -> int:
    from searc.lessons import check_lesson, load_lessons
    from searc.system import load_system

    thresholds = parsed_thresholds(args)
    lessons = load_lessons()
    titles = [lesson.title for lesson in lessons]
    unknown = [t for t in args.titles if t not in titles]
    if unknown:
        raise UsageError(f"no lesson titled {unknown[0]!r}; the lessons are: " + "; ".join(titles))
    chosen = [lesson for lesson in lessons if not args.titles or lesson.title in args.titles]
    system = load_system(args.lm, args.encoder, args.checkpoint)
    apply_answer_options(system, args, thresholds)
    print(f"checkpoint: {system.info.checkpoint or 'none (untrained editor)'}")
    held = probes = lessons_held = 0
    for lesson in chosen:
        checks = check_lesson(system, lesson, threshold=thresholds[0])  # a given --threshold replaces the lesson's own
        print(f"\n{lesson.summary(checks)}")
        for check in checks:
            result = check.result
            routed = ("routed, declined" if result.declined else "routed") if result.routed else "not routed"
            print(f"  {check.probe.prompt}: {check.describe()}; {routed} ({result.score:.3f}), output {result.output!r}")
        held, probes = held + sum(c.holds for c in checks), probes + len(checks)
        lessons_held += all(c.holds for c in checks)
    print(f"\n{lessons_held} of {len(chosen)} lessons hold; {held} of {probes} probes as labelled")
    return 0 if held == probes else 1


def run_calibrate(args: argparse.Namespace) -> int:
    from searc.classifier import ClassifierConfig, DenseScopeClassifier, calibrate
    from searc.data import calibration_pairs
    from searc.models import load_encoder

    [cases] = read_data([(args.data, args.limit)], args.skip_bad_records)
    encoder, tokenizer = load_encoder(args.encoder)
    classifier = DenseScopeClassifier(encoder, tokenizer, ClassifierConfig())
    pairs = calibration_pairs(cases)
    with bad_input():
        scale, bias = calibrate(classifier, pairs)
    print(json.dumps({"scale": round(scale, 2), "bias": round(bias, 2), "pairs": len(pairs), "cases": len(cases)}))
    return 0


def run_train(args: argparse.Namespace) -> int:
    from searc.system import load_system, replace_classifier
    from searc.train import prepare_training, train

    with bad_input():
        config = TrainConfig(**{name: getattr(args, name) for name in asdict(TrainConfig())})
    refuse_evaluation_files(args.data)
    train_cases = [case for cases in read_data([(path, args.limit) for path in args.data], args.skip_bad_records) for case in cases]
    val_cases = validation_cases(args.val, None, args.skip_bad_records)
    shared = {case.edit for case in train_cases} & {case.edit for case in val_cases}
    if shared:
        raise UsageError(f"{len(shared)} validation edits are also training edits, e.g. {next(iter(shared)).prompt!r}; "
                         "split a file with PATH[:N] and PATH[N:]")
    if args.trainable_layers < 0 or args.top_k < 0:
        raise UsageError("--trainable-layers and --top-k must be 0 or more")
    if args.new_classifier and args.init is None:
        raise UsageError("--new-classifier goes with --init CHECKPOINT (whose counterfactual model it keeps)")
    with bad_input():
        prepare_training(train_cases, val_cases, config, args.out, args.overwrite)  # before the models load
    classifier = ClassifierConfig(variant=args.variant, trainable_layers=args.trainable_layers, top_k=args.top_k)
    if args.init is not None:
        system = load_system(args.lm, args.encoder, checkpoint=args.init)
        if args.new_classifier:
            replace_classifier(system, classifier)
    else:
        system = load_system(args.lm, args.encoder, checkpoint=None, classifier=classifier)
    for event in train(system, train_cases, val_cases, config, out=args.out, sources={"data": args.data, "val": args.val}, overwrite=args.overwrite):
        if event.kind == "step":
            losses = " ".join(f"{k}={v:.3f}" for k, v in event.losses.items())
            bar = "#" * int(30 * event.step / event.total_steps)
            print(f"\r[{bar:<30}] {event.step}/{event.total_steps} {losses} {event.examples_per_s:.1f} ex/s", end="", flush=True)
        elif event.kind == "validation":
            metrics = " ".join(f"{k}={v:.3f}" for k, v in event.metrics.items())
            print(f"\nvalidation @ {event.step}: {metrics}", flush=True)
        else:
            print(f"\n{event.message} after {event.step} steps, {event.elapsed_s:.0f} s; best checkpoint: {event.checkpoint}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from searc.augment import check_other_facts, split_by_relation, with_other_facts
    from searc.consequences import with_consequences
    from searc.evaluate import evaluate
    from searc.relations import relation_id
    from searc.system import load_system

    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    if args.memory is not None and (args.memory < 1 or args.mode != "batch"):
        raise UsageError("--memory takes a positive number and --mode batch")
    thresholds = parsed_thresholds(args)
    with bad_input():
        relations = [relation_id(name) for name in args.relation]
        check_other_facts(args.other_facts)
    [cases] = read_data([(args.data, None)], args.skip_bad_records)
    if args.memory is not None and len(cases) < args.memory:
        raise UsageError(f"--memory {args.memory}: {args.data} holds only {len(cases)} cases")
    stored = cases[: args.memory] if args.memory else []
    if relations:
        cases = split_by_relation(cases, relations)[1]
    cases = cases[: args.limit]
    if not cases:
        raise UsageError(f"no cases of {', '.join(relations)} in {args.data}")
    with bad_input():
        cases = with_other_facts(cases, args.other_facts)
    system = load_system(args.lm, args.encoder, args.checkpoint)
    apply_answer_options(system, args, thresholds)
    if args.consequences:
        data_probes = sum(len(c.portability) for c in cases)  # the data's own portability probes (zsRE) are kept
        cases = with_consequences(system.base, cases)
        added = sum(len(c.portability) for c in cases) - data_probes
        print(f"{added} consequence probes from the unedited model's answers", file=sys.stderr)

    def progress(done: int, total: int) -> None:
        print(f"\r{done}/{total} cases", end="", file=sys.stderr, flush=True)

    with bad_input():
        report = evaluate(system, cases, mode=args.mode, progress=progress, stored=stored, kinds=args.only or KINDS)
    print(file=sys.stderr)
    print(report.table())
    for failure in report.failures[:5]:
        how = ("routed, declined" if failure.declined else "routed") if failure.routed else "not routed"
        print(f"failed {failure.kind} {failure.group}: {failure.prompt!r} -> {failure.output!r}, expected {failure.expected!r} ({how}, {failure.score:.2f})")
    if report.failures:
        print(f"{len(report.failures)} failing probes kept" + (f", all in {args.json}" if args.json else "; --json writes them all"))
    write_json(args.json, report.to_json())
    return 0


def run_tune(args: argparse.Namespace) -> int:
    from searc.system import load_system, save_checkpoint
    from searc.validation import tune_thresholds

    if args.limit < 1 or (args.memory is not None and args.memory < 1):
        raise UsageError("--limit and --memory must be at least 1")
    if not 0.0 <= args.max_declined_own_routes <= 1.0:
        raise UsageError("--max-declined-own-routes must be in [0, 1]")
    def read(val: Sequence[str]) -> list[EditCase]:
        return validation_cases(val, max(args.limit, args.memory or 0), args.skip_bad_records)

    # Everything that can be wrong fails before the models load: the data named here first (as in
    # every command), then the training record, then the sources it names.
    loaded = read(args.val) if args.val else None
    validated_as = args.validation_of or args.checkpoint  # whose validation settings (and sources) the cases follow
    record = read_checkpoint(validated_as).config.get("training", {})
    try:
        training = TrainConfig.from_record(record.get("config", {}))
    except (TypeError, ValueError) as error:
        raise UsageError(f"{validated_as}'s training record: {error}") from None
    if loaded is None:
        recorded = (record.get("sources") or {}).get("val")
        if not recorded:
            raise UsageError(f"{validated_as} does not record what it was validated on; give --val")
        loaded = read(recorded)
    if args.memory is not None and len(loaded) < args.memory:
        raise UsageError(f"--memory {args.memory}: the validation data holds only {len(loaded)} cases")
    cases, stored = loaded[: args.limit], loaded[args.limit : args.memory]  # probed; in memory beside them
    if len(cases) < MIN_TUNE_CASES:
        raise UsageError(
            f"{len(cases)} validation cases are too few to tune on (the thresholds would follow noise into "
            f"{args.checkpoint}); give at least {MIN_TUNE_CASES}"
        )
    cases = training.validation_cases(cases)  # tune on what validation chose the checkpoint on: other facts of each subject too
    system = load_system(args.lm, args.encoder, args.checkpoint)
    tuned = tune_thresholds(system, cases, training.held_out_relations, stored, max_declined_own_routes=args.max_declined_own_routes)
    # validation_of: whose validation cases this tuning used (None: the checkpoint's own), written
    # every time, so that a later plain re-tune does not keep an earlier one's
    if not tuned.within_cap:
        held_out = tuned.declined_own_routes_held_out
        print(
            f"searc tune: no pair of the grid declines at most {args.max_declined_own_routes:.1%} of the in-scope probes routed "
            f"to their own edit (over all cases and over the held-out relations'); chose the best pair of the whole grid, "
            f"which declines {tuned.declined_own_routes:.1%}" + ("" if math.isnan(held_out) else f" ({held_out:.1%} of the held-out relations')"),
            file=sys.stderr,
        )
    metrics = {
        **system.info.metrics, **tuned.metrics(), "threshold_cases": len(cases), "validation_of": args.validation_of,
        "within_decline_cap": tuned.within_cap,
    }
    save_checkpoint(
        system, args.checkpoint, tuned.threshold, decline_threshold=tuned.decline_threshold, name_weight=tuned.name_weight,
        training=system.info.training, metrics=metrics,
    )
    print(json.dumps(tuned.metrics()))
    write_json(args.json, {"chosen": tuned.metrics(), "grid": [{**asdict(pair), "score": pair.score} for pair in tuned.grid]})
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from searc.bench import QUICK, BenchSizes, run_bench as bench
    from searc.system import load_system

    data_dir = Path(args.data_dir)
    if not (data_dir / "counterfact" / "train.json").is_file():
        raise UsageError(f"no CounterFact data under {data_dir} (see --data-dir)")
    report = bench(
        load_system,
        data_dir,
        QUICK if args.quick else BenchSizes(),
        cross_checkpoint=args.cross_checkpoint,
        processes=not args.no_processes,
        progress=lambda stage: print(f"... {stage}", file=sys.stderr, flush=True),
    )
    print(report.table())
    write_json(args.json, report.to_json())
    return 0


COMMANDS = {"bench": run_bench, "probe": run_probe, "lesson": run_lesson, "eval": run_eval, "tune": run_tune, "train": run_train, "calibrate": run_calibrate}


def quiet_libraries() -> None:
    """No progress bars or deprecation chatter from the libraries under us on a terminal."""
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
    warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    quiet_libraries()
    argv = sys.argv[1:] if argv is None else list(argv)
    # every error line names the command it stopped (the subcommand is always the first argument)
    prefix = f"searc {argv[0]}" if argv and argv[0] in COMMANDS else "searc"
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except (UsageError, ModelNotFound, CheckpointError, DataError) as error:
        print(f"{prefix}: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a file or directory named on the command line that cannot be read or written
        where = f" {error.filename}" if error.filename else ""
        print(f"{prefix}: cannot read or write{where}: {error.strerror or error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
