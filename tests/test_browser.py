"""A real browser (Debian's Chromium, driven by Playwright) adds an edit, probes, and sees the
routed output, the scope heatmap and the NLL chart."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.test_ui import url  # noqa: F401  (the launched tiny app)

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic",
]


@pytest.fixture(scope="module")
def browser():
    if not shutil.which(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing under CI: .ci/run must install Debian's chromium")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_add_edit_probe_and_see_the_charts(browser, url):  # noqa: F811
    page = browser.new_page(viewport={"width": 1400, "height": 1800})
    page.goto(url)
    page.get_by_label("Prompt", exact=True).fill("The Eiffel Tower is located in the city of")
    page.get_by_label("New target").fill("Rome")
    page.get_by_role("button", name="Add edit").click()
    page.get_by_text("Stored e1").wait_for(timeout=30_000)
    page.get_by_role("tab", name="Probe").click()
    page.get_by_label("Probe prompts (one per line)").fill("The Eiffel Tower stands in")
    page.get_by_role("button", name="Probe", exact=True).click()
    page.get_by_text("1 routed to the counterfactual model").wait_for(timeout=60_000)
    results = page.locator("#results")
    assert "yes" in results.inner_text()
    page.locator("#heatmap .plot-container").wait_for(timeout=30_000)
    assert "Scope classifier scores" in page.locator("#heatmap").inner_text()
    page.locator("#nll .plot-container").wait_for(timeout=30_000)
    assert "Per-token NLL" in page.locator("#nll").inner_text()
    page.close()
