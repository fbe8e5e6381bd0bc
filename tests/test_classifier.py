"""Scope classifiers: shapes, probabilities, keys cached at add time, pair path == matrix path."""

from __future__ import annotations

import pytest
import torch

from searc.classifier import calibrate
from searc.memory import Edit, EditMemory
from tests.conftest import make_system

EDITS = [
    Edit("The Eiffel Tower is located in the city of", "Rome"),
    Edit("The mother tongue of Danielle Darrieux is", "English"),
    Edit("Toko Yasuda plays the", "piano"),
]
PROBES = ["The Eiffel Tower stands in", "The capital of Japan is", "Michel Rocard is a native speaker of", "UniFirst makes"]


@pytest.mark.parametrize("variant", ["dense", "cross"])
def test_scores_are_an_inputs_by_edits_probability_matrix(variant):
    classifier = make_system(variant=variant).classifier
    memory = EditMemory()
    memory.add(EDITS, classifier)
    scores = classifier.scores(PROBES, memory)
    assert scores.shape == (len(PROBES), len(EDITS))
    assert ((scores >= 0) & (scores <= 1)).all()
    assert classifier.scores(PROBES, EditMemory()).shape == (len(PROBES), 0)
    assert classifier.scores([], memory).shape == (0, len(EDITS))


@pytest.mark.parametrize("variant", ["dense", "cross"])
def test_pair_logits_agree_with_the_score_matrix(variant):
    """Training uses pair_logits, routing uses scores: they must be the same function."""
    classifier = make_system(variant=variant).classifier
    memory = EditMemory()
    memory.add(EDITS, classifier)
    matrix = classifier.scores(PROBES, memory)
    with torch.no_grad():
        for i, probe in enumerate(PROBES):
            pairs = torch.sigmoid(classifier.pair_logits(EDITS, [probe] * len(EDITS)))
            assert pairs.tolist() == pytest.approx(matrix[i].tolist(), abs=1e-5)


def test_dense_keys_are_not_recomputed_per_probe(monkeypatch):
    classifier = make_system(variant="dense").classifier
    memory = EditMemory()
    memory.add(EDITS, classifier)
    embedded: list[int] = []
    original = classifier.embed
    monkeypatch.setattr(classifier, "embed", lambda texts: embedded.append(len(texts)) or original(texts))
    classifier.scores(PROBES, memory)
    classifier.scores(PROBES[:1], memory)
    assert embedded == [len(PROBES), 1], "only the probes may be encoded when scoring"


def test_changed_weights_rekey_the_memory():
    classifier = make_system(variant="dense").classifier
    memory = EditMemory()
    memory.add(EDITS, classifier)
    before = memory.keys.matrix.clone()
    with torch.no_grad():
        classifier.encoder.embeddings.word_embeddings.weight.mul_(2.0).add_(0.1)
    classifier.weights_changed()
    classifier.scores(PROBES, memory)
    assert not torch.allclose(before, memory.keys.matrix)
    assert torch.allclose(memory.keys.matrix, classifier.edit_keys(EDITS))


def test_dense_score_is_sigmoid_of_scaled_cosine():
    classifier = make_system(variant="dense").classifier
    memory = EditMemory()
    memory.add(EDITS[:1], classifier)
    with torch.no_grad():
        cosine = float((classifier.embed([EDITS[0].prompt]) * classifier.embed([PROBES[0]])).sum())
    expected = torch.sigmoid(torch.tensor(classifier.config.scale * cosine + classifier.config.bias))
    assert float(classifier.scores(PROBES[:1], memory)[0, 0]) == pytest.approx(float(expected), abs=1e-5)


@pytest.mark.parametrize("variant", ["dense", "cross"])
def test_the_name_weight_lowers_the_logit_by_the_share_of_the_subject_a_probe_lacks(variant):
    classifier = make_system(variant=variant).classifier
    classifier.config.top_k = 0  # cross: every edit scored
    memory = EditMemory()
    memory.add([Edit("Which position does Ahmad Brooks play?", "quarterback", subject="Ahmad Brooks"), *EDITS], classifier)
    probes = ["Aaron Brooks plays in the position of", "Ahmad Brooks plays in the position of", *PROBES]
    unchecked = classifier.scores(probes, memory)
    classifier.config.name_weight = 4.0
    checked = classifier.scores(probes, memory)
    shift = torch.logit(checked[:, 0].double()) - torch.logit(unchecked[:, 0].double())
    assert shift.tolist() == pytest.approx([-2.0, 0.0] + [-4.0] * len(PROBES), abs=1e-3)  # half named, named whole, not named
    assert torch.equal(checked[:, 1:], unchecked[:, 1:])  # edits stored without a subject are not checked


def test_only_top_layers_and_head_are_trainable():
    classifier = make_system(variant="cross").classifier
    names = [n for n, _ in classifier.named_parameters() if classifier.is_trainable(n)]
    assert any(n.startswith("head.") for n in names)
    assert all(".layer.0." not in n for n in names) and any(".layer.1." in n for n in names)
    assert set(classifier.trainable_state_dict()) == set(names)


def test_calibration_separates_classes():
    classifier = make_system(variant="dense").classifier
    same = [(Edit(f"The Eiffel Tower is located in the city of {i}", "Rome"), f"The Eiffel Tower is located in the city of {i}", True) for i in range(8)]
    other = [(Edit(f"The Eiffel Tower is located in the city of {i}", "Rome"), "uniform unmanned aircraft football", False) for i in range(8)]
    scale, bias = calibrate(classifier, same + other)
    assert scale > 0
    with pytest.raises(ValueError):
        calibrate(classifier, same)
    swapped = [(edit, text, not label) for edit, text, label in same + other]  # in scope = the unlike input: no calibration can hold
    with pytest.raises(ValueError, match="no more similar"):
        calibrate(classifier, swapped)


@pytest.mark.parametrize("variant", ["dense", "cross"])
@pytest.mark.parametrize("pair_chunk", [256, 5])
def test_matrix_logits_agree_with_pair_logits(variant, pair_chunk, monkeypatch):
    """The cross-encoder's pairs go through the encoder PAIR_CHUNK at a time: the same logits, in order."""
    monkeypatch.setattr("searc.classifier.PAIR_CHUNK", pair_chunk)
    classifier = make_system(variant=variant).classifier
    with torch.no_grad():
        matrix = classifier.matrix_logits(EDITS, PROBES)
        assert matrix.shape == (len(EDITS), len(PROBES))
        for i, edit in enumerate(EDITS):
            assert classifier.pair_logits([edit] * len(PROBES), PROBES).tolist() == pytest.approx(matrix[i].tolist(), abs=1e-5)


def test_cross_encoder_scores_only_the_top_k_retrieved_edits():
    from dataclasses import replace

    system = make_system(variant="cross")
    classifier = system.classifier
    edits = EDITS + [Edit("Toko Yasuda was born in", "Tokyo"), Edit("UniFirst makes uniforms in", "Ohio")]
    memory = EditMemory()
    memory.add(edits, classifier)
    classifier.config = replace(classifier.config, top_k=0)
    exhaustive = classifier.scores(PROBES, memory)
    classifier.config = replace(classifier.config, top_k=2)
    top2 = classifier.scores(PROBES, memory)
    with torch.no_grad():
        nearest = (classifier.embed(PROBES) @ classifier.embed([e.prompt for e in edits]).T).topk(2, dim=1).indices
    for row in range(len(PROBES)):
        chosen = set(nearest[row].tolist())
        assert set(torch.nonzero(top2[row]).flatten().tolist()) <= chosen
        for column in range(len(edits)):
            expected = exhaustive[row, column] if column in chosen else 0.0
            assert float(top2[row, column]) == pytest.approx(float(expected), abs=1e-5)
    classifier.config = replace(classifier.config, top_k=len(edits))  # k covers the memory: every edit
    assert torch.allclose(classifier.scores(PROBES, memory), exhaustive, atol=1e-6)


def test_cross_encoder_keys_follow_removals():
    classifier = make_system(variant="cross").classifier
    memory = EditMemory()
    stored = memory.add(EDITS, classifier)
    memory.remove(stored[0].id)
    assert len(memory.keys) == 2 and len(memory.keys.embeddings) == 2
    assert torch.allclose(memory.keys.embeddings.matrix, classifier.edit_keys(EDITS[1:])[1])
    assert memory.keys.token_ids == classifier.edit_token_ids(EDITS[1:])
