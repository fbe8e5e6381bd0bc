"""Subjects checked by name: does a probe name the subject of a stored edit?

A sentence encoder embeds "Aaron Brooks plays in the position of" and "Ahmad Brooks plays in the
position of" almost alike, so with thousands of edits stored the scope classifier routes probes
about a subject named almost like an edited one (`searc.classifier` lowers such scores by the share
of the subject's words a probe lacks). Names are compared by their words, accents, case and
punctuation aside; the index of which stored subject holds which word lives with the memory and is
built once, so a probe costs a lookup of its own words, not a pass over every edit.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Iterable, Sequence

import torch

# Words a subject's name may carry that a probe naming it need not ("The Beatles", "University of Oxford").
NAME_FILLERS = frozenset({"the", "a", "an", "of", "and"})


@lru_cache(maxsize=1 << 17)
def name_words(text: str) -> frozenset[str]:
    """The words of a text as names are compared: accents and case dropped, punctuation and
    possessives split off ("Eiffel Tower's" -> eiffel, tower, s), fillers left out. A name in a
    script without Latin letters has none, and is then not checked."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().casefold()
    return frozenset(re.findall(r"[a-z0-9]+", folded)) - NAME_FILLERS


class NameIndex:
    """For stored subjects in memory order: which of them hold each word, and how many words each has."""

    def __init__(self, subjects: Iterable[str | None] = ()) -> None:
        self.postings: dict[str, list[int]] = {}
        self._sizes: list[int] = []
        self._size_tensor: torch.Tensor | None = None
        self.extend(subjects)

    def extend(self, subjects: Iterable[str | None]) -> None:
        """Index more subjects, after those already indexed (None: an edit stored without one)."""
        for subject in subjects:
            words = name_words(subject) if subject else frozenset()
            for word in words:
                self.postings.setdefault(word, []).append(len(self._sizes))
            self._sizes.append(len(words))
        self._size_tensor = None

    def __len__(self) -> int:
        return len(self._sizes)

    def match(self, inputs: Sequence[str]) -> torch.Tensor:
        """[n_inputs, n_subjects]: the share of each subject's words that each input contains ("Aaron
        Brooks ..." holds 1 of "Ahmad Brooks"' 2); 1 for an edit without a subject, or whose subject
        has no words to compare."""
        if self._size_tensor is None:
            self._size_tensor = torch.tensor(self._sizes, dtype=torch.float32)
        sizes = self._size_tensor
        counts = torch.zeros(len(inputs), len(sizes))
        for row, text in enumerate(inputs):
            hits = [index for word in name_words(text) for index in self.postings.get(word, ())]
            if hits:
                counts[row] = torch.bincount(torch.tensor(hits), minlength=len(sizes)).float()
        return torch.where(sizes > 0, counts / sizes.clamp(min=1), torch.ones(()))
