"""A workspace in a link: it opens the same state in an independent session, and every bad link
or oversized state is refused with a message."""

from __future__ import annotations

import base64
import json
import zlib

import pytest

from searc.lessons import load_lessons
from searc.memory import Edit
from searc.session import Session
from searc.sharing import MAX_TOKEN_CHARS, QUERY_PARAMETER, SharedWorkspace, SharingError
from tests.conftest import make_system
from tests.test_editor import perturb_adapter


@pytest.fixture(scope="module")
def system():
    system = make_system("llama", padding_side="left")
    perturb_adapter(system)
    return system


def token_of(data) -> str:
    return base64.urlsafe_b64encode(zlib.compress(json.dumps(data).encode())).decode().rstrip("=")


def test_a_shared_workspace_opens_the_same_state_in_an_independent_session(system):
    teacher = Session(system)
    teacher.add_edit("The Eiffel Tower is located in the city of", "Rome", "Eiffel Tower")
    teacher.add_edit("Toko Yasuda plays the", "piano")
    teacher.editor.finish_targets = False
    probes = "The Eiffel Tower stands in\nToko Yasuda is great at the"
    link = teacher.shared_workspace(probes, 0.42, 0.7).link("http://class.example:7860/?old=1#top")
    assert link.startswith(f"http://class.example:7860/?{QUERY_PARAMETER}=")

    student = Session(system)
    results = student.open_shared(SharedWorkspace.from_token(link.split("=", 1)[1]))
    assert [(e.prompt, e.target_new, e.subject) for e in student.editor.edits] == [
        (e.prompt, e.target_new, e.subject) for e in teacher.editor.edits]
    assert [r.prompt for r in results] == probes.splitlines()
    assert (student.editor.threshold, student.editor.decline_threshold, student.editor.finish_targets) == (0.42, 0.7, False)
    student.add_edit("The capital of Japan is", "Osaka")
    student.remove_edit("e1")
    assert len(teacher.editor.edits) == 2 and teacher.editor.edits[0].id == "e1"  # the student's changes stay the student's


def test_a_shared_lesson_is_the_students_lesson_too(system):
    lesson = next(lesson for lesson in load_lessons() if lesson.threshold is None)
    teacher = Session(system)
    teacher.load_lesson(lesson)
    shared = teacher.shared_workspace(lesson.probes_text(), teacher.editor.threshold)
    assert shared.lesson == lesson.title
    student = Session(system)
    student.open_shared(SharedWorkspace.from_token(shared.to_token()))
    assert student.active_lesson == lesson and student.lesson_checks()
    teacher.add_edit("The capital of Japan is", "Osaka")  # no longer the lesson: not shared as one
    assert teacher.shared_workspace("x", 0.5).lesson is None


def test_a_workspace_too_large_for_a_link_is_refused_when_shared(system):
    session = Session(system)
    session.editor.add_edits([Edit(f"Fact {i} of a long list: {i * 7919} is", f"value {i * 104729}")
                              for i in range(600)])
    with pytest.raises(SharingError, match="too large for a link .*600 edits.*export the memory as JSON"):
        session.shared_workspace("probe", 0.5).to_token()


@pytest.mark.parametrize("token, message", [
    ("", "not a workspace link"),
    ("x" * (MAX_TOKEN_CHARS + 1), "not a workspace link"),
    ("not*base64!", "damaged"),
    (base64.urlsafe_b64encode(b"plain text").decode(), "damaged"),
    (token_of({"v": 99}), "another version"),
    (token_of({"v": 1, "e": [["The Louvre is in", "Rome", "Eiffel Tower", ""]], "p": ["x"], "t": 0.5, "d": 0.5, "f": True, "l": None}),
     "does not occur in the prompt"),
    (token_of({"v": 1, "e": [], "p": ["x"], "t": 2.0, "d": 0.5, "f": True, "l": None}), "threshold must be"),
    (token_of({"v": 1, "e": [], "p": ["x"] * 65, "t": 0.5, "d": 0.5, "f": True, "l": None}), "the limit is 64"),
    (token_of({"v": 1, "e": [[1, 2]], "p": [], "t": 0.5, "d": 0.5, "f": True, "l": None}), "an edit is not"),
    (token_of({"v": 1, "p": []}), "cannot open"),
])
def test_a_bad_link_is_refused_with_what_is_wrong(token, message):
    with pytest.raises(SharingError, match=message):
        SharedWorkspace.from_token(token)


def test_a_small_token_cannot_unpack_to_a_huge_state():
    bomb = base64.urlsafe_b64encode(zlib.compress(b"[" + b" " * 4_000_000 + b"]", 9)).decode()
    assert len(bomb) < MAX_TOKEN_CHARS
    with pytest.raises(SharingError, match="damaged"):
        SharedWorkspace.from_token(bomb)
