"""app.py: logins from --auth and --auth-file, and a login-protected app over HTTP."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def app_module():
    spec = importlib.util.spec_from_file_location("searc_app", ROOT / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_logins_from_flag_and_file(tmp_path):
    app = app_module()
    assert app.logins(app.parse_args([])) is None
    assert app.logins(app.parse_args(["--auth", "ann:secret"])) == [("ann", "secret")]
    file = tmp_path / "logins"
    file.write_text("# teachers\nann:secret\n\nbob:pa:ss\n")
    assert app.logins(app.parse_args(["--auth-file", str(file)])) == [("ann", "secret"), ("bob", "pa:ss")]


@pytest.mark.parametrize("content, message", [("ann\n", "line 1 expects USER:PASS"), ("# nothing\n", "holds no USER:PASS"), (None, "cannot read")])
def test_bad_login_files_stop_the_app_with_a_message(tmp_path, content, message):
    app = app_module()
    file = tmp_path / "logins"
    if content is not None:
        file.write_text(content)
    with pytest.raises(ValueError, match=message):
        app.logins(app.parse_args(["--auth-file", str(file)]))
    with pytest.raises(SystemExit, match=f"searc workbench: .*{message}"):  # before any model loads
        app.main(["--auth-file", str(file), "--lm", "/nonexistent/model.gguf"])


def test_a_protected_app_turns_away_the_wrong_login():
    from gradio_client import Client

    from searc.system import SystemPool
    from searc.ui import build_app
    from tests.conftest import make_system
    from tests.test_ui import free_port, tiny_loader

    system = make_system("llama")
    app = build_app(system, SystemPool(system, loader=tiny_loader))
    port = free_port()
    app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, auth=[("ann", "secret")])
    try:
        url = f"http://127.0.0.1:{port}/"
        with pytest.raises(Exception):
            Client(url, auth=("ann", "wrong"), verbose=False)
        client = Client(url, auth=("ann", "secret"), verbose=False)
        memory, *_ = client.predict("The capital of Japan is", "Kyoto", "", "", 0.5, api_name="/add_edit")
        assert memory["data"][0][2] == "Kyoto"
    finally:
        app.close()


def test_the_app_binds_this_machine_only_by_default():
    app = app_module()
    args = app.parse_args([])
    assert args.host == "127.0.0.1" and not args.share and not args.demo_mode


@pytest.mark.parametrize(
    "argv, refused",
    [
        (["--share"], True),
        (["--host", "0.0.0.0"], True),
        (["--host", "192.168.1.5", "--share"], True),
        (["--share", "--auth", "ann:secret"], False),
        (["--host", "0.0.0.0", "--demo-mode"], False),
        (["--host", "localhost"], False),
        ([], False),
    ],
)
def test_an_exposed_workbench_needs_a_login_or_demo_mode(argv, refused):
    """--share or a non-loopback --host with nothing in front of the page stops before any model loads."""
    app = app_module()
    if refused:
        with pytest.raises(SystemExit, match="add a login .*--auth.* or use --demo-mode"):
            app.main([*argv, "--lm", "/nonexistent/model.gguf"])
    else:
        from searc.access import check_exposure

        args = app.parse_args(argv)
        check_exposure(args.host, args.share, login=app.logins(args) is not None, demo_mode=args.demo_mode)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--data-dir", "/nonexistent/data"], "--data-dir /nonexistent/data: no such directory"),
        (["--runs-dir", "/proc/searc-runs"], "--runs-dir /proc/searc-runs: cannot create it"),
        (["--auth", "nocolon"], "--auth expects USER:PASS"),
        (["--checkpoint", "/nonexistent/checkpoint", "--lm", "bundled"], "no checkpoint directory at /nonexistent/checkpoint"),
    ],
)
def test_a_bad_command_line_stops_the_app_with_one_line(argv, message):
    app = app_module()
    with pytest.raises(SystemExit, match=f"^searc workbench: {message}"):
        app.main(argv)


@pytest.mark.parametrize("port", ["0", "65536", "99999", "http"])
def test_a_port_out_of_range_is_refused_by_the_parser(port, capsys):
    with pytest.raises(SystemExit):
        app_module().parse_args(["--port", port])
    assert "expects a port number from 1 to 65535" in capsys.readouterr().err
