"""Joint training on a tiny model: losses, events, reproducibility, cancelling, checkpoints."""

from __future__ import annotations

import math
import threading

import pytest
import torch

from searc.checkpoint import read_checkpoint
from searc.classifier import ClassifierConfig, build_classifier
from searc.counterfactual import LoraSettings, add_lora
from searc.data import EditCase, Probe
from searc.memory import Edit
from searc.batches import scope_matrix
from searc.losses import balanced_bce
from searc.train import TrainConfig, train
from tests.conftest import make_encoder, make_encoder_tokenizer, make_lm, make_lm_tokenizer, make_system

WORDS = ["Rome", "English", "piano", "Sweden", "Sheffield", "Tokyo", "French", "guitar"]
CASES = [
    EditCase(
        Edit(f"The fact number {i} about {w} is", WORDS[(i + 1) % len(WORDS)], subject=w),
        (Probe(f"The fact number {i} about {w} is", WORDS[(i + 1) % len(WORDS)]), Probe(f"Fact {i} on {w} says", WORDS[(i + 1) % len(WORDS)])),
        (Probe(f"The fact number {i} about someone else is", w),),
    )
    for i, w in enumerate(WORDS)
]
CONFIG = TrainConfig(steps=4, batch_edits=3, val_every=2, val_cases=4, seed=3)


def run(config: TrainConfig = CONFIG, out=None, stop=None, variant: str = "dense"):
    system = make_system("llama", variant)
    return system, list(train(system, CASES, CASES[:4], config, out=out, stop=stop))


def test_events_losses_and_best_checkpoint(tmp_path):
    system, events = run(out=tmp_path / "ck")
    kinds = [e.kind for e in events]
    assert kinds == ["step", "step", "validation", "step", "step", "validation", "done"]
    steps = [e for e in events if e.kind == "step"]
    assert all({"loss", "nll", "bce", "decline_nll", "token_accuracy"} <= set(e.losses) and e.examples_per_s > 0 for e in steps)
    for e in steps:
        expected = CONFIG.c_edit * e.losses["nll"] + CONFIG.c_cls * e.losses["bce"] + CONFIG.c_decline * e.losses["decline_nll"]
        assert e.losses["loss"] == pytest.approx(expected, rel=1e-5)
    validation = [e for e in events if e.kind == "validation"]
    assert {"classifier_auroc", "classifier_accuracy", "edit_success", "generalization", "counterfactual_declines", "locality_routing", "score"} <= set(validation[0].metrics)
    saved = read_checkpoint(tmp_path / "ck")
    best = max(validation, key=lambda e: e.metrics["score"])
    assert saved.config["metrics"]["score"] == best.metrics["score"]
    assert not system.classifier.training and not system.counterfactual.model.training


def test_training_never_replaces_a_checkpoint_unless_told_to(tmp_path):
    out = tmp_path / "ck"
    run(TrainConfig(steps=1, batch_edits=3, val_every=1, val_cases=2), out=out)
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    system = make_system("llama")
    with pytest.raises(ValueError, match="already exists and is not empty"):
        next(train(system, CASES, CASES[:4], CONFIG, out=out))  # refused before the first step
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before
    events = list(train(system, CASES, CASES[:4], TrainConfig(steps=1, batch_edits=3, val_every=1, val_cases=2, seed=5), out=out, overwrite=True))
    assert events[-1].checkpoint == str(out) and read_checkpoint(out).config["training"]["config"]["seed"] == 5
    (tmp_path / "empty").mkdir()  # an empty directory is as good as a new one
    assert list(train(make_system("llama"), CASES, CASES[:4], TrainConfig(steps=1, batch_edits=3, val_every=1, val_cases=2), out=tmp_path / "empty"))


def test_training_is_seeded_and_reproducible():
    _, first = run()
    _, second = run()
    assert [e.losses for e in first if e.kind == "step"] == [e.losses for e in second if e.kind == "step"]
    _, other_seed = run(TrainConfig(steps=4, batch_edits=3, val_every=2, val_cases=4, seed=4))
    assert [e.losses for e in first if e.kind == "step"] != [e.losses for e in other_seed if e.kind == "step"]


def test_new_parameters_do_not_depend_on_the_global_generator():
    """Loading the real models leaves torch's global generator in a state that differs from process
    to process. The adapter's A matrices and the cross-encoder's head were drawn from it, so two
    runs of one `searc train` command parted at the second step (B is zero, so the first agreed)."""
    def new_parameters_after_drawing(draws: int) -> list[torch.Tensor]:
        model, encoder = make_lm("llama", len(make_lm_tokenizer())), make_encoder(len(make_encoder_tokenizer()))
        torch.rand(draws)  # what loading consumed
        adapter = [p for n, p in add_lora(model, LoraSettings()).named_parameters() if "lora_A" in n]
        head = build_classifier(encoder, make_encoder_tokenizer(), ClassifierConfig(variant="cross")).head
        return [p.detach().clone() for p in [*adapter, *head.parameters()]]

    first, second = new_parameters_after_drawing(1), new_parameters_after_drawing(7)
    assert len(first) > 2 and all(torch.equal(a, b) for a, b in zip(first, second))
    assert all(a.abs().sum() > 0 for a in first)  # drawn, not zeros


def test_validating_less_takes_the_same_steps():
    """Validation only reads the models and draws from no training stream, so how often it runs,
    and on how many cases, changes no step: a recipe may validate less and reach the same weights."""
    often, often_events = run(TrainConfig(**{**CONFIG.__dict__, "val_every": 1, "val_cases": 4}))
    rarely, rarely_events = run(TrainConfig(**{**CONFIG.__dict__, "val_every": 4, "val_cases": 2}))
    assert sum(e.kind == "validation" for e in often_events) == 4 and sum(e.kind == "validation" for e in rarely_events) == 1
    assert [e.losses for e in often_events if e.kind == "step"] == [e.losses for e in rarely_events if e.kind == "step"]
    rarely_weights = trained_weights(rarely)
    for name, param in trained_weights(often).items():
        assert torch.equal(param, rarely_weights[name]), name


def trained_weights(system) -> dict[str, torch.Tensor]:
    """Every parameter training may change: the LoRA adapter's and the classifier's."""
    lora = {f"adapter.{n}": p for n, p in system.counterfactual.model.named_parameters() if "lora_" in n}
    return lora | {f"classifier.{n}": p for n, p in system.classifier.named_parameters()}


def test_gradient_checkpointing_takes_the_same_steps():
    """Recomputing activations in backward saves memory and changes nothing else."""
    plain, plain_events = run()
    checkpointed = make_system("llama")
    language_model = checkpointed.counterfactual.model.base_model.model
    checkpointed_events, switched_on = [], []
    for event in train(checkpointed, CASES, CASES[:4], TrainConfig(**{**CONFIG.__dict__, "gradient_checkpointing": True})):
        checkpointed_events.append(event)
        switched_on.append(language_model.is_activation_checkpointing)
    assert switched_on[0] and not language_model.is_activation_checkpointing  # on while training, off after
    for a, b in zip([e for e in plain_events if e.kind == "step"], [e for e in checkpointed_events if e.kind == "step"]):
        assert a.losses == pytest.approx(b.losses, rel=1e-4, abs=1e-6)
    lora = {n: p for n, p in plain.counterfactual.model.named_parameters() if "lora_" in n}
    for name, param in checkpointed.counterfactual.model.named_parameters():
        if "lora_" in name:
            torch.testing.assert_close(param, lora[name], rtol=1e-4, atol=1e-6)


def test_training_changes_the_adapter_and_classifier_but_not_the_base_model():
    system = make_system("llama")
    base_before = {n: p.clone() for n, p in system.counterfactual.model.named_parameters() if "lora_" not in n}
    lora_before = {n: p.clone() for n, p in system.counterfactual.model.named_parameters() if "lora_B" in n}
    frozen_before = system.classifier.encoder.encoder.layer[0].attention.self.query.weight.clone()
    list(train(system, CASES, CASES[:4], TrainConfig(steps=2, batch_edits=3, val_every=2, val_cases=2)))
    after = dict(system.counterfactual.model.named_parameters())
    assert all(torch.equal(p, after[n]) for n, p in base_before.items()), "base weights must never change"
    assert any(not torch.equal(p, after[n]) for n, p in lora_before.items())
    assert torch.equal(frozen_before, system.classifier.encoder.encoder.layer[0].attention.self.query.weight)


def test_cross_encoder_trains_too(tmp_path):
    _, events = run(TrainConfig(steps=2, batch_edits=3, val_every=2, val_cases=2), out=tmp_path / "ck", variant="cross")
    assert events[-1].kind == "done" and read_checkpoint(tmp_path / "ck").config["classifier"]["variant"] == "cross"


def test_target_forms_rewrite_training_and_validation_targets_only_when_asked(tmp_path, monkeypatch):
    import searc.augment as augment
    import searc.train as training

    written, validated = [], []
    real_form, real_validation = augment.target_form, training.augmented_validation
    monkeypatch.setattr(augment, "target_form", lambda target, rng, *kinds: written.append(target) or real_form(target, rng, *kinds))
    monkeypatch.setattr(
        training, "augmented_validation", lambda *args: validated.append((args[1].target_forms, args[1].qualified_forms_only)) or real_validation(*args)
    )
    run(TrainConfig(steps=2, batch_edits=3, val_every=2, val_cases=2, seed=3, held_out_relations=()))
    assert not written and validated == [(0.0, False)], "off by default"
    run(TrainConfig(steps=2, batch_edits=3, val_every=2, val_cases=2, seed=3, held_out_relations=(), target_forms=1.0), out=tmp_path / "ck")
    assert validated[-1] == (1.0, False) and len(written) > 2  # the validation cases, then every case drawn
    assert read_checkpoint(tmp_path / "ck").config["training"]["config"]["target_forms"] == 1.0
    config = TrainConfig(steps=2, batch_edits=3, val_every=2, val_cases=2, seed=3, held_out_relations=(), target_forms=1.0, qualified_forms_only=True)
    run(config, out=tmp_path / "qualified")
    assert validated[-1] == (1.0, True) and read_checkpoint(tmp_path / "qualified").config["training"]["config"]["qualified_forms_only"]


def test_stop_event_cancels_and_keeps_the_last_good_checkpoint(tmp_path):
    stop = threading.Event()
    system = make_system("llama")
    events = []
    for event in train(system, CASES, CASES[:4], TrainConfig(steps=50, batch_edits=3, val_every=2, val_cases=2), out=tmp_path / "ck", stop=stop):
        events.append(event)
        if event.kind == "validation":
            stop.set()
    assert events[-1].kind == "done" and events[-1].message == "cancelled" and events[-1].step == 2
    assert read_checkpoint(tmp_path / "ck").config["training"]["step"] == 2


def test_scope_matrix_labels_each_edit_own_probes():
    probes, labels = scope_matrix(CASES[:2])
    assert probes == [p.prompt for c in CASES[:2] for p in (*c.in_scope, *c.out_of_scope)]
    assert labels.tolist() == [[1, 1, 0, 0, 0, 0], [0, 0, 0, 1, 1, 0]]


def test_balanced_bce_weighs_classes_equally():
    logits = torch.tensor([5.0, -5.0, -5.0, -5.0])
    labels = torch.tensor([1.0, 0.0, 0.0, 0.0])
    assert float(balanced_bce(logits, labels)) == pytest.approx(float(balanced_bce(torch.tensor([5.0, -5.0]), torch.tensor([1.0, 0.0]))))


@pytest.mark.parametrize("bad", [dict(steps=0), dict(batch_edits=-1), dict(lr=0.0), dict(c_edit=0.0, c_cls=0.0, c_decline=0.0), dict(c_cls=-1.0), dict(c_decline=-1.0), dict(mixed_precision="fp16")])
def test_bad_configs_are_refused(bad):
    with pytest.raises(ValueError):
        TrainConfig(**bad)


def test_a_training_record_gives_back_its_config_and_a_legacy_record_means_off():
    from dataclasses import asdict

    config = TrainConfig(seed=3, target_forms=0.3, qualified_forms_only=True, held_out_relations=("P20",))
    assert TrainConfig.from_record({**asdict(config), "a_field_since_removed": 1}) == config
    legacy = TrainConfig.from_record({"steps": 100, "seed": 1})  # written before augmentation and held-out relations
    assert (legacy.augment, legacy.held_out_relations, legacy.steps, legacy.seed) == (False, (), 100, 1)
    cases = CASES[:3]
    assert legacy.validation_cases(cases) == cases  # validated as they are
    augmented = config.validation_cases(cases)
    assert augmented == config.validation_cases(cases) and augmented != list(cases)  # drawn once, with the run's seed


def fake_classifier_scores(monkeypatch, fake: torch.Tensor, names_match: bool = True) -> None:
    """Tuning reads `fake` ([n_probes, n_edits] probabilities) as the classifier's scores; with
    `names_match` every probe names every subject, so the name weight changes nothing."""
    from searc.classifier import DenseScopeClassifier
    from searc.names import NameIndex

    monkeypatch.setattr(DenseScopeClassifier, "memory_logits", lambda self, inputs, memory: torch.logit(fake[:, : len(memory)]))
    if names_match:
        monkeypatch.setattr(NameIndex, "match", lambda self, inputs: torch.ones(len(inputs), len(self)))


@pytest.mark.parametrize("negative_score, expected", [(0.3, 0.5), (0.6, 0.65), (0.95, 0.5)])
def test_tuned_threshold_separates_batch_scores(monkeypatch, negative_score, expected):
    from searc.validation import tune_thresholds

    cases = CASES[:3]
    probes, labels = scope_matrix(cases)
    fake = torch.where(labels.T.bool(), torch.tensor(0.9), torch.tensor(0.1))  # [n_probes, n_edits]
    fake[~labels.any(0), 0] = negative_score  # out-of-scope probes look like edit 0
    fake_classifier_scores(monkeypatch, fake)
    tuned = tune_thresholds(make_system("llama"), cases)
    assert tuned.threshold == expected and tuned.name_weight == 0.0  # ties: no name check
    if negative_score < 0.9:
        assert tuned.batch_recall == 1.0 and tuned.batch_locality == 1.0
    else:  # negatives score above positives: no threshold separates them
        assert tuned.batch_recall + tuned.batch_locality == pytest.approx(1.0)


def test_tuning_checks_names_where_a_near_duplicate_subject_scores_above_the_edits_own_probes(monkeypatch):
    """"Aaron Brooks ..." scores higher against the edit of "Ahmad Brooks" than that edit's own
    rewording does: no threshold separates them, the name weight does."""
    from searc.validation import NAME_WEIGHT_GRID, tune_thresholds

    target = "quarterback"
    cases = [
        EditCase(
            Edit("Which position does Ahmad Brooks play?", target, subject="Ahmad Brooks"),
            (Probe("Which position does Ahmad Brooks play?", target), Probe("Ahmad Brooks plays in the position of", target)),
            (Probe("Aaron Brooks plays in the position of", ""),),
        ),
        *CASES[:2],
    ]
    probes, labels = scope_matrix(cases)
    fake = torch.where(labels.T.bool(), torch.tensor(0.9), torch.tensor(0.1))
    fake[probes.index("Aaron Brooks plays in the position of"), 0] = 0.95
    fake_classifier_scores(monkeypatch, fake, names_match=False)
    tuned = tune_thresholds(make_system("llama"), cases)
    assert tuned.batch_recall == 1.0 and tuned.batch_locality == 1.0
    # half the subject named: the logit falls by half the weight, below the own probes' 0.9 from 4 on
    assert tuned.name_weight == min(w for w in NAME_WEIGHT_GRID if torch.sigmoid(torch.logit(torch.tensor(0.95)) - w / 2) < 0.9)
    assert {p.name_weight for p in tuned.grid} == set(NAME_WEIGHT_GRID)


def test_batches_hold_the_seed_case_nearest_neighbours():
    import random

    from searc.batches import BatchSampler

    system = make_system("llama")
    cases = CASES * 1  # 8 cases
    sampler = BatchSampler(cases, system, 4, 0.5, random.Random(0))
    with torch.no_grad():
        embeddings = system.classifier.embed([c.edit.prompt for c in cases])
    similarity = embeddings @ embeddings.T
    similarity.fill_diagonal_(-2.0)
    assert [n[0] for n in sampler.neighbours] == similarity.argmax(1).tolist()
    batch = sampler.sample()
    assert len(batch) == 4 and len({id(c) for c in batch}) == 4
    seed = cases.index(batch[0])
    assert batch[1] is cases[sampler.neighbours[seed][0]]
    plain = BatchSampler(cases, system, 4, 0.0, random.Random(0))
    assert all(n == [] for n in plain.neighbours) and len(plain.sample()) == 4


def test_decline_examples_pair_each_negative_with_its_likeliest_wrong_edit():
    import random

    from searc.counterfactual import counterfactual_input
    from searc.batches import decline_examples

    cases = CASES[:3]
    probes, labels = scope_matrix(cases)
    logits = torch.zeros(labels.shape)
    negative_columns = torch.nonzero(~labels.any(0)).flatten().tolist()
    for edit_index, column in zip([2, 0, 1], negative_columns):  # case 0's out-of-scope probe looks most like edit 2, ...
        logits[edit_index, column] = 3.0
    inputs = decline_examples(cases, probes, labels, logits, random.Random(0), drop_subject=0.0)
    assert inputs == [counterfactual_input(cases[e].edit, c.out_of_scope[0].prompt) for e, c in zip([2, 0, 1], cases)]


def test_scope_only_cases_join_the_scope_matrix_but_give_no_answer_and_no_decline_context():
    import random
    from dataclasses import replace

    from searc.augment import AugmentConfig, Augmenter
    from searc.batches import BatchSampler, counterfactual_examples, decline_examples

    scope_case = replace(CASES[2], scope_only=True)
    cases = [CASES[0], CASES[1], scope_case]
    inputs, _ = counterfactual_examples(cases, random.Random(0), drop_subject=0.0)
    assert len(inputs) == sum(len(c.in_scope) for c in cases[:2])
    probes, labels = scope_matrix(cases)
    assert labels.shape[0] == 3 and labels[2].sum() == len(scope_case.in_scope)  # the classifier still learns its scope
    logits = torch.zeros(labels.shape)
    logits[2] = 5.0  # every negative looks most like the scope-only edit
    declines = decline_examples(cases, probes, labels, logits, random.Random(0), drop_subject=0.0)
    assert declines and not any(scope_case.edit.prompt in text for text in declines)
    # a sampler with an augmenter that draws scope cases appends them after the batch's own cases
    sampler = BatchSampler(CASES, make_system("llama"), 4, 0.0, random.Random(0), Augmenter(CASES, AugmentConfig(scope_cases=1.0)))
    batch = sampler.sample()
    assert [c.scope_only for c in batch[:4]] == [False] * 4 and batch[4:] and all(c.scope_only for c in batch[4:])


def test_decline_target_is_the_end_of_sequence_token_alone():
    cf = make_system("llama").counterfactual
    batch = cf.make_batch(["New fact: a b.\nComplete: c d"], [""], append_eos=True)
    labelled = batch.labels[batch.labels != -100].tolist()
    assert labelled == [cf.tokenizer.eos_token_id]
    with pytest.raises(ValueError):
        cf.make_batch(["c d"], [""])  # an empty target needs the end-of-sequence token


def test_decline_loss_alone_trains_the_adapter_and_nothing_else():
    system = make_system("llama")
    lora_before = {n: p.clone() for n, p in system.counterfactual.model.named_parameters() if "lora_B" in n}
    head_before = {n: p.clone() for n, p in system.classifier.named_parameters() if p.requires_grad}
    config = TrainConfig(steps=2, batch_edits=4, val_every=2, val_cases=2, c_edit=0.0, c_cls=0.0, c_decline=1.0)
    events = list(train(system, CASES[:4], CASES[:2], config))
    assert all(e.losses["loss"] == pytest.approx(e.losses["decline_nll"]) for e in events if e.kind == "step")
    after = dict(system.counterfactual.model.named_parameters())
    assert any(not torch.equal(p, after[n]) for n, p in lora_before.items())
    classifier_after = dict(system.classifier.named_parameters())
    assert all(torch.equal(p, classifier_after[n]) for n, p in head_before.items())


def test_the_classifier_alone_trains_without_running_the_language_model(monkeypatch):
    """c_edit = c_decline = 0: the counterfactual model is never run and its adapter stays as it was."""
    system = make_system("llama")
    lora_before = {n: p.clone() for n, p in system.counterfactual.model.named_parameters() if "lora_" in n}
    classifier_before = {n: p.clone() for n, p in system.classifier.named_parameters() if system.classifier.is_trainable(n)}
    calls = []
    original = type(system.counterfactual).target_log_probs
    monkeypatch.setattr(type(system.counterfactual), "target_log_probs", lambda self, batch: calls.append(1) or original(self, batch))
    config = TrainConfig(steps=2, batch_edits=4, val_every=2, val_cases=2, c_edit=0.0, c_cls=1.0, c_decline=0.0)
    events = list(train(system, CASES[:4], CASES[:2], config))
    steps = [e for e in events if e.kind == "step"]
    assert all(e.losses["loss"] == pytest.approx(e.losses["bce"]) and "nll" not in e.losses for e in steps)
    lora_after = dict(system.counterfactual.model.named_parameters())
    assert all(torch.equal(p, lora_after[n]) for n, p in lora_before.items())
    classifier_after = dict(system.classifier.named_parameters())
    assert any(not torch.equal(p, classifier_after[n]) for n, p in classifier_before.items())
    assert len(calls) == 3  # validation's three teacher-forced checks alone


def tiny_train_run(tmp_path, capsys, out: str) -> list[str]:
    """`searc train` options for one step on tiny saved models (returned for more runs), after a first run into `out`."""
    from searc.cli import main
    from tests.conftest import require_shared_data, save_tiny_models

    data = require_shared_data()
    lm, encoder = save_tiny_models(tmp_path)
    common = ["--data", str(data / "counterfact/train.json"), "--limit", "6", "--val", str(data / "counterfact/val.json"),
              "--steps", "1", "--val-cases", "2", "--lm", lm, "--encoder", encoder]
    assert main(["train", *common, "--trainable-layers", "1", "--out", str(tmp_path / out)]) == 0, capsys.readouterr().err
    return common


def test_searc_tune_retunes_a_checkpoint_with_more_edits_in_memory(tmp_path, capsys, monkeypatch):
    """searc tune --memory M --limit K --json OUT: K cases probed beside M edits (of two validation
    sources taken in turn), the pair written into the checkpoint, the whole grid into OUT."""
    import json

    from searc.cli import main
    from searc.validation import DECLINE_GRID, NAME_WEIGHT_GRID, THRESHOLD_GRID
    from tests.conftest import require_shared_data

    monkeypatch.setattr("searc.cli.MIN_TUNE_CASES", 3)  # tiny models tune on a few cases
    common = tiny_train_run(tmp_path, capsys, "ck")
    capsys.readouterr()
    val, grid = require_shared_data() / "counterfact/val.json", tmp_path / "grid.json"
    argv = ["tune", "--checkpoint", str(tmp_path / "ck"), "--val", f"{val}[:5]", f"{val}[100:]", "--limit", "3", "--memory", "9", "--json", str(grid), *common[common.index("--lm") :]]  # the tiny models
    assert main(argv) == 0, capsys.readouterr().err
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    written = json.loads(grid.read_text())
    assert written["chosen"] == printed and printed["edits_in_memory"] == 9
    assert len(written["grid"]) == len(THRESHOLD_GRID) * len(DECLINE_GRID) * len(NAME_WEIGHT_GRID)
    config = read_checkpoint(tmp_path / "ck").config
    assert (config["threshold"], config["decline_threshold"]) == (printed["threshold"], printed["decline_threshold"])
    assert config["classifier"]["name_weight"] == printed["name_weight"]  # what routing reads when the checkpoint loads
    assert config["metrics"]["edits_in_memory"] == 9
    without_memory = [arg for arg in argv if arg not in ("--memory", "9")]
    assert main(without_memory) == 0, capsys.readouterr().err  # the --limit cases alone, however many sources hold more
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["edits_in_memory"] == 3
    # without --val: what the training validated on, which the record keeps as the user named it
    assert config["training"]["sources"] == {"data": [common[1]], "val": [common[common.index("--val") + 1]]}
    recorded = [arg for arg in without_memory if not arg.startswith(str(val))]
    recorded.remove("--val")
    assert main(recorded) == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["edits_in_memory"] == 3
    record = json.loads((tmp_path / "ck" / "searc.json").read_text())
    del record["training"]["sources"]  # a checkpoint from before the record kept them
    (tmp_path / "ck" / "searc.json").write_text(json.dumps(record))
    monkeypatch.setattr("searc.system.load_system", lambda *a, **k: pytest.fail("the models loaded before the record was checked"))
    assert main(recorded) == 2 and "does not record what it was validated on; give --val" in capsys.readouterr().err


def test_searc_tune_validation_of_tunes_on_another_checkpoints_validation_cases(tmp_path, capsys, monkeypatch):
    """--validation-of A: checkpoint B is tuned on the cases A's training validated on (A's
    augmentation and seed, A's sources without --val), not on its own rewritten targets."""
    import searc.validation
    from searc.cli import main

    monkeypatch.setattr("searc.cli.MIN_TUNE_CASES", 3)  # tiny models tune on a few cases
    common = tiny_train_run(tmp_path, capsys, "a")
    models = common[common.index("--lm") :]
    assert main(["train", *common, "--target-forms", "1", "--seed", "5", "--out", str(tmp_path / "b")]) == 0, capsys.readouterr().err
    seen, tune = [], searc.validation.tune_thresholds
    monkeypatch.setattr(searc.validation, "tune_thresholds", lambda system, cases, *rest, **options: seen.append(cases) or tune(system, cases, *rest, **options))
    for checkpoint, extra in (("a", []), ("b", []), ("b", ["--validation-of", str(tmp_path / "a")])):
        assert main(["tune", "--checkpoint", str(tmp_path / checkpoint), "--limit", "3", *extra, *models]) == 0, capsys.readouterr().err
    own_a, own_b, b_as_a = seen
    assert own_b != own_a and b_as_a == own_a  # B's own validation rewrites every target; A's does not
    assert read_checkpoint(tmp_path / "b").config["metrics"]["validation_of"] == str(tmp_path / "a")
    assert main(["tune", "--checkpoint", str(tmp_path / "b"), "--limit", "3", *models]) == 0, capsys.readouterr().err
    assert read_checkpoint(tmp_path / "b").config["metrics"]["validation_of"] is None  # a plain re-tune says so
    assert main(["tune", "--checkpoint", str(tmp_path / "b"), "--validation-of", str(tmp_path / "none"), *models]) == 2
    assert "no checkpoint directory" in capsys.readouterr().err


def test_searc_tune_warns_and_records_when_no_pair_keeps_the_decline_cap(tmp_path, capsys, monkeypatch):
    """The tuning found no pair within the cap: searc tune says so and the checkpoint records it."""
    import dataclasses

    import searc.validation
    from searc.cli import main

    monkeypatch.setattr("searc.cli.MIN_TUNE_CASES", 3)
    common = tiny_train_run(tmp_path, capsys, "ck")
    models = common[common.index("--lm") :]
    tune = searc.validation.tune_thresholds
    monkeypatch.setattr(searc.validation, "tune_thresholds", lambda *a, **k: dataclasses.replace(tune(*a, **k), within_cap=False))
    assert main(["tune", "--checkpoint", str(tmp_path / "ck"), "--limit", "3", *models]) == 0
    warning = capsys.readouterr().err
    assert "no pair of the grid declines at most 2.0%" in warning and "nan" not in warning  # no held-out relations here
    assert read_checkpoint(tmp_path / "ck").config["metrics"]["within_decline_cap"] is False
    monkeypatch.setattr(searc.validation, "tune_thresholds", tune)
    assert main(["tune", "--checkpoint", str(tmp_path / "ck"), "--limit", "3", *models]) == 0
    assert "no pair" not in capsys.readouterr().err
    assert read_checkpoint(tmp_path / "ck").config["metrics"]["within_decline_cap"] is True


def test_training_can_continue_from_a_checkpoint(tmp_path, capsys):
    """searc train --init: the run starts from the checkpoint's classifier and adapter and records where it began."""
    from searc.cli import main

    common = tiny_train_run(tmp_path, capsys, "first")
    argv = ["train", *common, "--init", str(tmp_path / "first"), "--c-edit", "0", "--c-decline", "0", "--out", str(tmp_path / "second")]
    assert main(argv) == 0, capsys.readouterr().err
    first, second = (read_checkpoint(tmp_path / name) for name in ("first", "second"))
    assert second.config["training"]["init"] == str(tmp_path / "first")
    assert second.config["classifier"]["trainable_layers"] == 1  # the checkpoint's settings, not the flag's default
    assert all(torch.equal(first.adapter_state[k], second.adapter_state[k]) for k in first.adapter_state)
    assert any(not torch.equal(first.classifier_state[k], second.classifier_state[k]) for k in first.classifier_state)
    assert (first.config["training"]["classifier_init"], second.config["training"]["classifier_init"]) == ("untrained", "checkpoint")
    # the first stage's record travels with the second, so a staged recipe keeps every stage's settings
    assert first.config["training"]["init_training"] is None
    assert second.config["training"]["init_training"] == first.config["training"]
    assert second.config["training"]["config"]["c_edit"] == 0 and first.config["training"]["config"]["c_edit"] == 1


def test_a_new_classifier_can_be_trained_beside_a_checkpoints_counterfactual_model(tmp_path, capsys):
    """searc train --init CK --new-classifier --variant cross: CK's adapter, a cross-encoder trained from the encoder."""
    from searc.cli import main

    common = tiny_train_run(tmp_path, capsys, "dense")
    argv = ["train", *common, "--init", str(tmp_path / "dense"), "--new-classifier", "--variant", "cross", "--trainable-layers", "2",
            "--c-edit", "0", "--c-decline", "0", "--out", str(tmp_path / "cross")]
    assert main(argv) == 0, capsys.readouterr().err
    dense, cross = (read_checkpoint(tmp_path / name) for name in ("dense", "cross"))
    assert cross.config["classifier"]["variant"] == "cross" and cross.config["classifier"]["trainable_layers"] == 2
    assert cross.config["training"]["classifier_init"] == "untrained" and cross.config["training"]["init"] == str(tmp_path / "dense")
    assert dense.adapter_state.keys() == cross.adapter_state.keys()
    assert all(torch.equal(dense.adapter_state[k], cross.adapter_state[k]) for k in dense.adapter_state)
    assert main(["train", *common, "--new-classifier", "--out", str(tmp_path / "x")]) == 2
    assert "--new-classifier goes with --init" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_tuning_at_scale_holds_more_edits_in_memory_that_can_take_probes(monkeypatch):
    """Stored edits are scored against the probed cases' probes: one that draws an out-of-scope
    probe raises the threshold, and a re-edit of a probed case's fact is not stored."""
    import searc.validation
    from searc.validation import tune_thresholds

    cases, stored = CASES[:3], [CASES[3], CASES[0]]  # CASES[0] again: a re-edit, left out of memory
    probes, labels = scope_matrix(cases)
    fake = torch.cat([torch.where(labels.T.bool(), torch.tensor(0.9), torch.tensor(0.1)), torch.full((len(probes), 1), 0.1)], dim=1)
    fake[~labels.any(0), 3] = 0.7  # the stored edit draws every out-of-scope probe
    fake_classifier_scores(monkeypatch, fake)
    monkeypatch.setattr(searc.validation, "end_probabilities", lambda system, prompts, edits: [0.0] * len(prompts))
    alone = tune_thresholds(make_system("llama"), cases)
    assert alone.threshold == 0.5 and alone.edits_in_memory == 3
    at_scale = tune_thresholds(make_system("llama"), cases, stored=stored)
    assert at_scale.edits_in_memory == 4 and at_scale.threshold == 0.75
    assert at_scale.batch_recall == 1.0 and at_scale.batch_locality == 1.0


def test_tuning_counts_a_declined_route_as_left_to_the_base_model(monkeypatch):
    import searc.validation
    from searc.validation import tune_thresholds

    cases = CASES[:3]
    probes, labels = scope_matrix(cases)
    fake = torch.where(labels.T.bool(), torch.tensor(0.9), torch.tensor(0.1))
    fake[~labels.any(0), 0] = 0.95  # out-of-scope probes outscore every in-scope one ...
    fake_classifier_scores(monkeypatch, fake)
    out_of_scope = {p.prompt for c in cases for p in c.out_of_scope}
    # ... but the counterfactual model declines them all
    monkeypatch.setattr(searc.validation, "end_probabilities", lambda system, prompts, edits: [float(p in out_of_scope) for p in prompts])
    tuned = tune_thresholds(make_system("llama"), cases)
    assert tuned.batch_recall == 1.0 and tuned.batch_locality == 1.0 and tuned.declined_false_routes == 1.0
    assert tuned.declined_own_routes == 0.0


def test_tuning_reports_the_recall_on_held_out_relations_apart(monkeypatch):
    import searc.validation
    from searc.validation import tune_thresholds

    died = EditCase(Edit("Ada Lovelace died in", "Rome", subject="Ada Lovelace"),
                    (Probe("Ada Lovelace died in", "Rome"), Probe("Ada Lovelace passed away in", "Rome")), ())
    cases = [*CASES[:3], died]
    probes, labels = scope_matrix(cases)
    fake = torch.where(labels.T.bool(), torch.tensor(0.9), torch.tensor(0.1))
    fake[~labels.any(0), 0] = 0.5  # out-of-scope probes: locality needs a threshold above 0.5 ...
    fake[len(probes) - 1, 3] = 0.3  # ... which the held-out case's paraphrase does not reach
    fake_classifier_scores(monkeypatch, fake)
    monkeypatch.setattr(searc.validation, "end_probabilities", lambda system, prompts, edits: [0.0] * len(prompts))
    tuned = tune_thresholds(make_system("llama"), cases, held_out=("P20",))
    assert tuned.threshold > 0.5 and tuned.batch_recall_held_out == 0.5 and tuned.batch_recall == pytest.approx(7 / 8)
    assert math.isnan(tune_thresholds(make_system("llama"), cases).batch_recall_held_out)  # none held out


def route_every_probe(monkeypatch, cases: list[EditCase]) -> set[str]:
    """Fake classifier scores for tuning: each in-scope probe routed to its own edit, every
    out-of-scope probe to the first edit (0.97); returns the out-of-scope prompts."""

    _, labels = scope_matrix(cases)
    fake = torch.where(labels.T.bool(), torch.tensor(0.97), torch.tensor(0.01))
    fake[~labels.any(0), 0] = 0.97
    fake_classifier_scores(monkeypatch, fake)
    return {p.prompt for c in cases for p in c.out_of_scope}


@pytest.mark.parametrize("in_scope_end, out_of_scope_end, expected", [(0.45, 0.55, 0.5), (0.65, 0.75, 0.7), (0.1, 0.25, 0.2)])
def test_the_decline_threshold_is_tuned_between_in_scope_and_out_of_scope_end_probabilities(monkeypatch, in_scope_end, out_of_scope_end, expected):
    """Every probe is routed; only a decline threshold between the two end probabilities gets both
    recall and locality, wherever they lie (ending at once need not be the likeliest token)."""
    import searc.validation
    from searc.validation import tune_thresholds

    cases = CASES[:3]
    out_of_scope = route_every_probe(monkeypatch, cases)
    ends = lambda system, prompts, edits: [out_of_scope_end if p in out_of_scope else in_scope_end for p in prompts]
    monkeypatch.setattr(searc.validation, "end_probabilities", ends)
    tuned = tune_thresholds(make_system("llama"), cases)
    assert tuned.decline_threshold == expected
    assert tuned.batch_recall == 1.0 and tuned.batch_locality == 1.0


def test_tuning_keeps_to_pairs_that_rarely_decline_in_scope_probes(monkeypatch):
    """One in-scope probe ends more surely than the out-of-scope ones: the best-scoring pair declines
    it (1 of 6 own routes), so within the cap the decline threshold rises above it instead."""
    import searc.validation
    from searc.validation import DECLINE_GRID, MAX_DECLINED_OWN_ROUTES, NAME_WEIGHT_GRID, THRESHOLD_GRID, tune_thresholds

    cases = CASES[:3]
    out_of_scope = route_every_probe(monkeypatch, cases)

    sure_to_end = cases[1].in_scope[1].prompt
    ends = lambda system, prompts, edits: [0.75 if p in out_of_scope else 0.8 if p == sure_to_end else 0.1 for p in prompts]
    monkeypatch.setattr(searc.validation, "end_probabilities", ends)
    free = tune_thresholds(make_system("llama"), cases)  # no cap unless asked: training's validation
    assert free.decline_threshold == 0.5 and free.declined_own_routes == pytest.approx(1 / 6) and free.batch_locality == 1.0
    capped = tune_thresholds(make_system("llama"), cases, max_declined_own_routes=MAX_DECLINED_OWN_ROUTES)  # searc tune's: 2%
    assert capped.decline_threshold == 0.9 and capped.declined_own_routes == 0.0 and capped.batch_recall == 1.0
    assert len(capped.grid) == len(THRESHOLD_GRID) * len(DECLINE_GRID) * len(NAME_WEIGHT_GRID)  # every setting reported, the free choice the best
    assert max(p.score for p in capped.grid) == pytest.approx((free.batch_recall + free.batch_locality) / 2)


def test_tuning_reaches_an_eager_decline_near_one_and_says_when_no_pair_keeps_the_cap(monkeypatch):
    """A counterfactual model that ends almost surely on an in-scope probe (0.993) is brought within
    the cap by the grid's fine top (0.995); one that ends surer than the grid reaches (0.9995) keeps
    no pair within it, and the tuning says so instead of passing the best of all as capped."""
    import searc.validation
    from searc.validation import MAX_DECLINED_OWN_ROUTES, tune_thresholds

    cases = CASES[:3]
    out_of_scope = route_every_probe(monkeypatch, cases)
    eager = cases[1].in_scope[1].prompt

    def tune(end_of_eager: float):
        ends = lambda system, prompts, edits: [0.999 if p in out_of_scope else end_of_eager if p == eager else 0.1 for p in prompts]
        monkeypatch.setattr(searc.validation, "end_probabilities", ends)
        return tune_thresholds(make_system("llama"), cases, max_declined_own_routes=MAX_DECLINED_OWN_ROUTES)

    near_one = tune(0.993)
    assert near_one.within_cap and near_one.decline_threshold == 0.995 and near_one.declined_own_routes == 0.0
    assert near_one.batch_locality == 1.0 and "within_cap" not in near_one.metrics()
    beyond = tune(0.9995)
    assert not beyond.within_cap and beyond.declined_own_routes == pytest.approx(1 / 6)


def test_tuning_keeps_the_decline_cap_on_the_held_out_relations_too(monkeypatch):
    """One in-scope probe of a held-out relation (place of death) ends more surely than the
    out-of-scope ones: 1 of 62 own routes is under the 2% cap, but 1 of the held-out relation's 2 is
    not, so the decline threshold rises above it."""
    import searc.validation
    from searc.validation import MAX_DECLINED_OWN_ROUTES, tune_thresholds

    tongues = [
        EditCase(Edit(f"The mother tongue of Person {i} is", "French", subject=f"Person {i}"),
                 (Probe(f"The mother tongue of Person {i} is", "French"), Probe(f"Person {i} is a native speaker of", "French")),
                 (Probe(f"The mother tongue of Stranger {i} is", "Dutch"),))
        for i in range(30)
    ]
    death = EditCase(Edit("Sedat Alp died in", "Rome", subject="Sedat Alp"),
                     (Probe("Sedat Alp died in", "Rome"), Probe("Sedat Alp passed away in", "Rome")),
                     (Probe("Maso da San Friano died in", "Florence"),))
    cases = [*tongues, death]
    out_of_scope = route_every_probe(monkeypatch, cases)
    ends = lambda system, prompts, edits: [0.75 if p in out_of_scope else 0.8 if p == "Sedat Alp passed away in" else 0.1 for p in prompts]
    monkeypatch.setattr(searc.validation, "end_probabilities", ends)
    plain = tune_thresholds(make_system("llama"), cases, max_declined_own_routes=MAX_DECLINED_OWN_ROUTES)  # nothing held out
    assert plain.decline_threshold <= 0.75 and plain.declined_own_routes == pytest.approx(1 / 62)
    assert math.isnan(plain.declined_own_routes_held_out)
    held = tune_thresholds(make_system("llama"), cases, held_out=("P20",), max_declined_own_routes=MAX_DECLINED_OWN_ROUTES)
    assert held.decline_threshold > 0.8 and held.declined_own_routes_held_out == 0.0
    free = tune_thresholds(make_system("llama"), cases, held_out=("P20",))  # training's validation: no cap
    assert free.decline_threshold == plain.decline_threshold and free.declined_own_routes_held_out == 0.5


def test_tuning_leaves_out_prompts_another_edit_claims(monkeypatch):
    """A locality prompt asking for another stored edit's old fact is that edit's own: routing it is right."""
    from searc.validation import tune_thresholds

    subject_case = EditCase(Edit("Toko Yasuda plays the", "guitar", subject="Toko Yasuda", target_true="piano"),
                            (Probe("Toko Yasuda plays the", "guitar"), Probe("Toko Yasuda performs on the", "guitar")),
                            (Probe("The instrument of Toko Yasuda's bandmate is the", "bass"),))
    claiming_case = EditCase(Edit("The fact about Sweden is", "Rome", subject="Sweden"),
                             (Probe("The fact about Sweden is", "Rome"), Probe("Sweden's fact says", "Rome")),
                             (Probe("Toko Yasuda is known to play the", "piano"),))  # names Toko Yasuda, expects the old answer
    cases = [subject_case, claiming_case]
    probes, labels = scope_matrix(cases)
    fake = torch.where(labels.T.bool(), torch.tensor(0.9), torch.tensor(0.1))
    fake[probes.index("Toko Yasuda is known to play the"), 0] = 0.95  # routed to the edit it asks about
    fake_classifier_scores(monkeypatch, fake)
    monkeypatch.setattr("searc.validation.end_probabilities", lambda system, prompts, edits: [0.0] * len(prompts))
    tuned = tune_thresholds(make_system("llama"), cases)
    assert tuned.claimed_prompts == 1
    assert tuned.batch_recall == 1.0 and tuned.batch_locality == 1.0


def test_tuning_leaves_out_rewordings_that_ask_another_fact(monkeypatch):
    """CounterFact's "X was born in" beside X's mother tongue is not the edited fact: not routing it costs no recall."""
    from searc.validation import tune_thresholds

    subject = "Thomas Joannes Stieltjes"
    case = EditCase(Edit(f"The mother tongue of {subject} is", "English", subject=subject),
                    (Probe(f"The mother tongue of {subject} is", "English"), Probe(f"{subject} was born in", "English")),
                    (Probe("Arend Lijphart is a native speaker of", "Dutch"),))
    other = EditCase(Edit("The fact about Sweden is", "Rome", subject="Sweden"),
                     (Probe("The fact about Sweden is", "Rome"),), (Probe("The fact about Norway is", "Oslo"),))
    cases = [case, other]
    probes, labels = scope_matrix(cases)
    fake = torch.where(labels.T.bool(), torch.tensor(0.9), torch.tensor(0.1))
    fake[probes.index(f"{subject} was born in"), 0] = 0.1  # left to the base model
    fake_classifier_scores(monkeypatch, fake)
    monkeypatch.setattr("searc.validation.end_probabilities", lambda system, prompts, edits: [0.0] * len(prompts))
    tuned = tune_thresholds(make_system("llama"), cases)
    assert tuned.batch_recall == 1.0 and tuned.batch_locality == 1.0


def test_bf16_autocast_trains_close_to_float32():
    """--mixed-precision bf16 (Accelerate's autocast; here on the CPU) runs the forwards in bfloat16:
    the losses move a little, not a lot, and training still moves the adapter."""
    _, plain_events = run()
    system, bf16_events = run(TrainConfig(**{**CONFIG.__dict__, "mixed_precision": "bf16"}))
    plain = [e.losses["nll"] for e in plain_events if e.kind == "step"]
    bf16 = [e.losses["nll"] for e in bf16_events if e.kind == "step"]
    assert plain != bf16, "autocast must have run the forwards in bfloat16"
    assert bf16 == pytest.approx(plain, rel=0.1)
    assert all(p.dtype == torch.float32 for p in system.counterfactual.model.parameters())  # weights stay float32
