"""The web app over HTTP with gradio_client: named endpoints, per-session memory, clear errors."""

from __future__ import annotations

import socket

import pytest
from gradio_client import Client

from searc.access import ServerAccess
from searc.checkpoint import read_checkpoint
from searc.system import SystemPool, apply_checkpoint
from searc.ui import build_app, serve
from tests.conftest import make_system
from tests.test_editor import perturb_adapter

CASES = [
    {"prompt": "The Eiffel Tower is located in the city of", "target_new": "Rome", "subject": "Eiffel Tower",
     "rephrase_prompt": "The Eiffel Tower stands in", "locality_prompt": "The Louvre is located in the city of", "locality_ground_truth": "Paris"},
    {"prompt": "The mother tongue of Danielle Darrieux is", "target_new": "English", "subject": "Danielle Darrieux",
     "rephrase_prompt": "Danielle Darrieux speaks", "locality_prompt": "Michel Rocard is a native speaker of", "locality_ground_truth": "French"},
    {"prompt": "Toko Yasuda plays the", "target_new": "piano", "subject": "Toko Yasuda",
     "rephrase_prompt": "Toko Yasuda is great at the", "locality_prompt": "John Lennon plays the", "locality_ground_truth": "guitar"},
]


def tiny_loader(checkpoint, classifier):
    system = make_system("llama", classifier.variant if classifier else "dense")
    if checkpoint:
        apply_checkpoint(system, read_checkpoint(checkpoint), source=str(checkpoint))
    return system


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server_dirs(tmp_path_factory):
    """The app's runs directory and data directory, with the test cases in data/cases.json."""
    root = tmp_path_factory.mktemp("server")
    (root / "data").mkdir()
    (root / "data" / "cases.json").write_text(__import__("json").dumps(CASES))
    more = [{**case, "prompt": case["prompt"].replace("The", "Today the", 1), "subject": ""} for case in CASES[:2]]
    (root / "data" / "five.json").write_text(__import__("json").dumps(CASES + more))
    return ServerAccess.create(root / "runs", [root / "data"])


@pytest.fixture(scope="module")
def url(server_dirs):
    system = make_system("llama")
    perturb_adapter(system)
    system.classifier.scale.data.fill_(0.0)
    system.classifier.bias.data.fill_(4.0)  # everything in scope: routed whenever an edit is stored
    app = build_app(system, SystemPool(system, loader=tiny_loader), server_dirs)
    port = free_port()
    serve(app, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    app.close()


# what every workspace endpoint (add, remove, clear, import, probe, reroute, load_lesson) returns, in order
WORKSPACE = ("memory", "edit_status", "results", "heatmap", "why", "probe_pick", "probe_status", "edit_pick")


def workspace(outputs) -> dict:
    return dict(zip(WORKSPACE, outputs))


def rows(table) -> list[dict]:
    return [dict(zip(table["headers"], row)) for row in table["data"]]


def test_named_endpoints(url):
    endpoints = Client(url, verbose=False).view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/add_edit", "/probe", "/reroute", "/inspect", "/inspect_edit", "/remove_edit", "/clear_edits", "/export_edits",
            "/train", "/evaluate", "/load_checkpoint", "/load_lesson", "/preview_lesson", "/import_edits", "/set_decoding"} <= set(endpoints)


def test_add_edit_then_probe_reads_the_routed_output(url):
    client = Client(url, verbose=False)
    added = workspace(client.predict("The Eiffel Tower is located in the city of", "Rome", "", "", 0.5, api_name="/add_edit"))
    assert added["memory"]["data"] == [["e1", "The Eiffel Tower is located in the city of", "Rome", ""]] and "Stored e1" in added["edit_status"]
    assert added["results"]["data"] in ([], [[""] * 7], [[None] * 7]) or not rows(added["results"])[0]["probe"], "no probes typed: no results"
    probed = workspace(client.predict("The Eiffel Tower stands in", 0.5, api_name="/probe"))
    row = rows(probed["results"])[0]
    assert row["routed"] == "yes" and row["final output"] == row["counterfactual output"]
    assert "1 routed" in probed["probe_status"]


def test_changing_the_memory_probes_the_current_probes_again(url):
    client = Client(url, verbose=False)
    probes = "The capital of Japan is\nThe Eiffel Tower stands in"
    before = workspace(client.predict(probes, 0.5, api_name="/probe"))
    assert [r["routed"] for r in rows(before["results"])] == ["no", "no"], "nothing stored yet"
    added = workspace(client.predict("The capital of Japan is", "Kyoto", "", probes, 0.5, api_name="/add_edit"))
    assert [r["routed"] for r in rows(added["results"])] == ["yes", "yes"] and "2 routed" in added["probe_status"]
    assert added["edit_pick"]["value"] == "e1"
    claims = client.predict("e1", api_name="/inspect_edit")
    assert {r["probe"] for r in rows(claims)} <= {"The capital of Japan is", "The Eiffel Tower stands in"}
    removed = workspace(client.predict("e1", probes, 0.5, api_name="/remove_edit"))
    assert [r["routed"] for r in rows(removed["results"])] == ["no", "no"] and removed["memory"]["data"] in ([], [["", "", "", ""]], [[None] * 4])


def test_inspecting_a_probe_gives_scope_tokens_and_nll(url):
    client = Client(url, verbose=False)
    client.predict("The Eiffel Tower is located in the city of", "Rome", "", "The Eiffel Tower stands in", 0.5, api_name="/add_edit")
    scope, tokens, nll = client.predict("The Eiffel Tower stands in", "Paris\nRome", api_name="/inspect")
    assert "e1" in scope and "would decline" in scope and "threshold" in scope
    assert tokens and nll


def test_each_client_has_its_own_memory(url):
    first, second = Client(url, verbose=False), Client(url, verbose=False)
    first.predict("The capital of Japan is", "Kyoto", "", "", 0.5, api_name="/add_edit")
    row = rows(workspace(second.predict("The capital of Japan is", 0.5, api_name="/probe"))["results"])[0]
    assert row["routed"] == "no" and row["best edit"] == ""


def test_bad_input_is_a_clear_error_and_changes_nothing(url):
    client = Client(url, verbose=False)
    client.predict("The Eiffel Tower is located in the city of", "Rome", "", "", 0.5, api_name="/add_edit")
    with pytest.raises(Exception, match="prompt is empty"):
        client.predict("   ", "Rome", "", "", 0.5, api_name="/add_edit")
    with pytest.raises(Exception, match="already stored"):
        client.predict("The Eiffel Tower is located in the city of", "Paris", "", "", 0.5, api_name="/add_edit")
    with pytest.raises(Exception, match="no edit with id 'e9'"):  # the message as the session wrote it, quotes and all
        client.predict("e9", "", 0.5, api_name="/remove_edit")
    memory, *_ = client.predict("Another prompt here", "x", "", "", 0.5, api_name="/add_edit")
    assert [row[0] for row in memory["data"]] == ["e1", "e2"], "the failed adds left the memory as it was"


@pytest.mark.parametrize("cases, message", [(0, "at least 1 case"), (-2, "at least 1 case"), (None, "fill in Cases")])
def test_an_evaluation_of_no_cases_is_a_clear_error(url, cases, message):
    client = Client(url, verbose=False)
    with pytest.raises(Exception, match=message):
        client.predict("cases.json", None, cases, "single", api_name="/evaluate")


def test_a_negative_count_of_other_facts_is_a_clear_error(url):
    client = Client(url, verbose=False)  # the field's own minimum refuses it (the session refuses it too, test_session)
    with pytest.raises(Exception, match="less than minimum value 0"):
        client.predict("cases.json", None, 2, "single", -1, api_name="/evaluate")


def test_an_emptied_training_field_is_a_clear_error(url):
    client = Client(url, verbose=False)
    with pytest.raises(Exception, match="fill in LoRA learning rate"):
        client.predict("cases.json", "cases.json", None, 2, 2, None, 1.0, 1.0, "dense", "ck", api_name="/train")


def test_train_load_and_evaluate(url, server_dirs):
    client = Client(url, verbose=False)
    figure, status, checkpoint = client.predict("cases.json", "cases.json", None, 2, 2, 5e-4, 1.0, 1.0, "dense", "ck", api_name="/train")
    assert "finished after 2 steps" in status and checkpoint == "runs/ck" and "best checkpoint: runs/ck" in status
    assert read_checkpoint(server_dirs.runs_dir / "ck").config["training"]["config"]["steps"] == 2
    with pytest.raises(Exception, match="runs/ck already exists and is not empty"):  # a second run keeps the first one's checkpoint
        client.predict("cases.json", "cases.json", None, 1, 2, 5e-4, 1.0, 1.0, "dense", "ck", api_name="/train")
    assert read_checkpoint(server_dirs.runs_dir / "ck").config["training"]["config"]["steps"] == 2
    client.predict("cases.json", "cases.json", None, 1, 2, 5e-4, 1.0, 1.0, "dense", "ck", True, api_name="/train")  # 'Replace' ticked
    assert read_checkpoint(server_dirs.runs_dir / "ck").config["training"]["config"]["steps"] == 1
    *shown, message = client.predict("ck", api_name="/load_checkpoint")
    assert len(rows(workspace(shown)["results"])) == 4, "the page's four probes were run again on the loaded checkpoint"
    assert message.endswith("runs/ck") and str(server_dirs.runs_dir) not in message
    with pytest.raises(Exception, match="no checkpoint directory at runs/missing") as refused:
        client.predict("missing", api_name="/load_checkpoint")
    assert str(server_dirs.runs_dir) not in str(refused.value)
    chart, table, report, failures = client.predict("cases.json", None, 2, "single", api_name="/evaluate")
    assert [row[0] for row in table["data"]] == ["unedited model", "zero-shot editor", "this editor"]
    assert table["headers"][:4] == ["system", "reliability", "generalization", "locality"]
    assert "2 cases, single mode" in report
    assert failures["headers"] == ["kind", "probe", "expected", "got", "score", "routed", "declined", "nearest edit"]
    with pytest.raises(Exception, match="evaluation only"):
        client.predict("edit.json", "cases.json", None, 2, 2, 5e-4, 1.0, 1.0, "dense", "ck", api_name="/train")
    with pytest.raises(Exception, match="evaluation only"):  # validation chooses the checkpoint: never on an evaluation file
        client.predict("cases.json", "counterfact/edit.json[:50]", None, 2, 2, 5e-4, 1.0, 1.0, "dense", "ck2", api_name="/train")


@pytest.mark.parametrize("out_name", ["../escaped", "/tmp/searc-escaped", "a/../../escaped", "~/escaped", ""])
def test_training_writes_only_below_the_runs_directory(url, server_dirs, out_name):
    client = Client(url, verbose=False)
    with pytest.raises(Exception, match="relative to the runs directory|name the checkpoint"):
        client.predict("cases.json", "cases.json", None, 1, 2, 5e-4, 1.0, 1.0, "dense", out_name, api_name="/train")
    assert not (server_dirs.runs_dir.parent / "escaped").exists() and not __import__("os").path.exists("/tmp/searc-escaped")


def test_data_and_checkpoints_are_read_only_below_their_directories(url, server_dirs, tmp_path):
    outside = tmp_path / "secret.json"
    outside.write_text(__import__("json").dumps(CASES))
    link = server_dirs.data_dirs[0] / "link.json"
    link.symlink_to(outside)
    client = Client(url, verbose=False)
    for name in (str(outside), "../../" + outside.name, "link.json"):
        with pytest.raises(Exception, match="read only from the data directory") as refused:
            client.predict(name, None, 2, "single", api_name="/evaluate")
        assert str(tmp_path) not in str(refused.value)
    with pytest.raises(Exception, match="relative to the runs directory"):
        client.predict(str(tmp_path), api_name="/load_checkpoint")
    (server_dirs.data_dirs[0] / "bad.json").write_text('[{"prompt": "", "target_new": "x"}]')
    with pytest.raises(Exception, match="bad.json record 1") as refused:
        client.predict("bad.json", None, 2, "single", api_name="/evaluate")
    assert str(server_dirs.data_dirs[0]) not in str(refused.value), "a data error names the file as the page does"


def test_import_edits_all_or_nothing(url, tmp_path):
    from gradio_client import handle_file

    client = Client(url, verbose=False)
    good = tmp_path / "edits.csv"
    good.write_text("prompt,target_new\nThe capital of Japan is,Kyoto\nToko Yasuda plays the,piano\n")
    memory, message, *_ = client.predict(handle_file(str(good)), "", 0.5, api_name="/import_edits")
    assert message == "Imported 2 edits" and [row[2] for row in memory["data"]] == ["Kyoto", "piano"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "A new prompt", "target_new": "x"}\n{"prompt": "", "target_new": "y"}\n')
    with pytest.raises(Exception, match="bad.jsonl record 2"):
        client.predict(handle_file(str(bad)), "", 0.5, api_name="/import_edits")
    memory, *_ = client.predict("one more prompt", "z", "", "", 0.5, api_name="/add_edit")
    assert [row[2] for row in memory["data"]] == ["Kyoto", "piano", "z"], "nothing of the bad file was imported"


def test_reroute_with_a_bad_threshold_is_a_clear_error(url):
    client = Client(url, verbose=False)
    client.predict("The Eiffel Tower is located in the city of", "Rome", "", "", 0.5, api_name="/add_edit")
    client.predict("The Eiffel Tower stands in", 0.5, api_name="/probe")
    with pytest.raises(Exception, match="greater than maximum value 1.0|threshold must be a number in"):
        client.predict(7.0, api_name="/reroute")
    assert rows(workspace(client.predict(0.99, api_name="/reroute"))["results"])[0]["routed"] == "no"


def test_the_decline_threshold_slider_reroutes_without_running_a_model(url):
    """Decline threshold 0: every route is declined (the base output stands); 1: none is."""
    client = Client(url, verbose=False)
    client.predict("The Eiffel Tower is located in the city of", "Rome", "", "", 0.0, 1.0, api_name="/add_edit")
    probed = workspace(client.predict("The Eiffel Tower stands in\nThe capital of Japan is", 0.0, 1.0, api_name="/probe"))
    assert [r["routed"] for r in rows(probed["results"])] == ["yes", "yes"]
    declined = workspace(client.predict(0.0, 0.0, api_name="/reroute"))
    assert [r["routed"] for r in rows(declined["results"])] == ["declined", "declined"]
    assert all(r["final output"] == r["base output"] for r in rows(declined["results"]))
    assert "decline threshold 0.00 (no model was run)" in declined["probe_status"]
    with pytest.raises(Exception, match="greater than maximum value 1.0|threshold must be a number in"):
        client.predict(0.0, 3.0, api_name="/reroute")
    again = workspace(client.predict(0.0, 1.0, api_name="/reroute"))
    assert [r["routed"] for r in rows(again["results"])] == ["yes", "yes"]


def test_the_decoding_switch_probes_again(url):
    """What it changes, and that it is per session, is tested on the session (tests/test_session.py)."""
    client = Client(url, verbose=False)
    client.predict("The Eiffel Tower is located in the city of", "Rome", "", "", 0.5, api_name="/add_edit")
    free = workspace(client.predict(False, "The Eiffel Tower stands in", 0.5, 1.0, api_name="/set_decoding"))
    assert "decoding freely" in free["probe_status"] and rows(free["results"])[0]["routed"] == "yes"
    with pytest.raises(Exception, match="greater than maximum value 1.0|threshold must be a number in"):
        client.predict(True, "The Eiffel Tower stands in", 3.0, 1.0, api_name="/set_decoding")
    finished = workspace(client.predict(True, "The Eiffel Tower stands in", 0.5, 1.0, api_name="/set_decoding"))
    assert "finishing a begun target verbatim" in finished["probe_status"] and rows(finished["results"])[0]["routed"] == "yes"


@pytest.fixture(scope="module")
def demo_url(server_dirs):
    system = make_system("llama")
    demo = ServerAccess(server_dirs.runs_dir, server_dirs.data_dirs, demo_mode=True)
    app = build_app(system, SystemPool(system, loader=tiny_loader), demo)
    port = free_port()
    serve(app, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    app.close()


def test_demo_mode_refuses_training_paths_and_big_uploads(demo_url, tmp_path):
    from gradio_client import handle_file

    from searc.access import DEMO_UPLOAD_BYTES

    data = tmp_path / "cases.json"
    data.write_text(__import__("json").dumps(CASES))
    client = Client(demo_url, verbose=False)
    with pytest.raises(Exception, match="training is switched off"):
        client.predict(str(data), str(data), None, 2, 2, 5e-4, 1.0, 1.0, "dense", str(tmp_path / "ck"), api_name="/train")
    assert not (tmp_path / "ck").exists()
    with pytest.raises(Exception, match="only the shipped checkpoint"):
        client.predict(str(tmp_path), api_name="/load_checkpoint")
    with pytest.raises(Exception, match="uploaded files only"):
        client.predict(str(data), None, 2, "single", api_name="/evaluate")
    big = tmp_path / "big.jsonl"
    line = '{"prompt": "%s", "target_new": "x"}\n'
    big.write_text("".join(line % f"prompt number {i}" for i in range(DEMO_UPLOAD_BYTES // 40)))
    with pytest.raises(Exception, match="uploads up to|size"):
        client.predict(handle_file(str(big)), "", 0.5, api_name="/import_edits")
    memory, message, *_ = client.predict(handle_file(str(data)), "", 0.5, api_name="/import_edits")  # small uploads are fine
    assert message == "Imported 3 edits"
