"""Subjects checked by name: word shares, and the memory's index kept in step with its edits."""

from __future__ import annotations

import pytest

from searc.memory import Edit, EditMemory
from searc.names import NameIndex
from tests.conftest import make_system

EDITS = [
    Edit("Which position does Ahmad Brooks play?", "quarterback", subject="Ahmad Brooks"),
    Edit("The Beatles was formed in", "Rome", subject="The Beatles"),
    Edit("Émile Zola is a native speaker of", "English", subject="Émile Zola"),
    Edit("東京 is the capital of", "Peru", subject="東京"),  # no Latin letters: not checked
    Edit("The Eiffel Tower is located in the city of", "Rome"),  # no subject: not checked
]
PROBES = ["Aaron Brooks plays in the position of", "Where were the beatles formed? In", "EMILE ZOLA's mother tongue is", "Nothing here"]


def test_a_match_is_the_share_of_the_subject_a_probe_names():
    assert NameIndex(e.subject for e in EDITS).match(PROBES).tolist() == [
        [0.5, 0.0, 0.0, 1.0, 1.0],  # half of "Ahmad Brooks"
        [0.0, 1.0, 0.0, 1.0, 1.0],  # "The" is a filler, case aside
        [0.0, 0.0, 1.0, 1.0, 1.0],  # accents, case and the possessive aside
        [0.0, 0.0, 0.0, 1.0, 1.0],
    ]
    assert NameIndex(e.subject for e in EDITS).match([]).shape == (0, 5) and NameIndex().match(PROBES).shape == (4, 0)


def test_the_memory_keeps_its_name_index_in_step_with_adds_removals_and_clears():
    classifier = make_system().classifier
    memory = EditMemory()
    memory.add(EDITS[:2], classifier)
    first = memory.names()
    assert memory.names() is first  # built once
    memory.add(EDITS[2:], classifier)
    assert memory.names() is first and len(first) == 5  # extended, not rebuilt
    memory.remove(memory.edits[0].id)
    assert memory.names().match(PROBES[:1]).tolist() == [[0.0, 0.0, 1.0, 1.0]]  # "Ahmad Brooks" is gone
    memory.clear()
    assert len(memory.names()) == 0
    memory.add([Edit("By which company, D&RGW 463 has been manufactured?", "Baldwin", subject="Rio Grande 463")], classifier)
    assert memory.names().match(["Who made D&RGW 463?"]).tolist() == [[1.0]]  # a subject its own prompt does not name is not checked


def test_a_name_spelt_another_way_is_named_but_not_another_name_or_number():
    from searc.names import spelt_alike

    index = NameIndex(["Nebaioth", "4 Sagittarii", "Ahmad Brooks", "Louisiana Highway 91"])
    probes = ["Who's Nebajoths Dad?", "The star 4 Sagittarius is part of what constellation?", "Aaron Brooks plays", "Louisiana Highway 14 ends in"]
    assert index.match(probes).tolist() == [
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 0.0, 0.0],
        [0.0, 0.0, 0.5, 0.0],
        [0.0, 0.0, 0.0, pytest.approx(2 / 3)],  # "14" is not "91"
    ]
    assert spelt_alike("georg", "george") and not spelt_alike("aaron", "ahmad") and not spelt_alike("brooks", "crooks")
