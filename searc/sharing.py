"""A workspace in a link: a teacher shares edits, probes, thresholds and lesson with a class.

The state travels in the link itself (`?workspace=TOKEN`: compact JSON, zlib, URL-safe base64),
not in the server's memory: a link opens the same workspace in any process behind a proxy, after a
restart, on another machine of the same version, and the server keeps nothing per link. Opening a
link makes a new, independent session from it; what a student changes there never reaches the
teacher's session. A state too large for a link is refused when it is shared (export the memory
as JSON instead), and a damaged or foreign token when it is opened, each with a message that says
so. Everything a token holds is checked as typed input is: it comes from a stranger's URL.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from dataclasses import dataclass

from searc.editor import check_threshold
from searc.memory import Edit, typed_edit, validate_text

QUERY_PARAMETER = "workspace"
FORMAT = 1
MAX_TOKEN_CHARS = 6000  # with the page's address the link stays under the 8 kB a request line may have behind nginx's defaults
MAX_SHARED_PROBES = 64  # the most a workspace probes at once (editor.MAX_PROBES)


class SharingError(ValueError):
    """A state that cannot go into a link, or a token that is no shared workspace."""


@dataclass(frozen=True)
class SharedWorkspace:
    edits: list[Edit]
    probes: list[str]
    threshold: float
    decline_threshold: float
    finish_targets: bool
    lesson: str | None = None  # the title of the lesson loaded, if its edits are the memory's

    def to_token(self) -> str:
        """The token for a link; SharingError when it would be too long."""
        data = {
            "v": FORMAT,
            "e": [[e.prompt, e.target_new, e.subject or "", e.target_true or ""] for e in self.edits],
            "p": self.probes,
            "t": self.threshold,
            "d": self.decline_threshold,
            "f": self.finish_targets,
            "l": self.lesson,
        }
        packed = zlib.compress(json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8"), 9)
        token = base64.urlsafe_b64encode(packed).decode("ascii").rstrip("=")
        if len(token) > MAX_TOKEN_CHARS:
            raise SharingError(
                f"this workspace is too large for a link ({len(self.edits)} edits, {len(token):,} characters; a link holds "
                f"{MAX_TOKEN_CHARS:,}): export the memory as JSON and share the file instead"
            )
        return token

    @classmethod
    def from_token(cls, token: str) -> "SharedWorkspace":
        """The workspace a token holds, every field checked; SharingError for anything else."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise SharingError("this shared link is not a workspace link (empty or too long)")
        try:
            packed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            unpacked = zlib.decompressobj()
            text = unpacked.decompress(packed, 64 * MAX_TOKEN_CHARS)  # bounded: a small token may not unpack to gigabytes
            if unpacked.unconsumed_tail or not unpacked.eof:
                raise ValueError("incomplete or too large")
            data = json.loads(text.decode("utf-8"))
        except (binascii.Error, zlib.error, ValueError, UnicodeDecodeError):
            raise SharingError("this shared link is damaged (cut short or altered): ask for the link again") from None
        if not isinstance(data, dict) or data.get("v") != FORMAT:
            raise SharingError("this shared link was made by another version of searc and cannot be opened here")
        try:
            edits = [_edit(row) for row in data["e"]]
            probes = [validate_text("probe", p) for p in data["p"]]
            if len(probes) > MAX_SHARED_PROBES:
                raise ValueError(f"{len(probes)} probes; the limit is {MAX_SHARED_PROBES}")
            finish = data["f"]
            lesson = data["l"]
            if not isinstance(finish, bool) or not (lesson is None or isinstance(lesson, str)):
                raise ValueError("bad decoding or lesson field")
            return cls(edits, probes, check_threshold(data["t"]), check_threshold(data["d"]), finish, lesson)
        except (KeyError, TypeError, ValueError) as error:
            raise SharingError(f"this shared link holds a workspace this version cannot open ({error})") from None

    def link(self, page_url: str = "") -> str:
        """The page's address with this workspace as its query (relative when the address is unknown)."""
        return f"{page_url.split('?', 1)[0].split('#', 1)[0]}?{QUERY_PARAMETER}={self.to_token()}"


def _edit(row: object) -> Edit:
    if not isinstance(row, list) or len(row) != 4 or not all(isinstance(field, str) for field in row):
        raise ValueError("an edit is not [prompt, target, subject, true target]")
    prompt, target, subject, target_true = row
    edit = typed_edit(validate_text("prompt", prompt), validate_text("target", target), subject)
    return Edit(edit.prompt, edit.target_new, edit.subject, target_true.strip() or None)
