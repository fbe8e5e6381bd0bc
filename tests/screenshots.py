"""Screenshots of each workbench panel for the README: `make screenshots` (needs Debian's chromium).

Starts the real app (bundled models, shipped checkpoint) on a free port, previews and loads the
"An edit has consequences" lesson into the workspace (probed and checked, with the scope inspector and token
view of its first probe), runs a 5-case evaluation, and saves one PNG per tab to assets/screenshots/.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from searc.cli import quiet_libraries
from searc.system import load_system
from searc.ui import build_app
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS

OUT = Path(__file__).resolve().parent.parent / "assets" / "screenshots"


def main() -> None:
    quiet_libraries()
    app = build_app(load_system())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    OUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(f"http://127.0.0.1:{port}/")
        page.get_by_role("tab", name="Lessons").click()
        page.get_by_label("Scenario").click()
        page.get_by_role("option", name="An edit has consequences").click()
        page.locator("#lesson_text").get_by_text("reasons with it").wait_for(timeout=60_000)
        page.get_by_role("listbox").wait_for(state="hidden", timeout=30_000)  # not the options list fading out over the text
        page.screenshot(path=str(OUT / "lessons.png"), full_page=True)
        page.get_by_role("button", name="Load into the workspace").click()
        page.get_by_text(re.compile(r"^\d+ probes, \d+ routed.*Lesson “An edit has consequences”: \d of 4 probes as labelled")).wait_for(timeout=120_000)
        # the inspections of the first probe and edit replace their placeholders
        expect(page.locator("#tokens")).to_contain_text("Output tokens", timeout=60_000)
        expect(page.locator("#nll")).to_contain_text("after “", timeout=60_000)
        expect(page.locator("#claims")).to_contain_text("The Eiffel Tower", timeout=60_000)
        page.screenshot(path=str(OUT / "workspace.png"), full_page=True)
        page.get_by_role("tab", name="Train").click()
        page.screenshot(path=str(OUT / "train.png"), full_page=True)
        page.get_by_role("tab", name="Evaluate").click()
        page.get_by_label("Cases").fill("5")
        page.get_by_role("button", name="Evaluate", exact=True).click()
        page.locator("#eval_chart .plot-container").wait_for(timeout=300_000)
        page.screenshot(path=str(OUT / "evaluate.png"), full_page=True)
        browser.close()
    app.close()
    print(f"wrote {sorted(p.name for p in OUT.glob('*.png'))} to {OUT}")


if __name__ == "__main__":
    main()
