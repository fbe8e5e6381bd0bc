"""Start the searc workbench: `python app.py` (or `make demo`), then open http://127.0.0.1:7860."""

from __future__ import annotations

import argparse
from pathlib import Path

from searc import scheduler
from searc.access import DEMO_UPLOAD_BYTES, SHARED_DATA, ServerAccess, check_exposure
from searc.cli import quiet_libraries
from searc.models import BUNDLED, ModelNotFound
from searc.system import DEFAULT_CHECKPOINT, SystemPool, load_system
from searc.ui import build_app, serve


def port_number(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expects a port number from 1 to 65535, got {text!r}")
    return int(text)


def positive_number(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expects a whole number of at least 1, got {text!r}")
    return int(text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="The searc SERAC edit workbench.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=port_number, default=7860)
    parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="checkpoint directory, 'default' (shipped) or 'none'")
    parser.add_argument("--lm", default=BUNDLED, help="language model: 'bundled', a hub id, a directory or a .gguf file")
    parser.add_argument("--encoder", default=BUNDLED, help="classifier encoder: 'bundled', a hub id or a directory")
    parser.add_argument("--share", action="store_true", help="also publish a temporary public gradio.live link")
    parser.add_argument("--auth", metavar="USER:PASS", help="require this login")
    parser.add_argument("--auth-file", metavar="PATH", help="require a login from this file: one USER:PASS per line")
    parser.add_argument("--demo-mode", action="store_true",
                        help=f"public demo: no training, no checkpoint or data paths, uploads up to {DEMO_UPLOAD_BYTES // 1000} kB")
    parser.add_argument("--runs-dir", default="runs", help="training writes checkpoints only below this directory (default runs)")
    parser.add_argument("--data-dir", action="append", default=None, metavar="DIR",
                        help="data files named in the page are read only below these directories (repeatable; default ../shared/data)")
    parser.add_argument("--no-batching", action="store_true",
                        help="run each request's model work alone, one after another (to measure what batching gains)")
    parser.add_argument("--batch-tokens", type=positive_number, default=scheduler.MAX_BATCH_TOKENS, metavar="N",
                        help=f"the bound of one batched pass, in rows x padded tokens (default {scheduler.MAX_BATCH_TOKENS})")
    return parser.parse_args(argv)


def parse_login(text: str, where: str) -> tuple[str, str]:
    user, sep, password = text.strip().partition(":")
    if not sep or not user or not password:
        raise ValueError(f"{where} expects USER:PASS")
    return user, password


def logins(args: argparse.Namespace) -> list[tuple[str, str]] | None:
    """The accepted (user, password) pairs, or None for an open app."""
    pairs = [parse_login(args.auth, "--auth")] if args.auth else []
    if args.auth_file:
        try:
            lines = Path(args.auth_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"--auth-file: cannot read {args.auth_file}: {error}") from None
        pairs += [parse_login(line, f"--auth-file line {n}") for n, line in enumerate(lines, 1) if line.strip() and not line.startswith("#")]
        if not pairs:
            raise ValueError(f"--auth-file: {args.auth_file} holds no USER:PASS line")
    return pairs or None


def server_access(args: argparse.Namespace) -> ServerAccess:
    """The directories the page may name: those given must exist, and the runs directory is made
    now (not at the first training) unless the demo cannot train."""
    for directory in args.data_dir or []:
        if not Path(directory).is_dir():
            raise ValueError(f"--data-dir {directory}: no such directory")
    if not args.demo_mode:
        try:
            Path(args.runs_dir).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ValueError(f"--runs-dir {args.runs_dir}: cannot create it ({error.strerror})") from None
    return ServerAccess.create(args.runs_dir, args.data_dir or [SHARED_DATA], demo_mode=args.demo_mode)


def main(argv: list[str] | None = None) -> None:
    """Every mistake of the command line stops the app with one line, and all but the models'
    and the port's before any model loads."""
    args = parse_args(argv)
    try:
        auth = logins(args)
        check_exposure(args.host, args.share, login=auth is not None, demo_mode=args.demo_mode)
        access = server_access(args)
        quiet_libraries()
        system = load_system(args.lm, args.encoder, args.checkpoint)
        app = build_app(system, SystemPool(system), access)
        scheduler.configure(batching=not args.no_batching, max_batch_tokens=args.batch_tokens)
        serve(
            app, server_name=args.host, server_port=args.port, share=args.share, auth=auth,
            max_file_size=DEMO_UPLOAD_BYTES if args.demo_mode else None,
        )
    except (ValueError, ModelNotFound, OSError) as error:  # CheckpointError is a ValueError; OSError: the port is taken
        raise SystemExit(f"searc workbench: {error}") from None


if __name__ == "__main__":
    main()
