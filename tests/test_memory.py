"""The edit memory: records, ids, validation, all-or-nothing adds, keys computed once."""

from __future__ import annotations

import pytest
import torch

from searc.memory import Edit, EditMemory, EmbeddingKeys, MAX_TEXT_CHARS


class CountingClassifier:
    """Keys are 2-d vectors; counts how many edits were ever keyed."""

    def __init__(self) -> None:
        self.key_version = "v1"
        self.keyed = 0

    def new_key_store(self) -> EmbeddingKeys:
        return EmbeddingKeys(2)

    def edit_keys(self, edits):
        self.keyed += len(edits)
        return torch.tensor([[float(len(e.prompt)), float(len(e.target_new))] for e in edits])


def test_add_list_remove_clear():
    memory, classifier = EditMemory(), CountingClassifier()
    stored = memory.add([Edit("The Eiffel Tower is in", "Rome"), Edit("The capital of Japan is", "Kyoto", subject="Japan")], classifier)
    assert [e.id for e in stored] == ["e1", "e2"]
    assert [e.prompt for e in memory] == ["The Eiffel Tower is in", "The capital of Japan is"]
    assert memory.get("e2").subject == "Japan"
    assert memory.keys.matrix.tolist() == [[22.0, 4.0], [23.0, 5.0]]
    removed = memory.remove("e1")
    assert removed.target_new == "Rome" and len(memory) == 1
    assert memory.keys.matrix.tolist() == [[23.0, 5.0]], "keys must stay aligned with edits after removal"
    third = memory.add([Edit("Toko Yasuda plays the", "piano")], classifier)[0]
    assert third.id == "e3", "ids are never reused"
    memory.clear()
    assert len(memory) == 0 and memory.keys is None
    with pytest.raises(KeyError):
        memory.remove("e3")


def test_keys_are_computed_once_per_edit_not_per_use():
    memory, classifier = EditMemory(), CountingClassifier()
    memory.add([Edit(f"prompt number {i}", "x") for i in range(5)], classifier)
    for _ in range(10):
        memory.ensure_keys(classifier)
    assert classifier.keyed == 5
    classifier.key_version = "v2"  # new classifier weights: re-key once
    memory.ensure_keys(classifier)
    memory.ensure_keys(classifier)
    assert classifier.keyed == 10


@pytest.mark.parametrize(
    "bad, message",
    [
        (Edit("", "Rome"), "prompt is empty"),
        (Edit("   \t ", "Rome"), "prompt is empty"),
        (Edit("The Eiffel Tower is in", " "), "target is empty"),
        (Edit("x" * (MAX_TEXT_CHARS + 1), "Rome"), "limit"),
        (Edit("bell \x07 here", "Rome"), "control characters"),
        (Edit("Rome", "rome"), "equals the prompt"),
        (Edit("The capital of Japan is", "Osaka"), "already stored"),
    ],
)
def test_bad_edits_are_refused_and_nothing_changes(bad, message):
    memory, classifier = EditMemory(), CountingClassifier()
    memory.add([Edit("The capital of Japan is", "Kyoto")], classifier)
    before = (list(memory.edits), memory.keys.matrix.clone())
    with pytest.raises(ValueError, match=message):
        memory.add([Edit("A fine new prompt", "fine"), bad], classifier)  # the good one must not land either
    assert memory.edits == before[0]
    assert torch.equal(memory.keys.matrix, before[1])


def test_unicode_text_is_accepted():
    memory = EditMemory()
    stored = memory.add([Edit("عاصمة مصر هي", "القاهرة 🏙️")], CountingClassifier())
    assert stored[0].target_new == "القاهرة 🏙️"


def test_embedding_keys_grow_contiguously():
    keys = EmbeddingKeys(3)
    for i in range(100):
        keys.append(torch.full((1, 3), float(i)))
    assert len(keys) == 100 and keys.matrix.is_contiguous()
    keys.delete(0)
    keys.delete(50)
    assert keys.matrix[:, 0].tolist() == [float(i) for i in range(1, 100) if i != 51]


def test_a_full_memory_refuses_more_and_keeps_what_it_has():
    memory, classifier = EditMemory(max_edits=3), CountingClassifier()
    memory.add([Edit(f"Fact {i} is", "x") for i in range(2)], classifier)
    with pytest.raises(ValueError, match="at most 3 edits"):
        memory.add([Edit("Fact 2 is", "x"), Edit("Fact 3 is", "x")], classifier)
    assert [e.prompt for e in memory] == ["Fact 0 is", "Fact 1 is"] and len(memory.keys) == 2
    memory.add([Edit("Fact 2 is", "x")], classifier)
    assert len(memory) == 3
