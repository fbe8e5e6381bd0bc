"""Subjects checked by name: does a probe name the subject of a stored edit?

A sentence encoder embeds "Aaron Brooks plays in the position of" and "Ahmad Brooks plays in the
position of" almost alike, so with thousands of edits stored the scope classifier routes probes
about a subject named almost like an edited one (`searc.classifier` lowers such scores by the share
of the subject's words a probe lacks). Names are compared by their words, accents, case and
punctuation aside. Rewordings misspell names ("Nebajoths" for "Nebaioth", "4 Sagittarius" for "4
Sagittarii", "Georg"/"George"), so a word of four letters or more also counts as named by a probe
word that begins with the same three letters and is spelt alike (`SPELLING`, difflib's ratio):
"Aaron" is not "Ahmad" (0.4), and a word with a digit must be written exactly ("Louisiana Highway
14" is not "Louisiana Highway 91"). The index of which stored subject holds which word lives with
the memory and is built once, so a probe costs a lookup of its own words, not a pass over every edit.
"""

from __future__ import annotations

import re
import unicodedata
from difflib import SequenceMatcher
from functools import lru_cache
from typing import Iterable, Sequence

import torch

# Words a subject's name may carry that a probe naming it need not ("The Beatles", "University of Oxford").
NAME_FILLERS = frozenset({"the", "a", "an", "of", "and"})
SPELLING = 0.8  # difflib ratio from which two words of the same first three letters are one name spelt two ways


@lru_cache(maxsize=1 << 17)
def name_words(text: str) -> frozenset[str]:
    """The words of a text as names are compared: accents and case dropped, punctuation and
    possessives split off ("Eiffel Tower's" -> eiffel, tower, s), fillers left out. A name in a
    script without Latin letters has none, and is then not checked."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().casefold()
    return frozenset(re.findall(r"[a-z0-9]+", folded)) - NAME_FILLERS


def spelt_alike(word: str, other: str) -> bool:
    """Whether two words of letters, four or more, are one name spelt two ways (see the module docstring)."""
    return word[:3] == other[:3] and SequenceMatcher(None, word, other).ratio() >= SPELLING


def _spellable(word: str) -> bool:
    return len(word) >= 4 and word.isalpha()


def checked_subject(subject: str | None, prompt: str) -> str | None:
    """The edit's subject if its own prompt names it whole, else None (not checked): a data set's
    edit may give a subject its prompt writes otherwise ("Rio Grande 463" beside "By which company,
    D&RGW 463 has been manufactured?"), and a name the edit itself does not use says nothing of a probe."""
    return subject if subject and not unnamed_words(subject, prompt) else None


class NameIndex:
    """For stored subjects in memory order: which of them hold each word, and how many words each has."""

    def __init__(self, subjects: Iterable[str | None] = ()) -> None:
        self.postings: dict[str, list[int]] = {}  # subject word -> the subjects that hold it
        self.by_prefix: dict[str, set[str]] = {}  # first three letters -> subject words that may be spelt otherwise
        self._sizes: list[int] = []
        self._size_tensor: torch.Tensor | None = None
        self.extend(subjects)

    def extend(self, subjects: Iterable[str | None]) -> None:
        """Index more subjects, after those already indexed (None: an edit stored without one)."""
        for subject in subjects:
            words = name_words(subject) if subject else frozenset()
            for word in words:
                self.postings.setdefault(word, []).append(len(self._sizes))
                if _spellable(word):
                    self.by_prefix.setdefault(word[:3], set()).add(word)
            self._sizes.append(len(words))
        self._size_tensor = None

    def __len__(self) -> int:
        return len(self._sizes)

    def match(self, inputs: Sequence[str]) -> torch.Tensor:
        """[n_inputs, n_subjects]: the share of each subject's words that each input names, as written
        or spelt alike ("Aaron Brooks ..." names 1 of "Ahmad Brooks"' 2); 1 for an edit without a
        subject, or whose subject has no words to compare."""
        if self._size_tensor is None:
            self._size_tensor = torch.tensor(self._sizes, dtype=torch.float32)
        sizes = self._size_tensor
        counts = torch.zeros(len(inputs), len(sizes))
        for row, text in enumerate(inputs):
            hits = [index for word in self.named(name_words(text)) for index in self.postings[word]]
            if hits:
                counts[row] = torch.bincount(torch.tensor(hits), minlength=len(sizes)).float()
        return torch.where(sizes > 0, (counts / sizes.clamp(min=1)).clamp(max=1), torch.ones(()))

    def named(self, words: frozenset[str]) -> set[str]:
        """The stored subject words that these words of a probe name, as written or spelt alike."""
        found = {word for word in words if word in self.postings}
        for word in words:
            if _spellable(word):
                found.update(other for other in self.by_prefix.get(word[:3], ()) if other not in found and spelt_alike(word, other))
        return found


def unnamed_words(subject: str, text: str) -> list[str]:
    """The words of `subject`, as written, that `text` does not name (the words the name check
    found missing, for the workbench to show)."""
    named = NameIndex([subject]).named(name_words(text))
    return [word for word in subject.split() if name_words(word) and not name_words(word) <= named]
