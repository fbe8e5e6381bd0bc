"""Where the files that ship with searc are: the trained checkpoint and the lessons.

They live in the repository's top-level assets/ and travel in the wheel as searc/assets/
(pyproject.toml maps one to the other), so a source checkout, an editable install and a plain
`pip install .` all find them.
"""

from __future__ import annotations

from pathlib import Path


def assets_dir() -> Path:
    """searc/assets/ in an installed wheel, the repository's assets/ in a source checkout."""
    installed = Path(__file__).resolve().parent / "assets"
    return installed if installed.is_dir() else Path(__file__).resolve().parent.parent / "assets"


def default_checkpoint() -> Path | None:
    """The shipped trained checkpoint, if present."""
    path = assets_dir() / "checkpoint"
    return path if path.is_dir() else None


LESSONS_DIR = assets_dir() / "lessons"
