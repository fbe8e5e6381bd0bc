"""Start the searc workbench: `python app.py` (or `make demo`), then open http://127.0.0.1:7860."""

from __future__ import annotations

import argparse

from searc.cli import quiet_libraries
from searc.models import BUNDLED
from searc.system import DEFAULT_CHECKPOINT, load_system
from searc.ui import build_app


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="The searc SERAC edit workbench.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="checkpoint directory, 'default' (shipped) or 'none'")
    parser.add_argument("--lm", default=BUNDLED, help="language model: 'bundled', a hub id, a directory or a .gguf file")
    parser.add_argument("--encoder", default=BUNDLED, help="classifier encoder: 'bundled', a hub id or a directory")
    parser.add_argument("--share", action="store_true", help="also publish a temporary public gradio.live link")
    parser.add_argument("--auth", metavar="USER:PASS", help="require this login")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    auth = None
    if args.auth:
        user, sep, password = args.auth.partition(":")
        if not sep or not user or not password:
            raise SystemExit("--auth expects USER:PASS")
        auth = (user, password)
    quiet_libraries()
    system = load_system(args.lm, args.encoder, args.checkpoint)
    app = build_app(system)
    app.queue(default_concurrency_limit=2).launch(server_name=args.host, server_port=args.port, share=args.share, auth=auth)


if __name__ == "__main__":
    main()
