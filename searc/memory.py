"""The explicit edit memory. The base model is never changed: an edit is a record stored here.

Each edit's classifier key (an embedding, or pre-tokenised text for the cross-encoder) is computed
once when the edit is added and kept in a `KeyStore` owned by the memory, so scoring a probe
never re-encodes the memory. Keys belong to one classifier: when the classifier changes (a
checkpoint is loaded), the memory is re-keyed once.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Protocol

import torch

from searc.names import NameIndex, checked_subject

MAX_TEXT_CHARS = 1000  # longer prompts/targets are refused: far past the encoder's 256-token window
MAX_EDITS = 100_000  # per memory: dense scoring stays under 300 ms a probe here (see `searc bench`)


@dataclass(frozen=True)
class Edit:
    """One edit request: `prompt` should now be completed with `target_new`."""

    prompt: str
    target_new: str
    subject: str | None = None
    target_true: str | None = None
    id: str = ""

    def statement(self) -> str:
        """The edit as one sentence: what the classifier and the counterfactual model read."""
        return f"{self.prompt} {self.target_new}"

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def typed_edit(prompt: str, target_new: str, subject: str | None = None) -> Edit:
    """An edit a person typed (workbench or command line). Its subject, if given, must occur in
    its prompt: the counterfactual model reads it as the fact's subject and routing checks probes
    for its words, so a typo would change what every probe is told."""
    subject = (subject or "").strip() or None
    if subject and subject.casefold() not in (prompt or "").casefold():
        raise ValueError(f"the subject {subject!r} does not occur in the prompt; copy it from the prompt or leave it empty")
    return Edit(prompt, target_new, subject)


def validate_text(name: str, value: object, *, allow_empty: bool = False) -> str:
    """A clean text field, or a ValueError that says which field and why."""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be text, got {type(value).__name__}")
    text = value.strip()
    if not text and not allow_empty:
        raise ValueError(f"{name} is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(f"{name} is {len(text)} characters long; the limit is {MAX_TEXT_CHARS}")
    if any(ord(c) < 32 and c not in "\t\n" for c in text):
        raise ValueError(f"{name} contains control characters")
    return text


class KeyStore(Protocol):
    """Per-edit classifier keys, in memory order."""

    def append(self, keys: Any) -> None: ...
    def delete(self, index: int) -> None: ...
    def __len__(self) -> int: ...


class EmbeddingKeys:
    """Unit-norm edit embeddings in one contiguous, amortised-growth tensor (dense classifier)."""

    def __init__(self, dim: int) -> None:
        self._buffer = torch.empty(0, dim)
        self._size = 0

    def append(self, keys: torch.Tensor) -> None:
        needed = self._size + keys.shape[0]
        if needed > self._buffer.shape[0]:
            grown = torch.empty(max(needed, 2 * self._buffer.shape[0], 16), self._buffer.shape[1], dtype=keys.dtype)
            grown[: self._size] = self._buffer[: self._size]
            self._buffer = grown
        self._buffer[self._size : needed] = keys
        self._size = needed

    def delete(self, index: int) -> None:
        self._buffer[index : self._size - 1] = self._buffer[index + 1 : self._size].clone()
        self._size -= 1

    @property
    def matrix(self) -> torch.Tensor:
        """[n_edits, dim] view of the stored keys (no copy)."""
        return self._buffer[: self._size]

    def __len__(self) -> int:
        return self._size


class ListKeys(list):
    """Keys that are Python objects (pre-tokenised edit text for the cross-encoder)."""

    def append(self, keys: list) -> None:  # type: ignore[override]
        self.extend(keys)

    def delete(self, index: int) -> None:
        del self[index]


@dataclass
class PairKeys:
    """Cross-encoder keys: each edit's token ids (for pairing) and its embedding (for retrieval)."""

    token_ids: ListKeys
    embeddings: EmbeddingKeys

    def append(self, keys: tuple[list, torch.Tensor]) -> None:
        self.token_ids.append(keys[0])
        self.embeddings.append(keys[1])

    def delete(self, index: int) -> None:
        self.token_ids.delete(index)
        self.embeddings.delete(index)

    def __len__(self) -> int:
        return len(self.token_ids)


class KeyedClassifier(Protocol):
    """What the memory needs from a scope classifier."""

    key_version: str

    def new_key_store(self) -> KeyStore: ...
    def edit_keys(self, edits: list[Edit]) -> Any: ...


@dataclass
class EditMemory:
    """Ordered edits plus their classifier keys."""

    edits: list[Edit] = field(default_factory=list)
    keys: KeyStore | None = None
    key_version: str | None = None
    max_edits: int = MAX_EDITS
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1), repr=False)
    _names: NameIndex | None = field(default=None, repr=False)  # built on first use, extended by `add`, dropped by removals

    def __len__(self) -> int:
        return len(self.edits)

    def __iter__(self) -> Iterator[Edit]:
        return iter(self.edits)

    def get(self, edit_id: str) -> Edit:
        for edit in self.edits:
            if edit.id == edit_id:
                return edit
        raise KeyError(f"no edit with id {edit_id!r}")

    def check_new(self, edits: list[Edit]) -> list[Edit]:
        """Validated copies of `edits` with fresh ids; raises before anything is stored."""
        if len(self.edits) + len(edits) > self.max_edits:
            raise ValueError(
                f"the memory holds at most {self.max_edits:,} edits; it has {len(self.edits):,} and {len(edits):,} more were given"
            )
        seen = {edit.prompt.casefold() for edit in self.edits}
        checked = []
        for edit in edits:
            prompt = validate_text("prompt", edit.prompt)
            target = validate_text("target", edit.target_new)
            if prompt.casefold() == target.casefold():
                raise ValueError(f"the target equals the prompt: {prompt!r}")
            if prompt.casefold() in seen:
                raise ValueError(f"an edit for the prompt {prompt!r} is already stored; remove it first")
            seen.add(prompt.casefold())
            checked.append(
                Edit(
                    prompt=prompt,
                    target_new=target,
                    subject=validate_text("subject", edit.subject) if edit.subject else None,
                    target_true=validate_text("target_true", edit.target_true) if edit.target_true else None,
                    id=edit.id or "",
                )
            )
        return checked

    def add(self, edits: list[Edit], classifier: KeyedClassifier) -> list[Edit]:
        """Validate, key and store `edits` all together or not at all; returns the stored edits."""
        checked = self.check_new(edits)
        if not checked:
            return []
        self.ensure_keys(classifier)
        keys = classifier.edit_keys(checked)  # may raise: nothing stored yet
        taken = {edit.id for edit in self.edits}
        stored = []
        for edit in checked:
            edit_id = edit.id
            while not edit_id or edit_id in taken:
                edit_id = f"e{next(self._ids)}"
            taken.add(edit_id)
            stored.append(Edit(edit.prompt, edit.target_new, edit.subject, edit.target_true, edit_id))
        self.keys.append(keys)
        self.edits.extend(stored)
        if self._names is not None:
            self._names.extend(checked_subject(edit.subject, edit.prompt) for edit in stored)
        return stored

    def remove(self, edit_id: str) -> Edit:
        for index, edit in enumerate(self.edits):
            if edit.id == edit_id:
                del self.edits[index]
                if self.keys is not None:
                    self.keys.delete(index)
                self._names = None
                return edit
        raise KeyError(f"no edit with id {edit_id!r}")

    def clear(self) -> None:
        self.edits.clear()
        self.keys = None
        self.key_version = None
        self._names = None

    def names(self) -> NameIndex:
        """The stored edits' subjects indexed by word, in memory order (`searc.names`); a subject its
        edit's prompt does not name is not checked."""
        if self._names is None:
            self._names = NameIndex(checked_subject(edit.subject, edit.prompt) for edit in self.edits)
        return self._names

    def ensure_keys(self, classifier: KeyedClassifier) -> KeyStore:
        """The key store for `classifier`, re-keying every edit once if it was keyed by another."""
        if self.keys is None or self.key_version != classifier.key_version:
            store = classifier.new_key_store()
            if self.edits:
                store.append(classifier.edit_keys(self.edits))
            self.keys, self.key_version = store, classifier.key_version
        return self.keys
