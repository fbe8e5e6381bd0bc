"""Who may reach the workbench, and what a visitor may name on the server.

The workbench reads data files and writes checkpoints where its page says. On this machine alone
that is the user's own business; once the page is reachable from elsewhere (`--share`, or a
`--host` other than loopback) it is anyone's, so:

- `check_exposure`: an exposed workbench starts only behind a login (`--auth`, `--auth-file`) or in
  `--demo-mode` (no training, no server paths at all);
- `ServerAccess`: training writes checkpoints only below one runs directory, under relative names
  without ".."; checkpoints are loaded from there (or the shipped one); data files named on the
  page are read only below the configured data directories; and the page shows paths relative to
  those directories, never the server's absolute paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Sequence

from searc.data import EditCase, load_cases
from searc.shipped import default_checkpoint

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared/data beside a source checkout
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
DEMO_UPLOAD_BYTES = 1_000_000  # --demo-mode: larger uploads are refused (Gradio's own limit is set to match)


def check_exposure(host: str, share: bool, login: bool, demo_mode: bool) -> None:
    """ValueError when the page would be reachable beyond this machine with nothing in front of it."""
    if (share or host not in LOOPBACK_HOSTS) and not (login or demo_mode):
        how = "--share publishes a public link" if share else f"--host {host} serves other machines"
        raise ValueError(
            f"{how}, and anyone who reaches the page could train, read data files and write checkpoints on this server: "
            "add a login (--auth USER:PASS or --auth-file PATH) or use --demo-mode"
        )


@dataclass(frozen=True)
class ServerAccess:
    runs_dir: Path  # checkpoints are written and loaded only below this
    data_dirs: tuple[Path, ...]  # data files named on the page are read only below these
    demo_mode: bool = False  # no training, no server paths: uploads and the shipped checkpoint only

    @classmethod
    def create(cls, runs_dir: str | Path, data_dirs: Sequence[str | Path], demo_mode: bool = False) -> "ServerAccess":
        return cls(Path(runs_dir).resolve(), tuple(Path(d).resolve() for d in data_dirs), demo_mode)

    def training_out(self, name: str) -> Path:
        """Where training writes the checkpoint `name`: below the runs directory."""
        if self.demo_mode:
            raise ValueError("training is switched off in this demo (it writes checkpoints on the server)")
        return self.runs_dir / _relative_name(name, "checkpoint")

    def checkpoint_to_load(self, name: str) -> Path | None:
        """'' = untrained, 'default' = the shipped checkpoint, else a checkpoint below the runs directory."""
        text = (name or "").strip()
        if text in ("", "none"):
            return None
        if text == "default":
            return default_checkpoint()
        if self.demo_mode:
            raise ValueError("this demo loads only the shipped checkpoint ('default') or none (empty)")
        return self.runs_dir / _relative_name(text, "checkpoint")

    def data_file(self, name: str) -> Path:
        """A data file named on the page: relative to the first data directory, or absolute, but
        always inside one of them (symbolic links resolved)."""
        if self.demo_mode:
            raise ValueError("this demo reads uploaded files only, not paths on the server")
        text = (name or "").strip()
        if not text:
            raise ValueError("choose a data file (a path in the data directory, or an upload)")
        if not self.data_dirs:
            raise ValueError("this workbench reads no data files on the server: upload one")
        path = Path(text) if Path(text).is_absolute() else self.data_dirs[0] / text
        resolved = path.resolve()
        if not any(resolved.is_relative_to(d) for d in self.data_dirs):
            raise ValueError(f"{Path(text).name}: data files are read only from the data directory (names like counterfact/val.json)")
        return resolved

    def check_upload(self, path: str) -> None:
        """Uploads are read from the temporary file Gradio made; in demo mode only small ones."""
        if self.demo_mode and Path(path).stat().st_size > DEMO_UPLOAD_BYTES:
            raise ValueError(f"this demo takes uploads up to {DEMO_UPLOAD_BYTES // 1000:,} kB")

    def cases(self, name: str, upload: str | None, limit: int | None = None) -> list[EditCase]:
        """Edit cases from an upload if there is one, else from a data file on the server."""
        if upload:
            self.check_upload(upload)
        source = upload or self.data_file(name)
        try:
            return load_cases(source, limit=limit)
        except OSError as error:
            raise ValueError(f"cannot read {self.shown(source) if not upload else Path(upload).name}: {error.strerror}") from None

    def shown(self, path: str | Path | None) -> str:
        """A server path as the page may show it: relative to the shipped checkpoint, the runs or a
        data directory, by that name; anything else by its last part alone."""
        if path is None:
            return "none"
        resolved = Path(path).resolve()
        for base, label in self._labelled_dirs():
            if resolved.is_relative_to(base):
                inside = resolved.relative_to(base).as_posix()
                return label if inside == "." else f"{label}/{inside}"
        return resolved.name

    def shown_spec(self, spec: str | None) -> str:
        """A model spec for the page: 'bundled' or a hub id as given, a local path by its name."""
        text = str(spec or "")
        return self.shown(text) if text and Path(text).exists() else text

    def redact(self, message: str) -> str:
        """A message for the page with the server's directories named as the page names them."""
        for base, label in self._labelled_dirs():
            message = message.replace(str(base), label)
        return message

    def _labelled_dirs(self) -> list[tuple[Path, str]]:
        """The server directories the page names, and their names: the shipped checkpoint first."""
        shipped = default_checkpoint()
        return [*(((shipped.resolve(), "shipped"),) if shipped else ()), (self.runs_dir, "runs"), *((d, "data") for d in self.data_dirs)]


def _relative_name(name: str, what: str) -> PurePath:
    text = (name or "").strip()
    if not text:
        raise ValueError(f"name the {what} (a name in the runs directory, e.g. my-run)")
    path = PurePath(text.removeprefix("runs/"))
    if path.is_absolute() or ".." in path.parts or text.startswith("~"):
        raise ValueError(f"{what} names are relative to the runs directory, without '..' or '/' at the start: {text!r}")
    return path
