"""A real browser (Debian's Chromium, driven by Playwright) drives the workspace: adds an edit,
probes, opens the scope inspector and the token view, previews and loads a lesson, runs a 5-case
evaluation and loads one of its failing probes back into the workspace."""

from __future__ import annotations

import os
import re
import shutil

import pytest
from playwright.sync_api import expect

from tests.test_ui import server_dirs, url  # noqa: F401  (the launched tiny app and its directories)

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


def open_and_add_edit(browser, url: str, prompt: str, target: str, subject: str, probes: str):
    """A new page of the workspace with one edit stored (e1) and its probes typed."""
    page = browser.new_page(viewport={"width": 1400, "height": 2000})
    page.goto(url)
    page.get_by_label("Prompt", exact=True).fill(prompt)
    page.get_by_label("New target").fill(target)
    page.get_by_label("Subject (optional)").fill(subject)
    page.get_by_label("Probe prompts (one per line)").fill(probes)
    page.get_by_role("button", name="Add edit").click()
    page.get_by_text("Stored e1").wait_for(timeout=30_000)
    return page


def test_the_workspace_end_to_end(browser, url):  # noqa: F811
    # edit and probe side by side
    page = open_and_add_edit(browser, url, "The Eiffel Tower is located in the city of", "Rome", "Eiffel Tower", "The Eiffel Tower stands in")
    page.get_by_text("1 routed to the counterfactual model").wait_for(timeout=60_000)  # adding re-probed
    assert "yes" in page.locator("#results").inner_text()
    # the charts start as placeholders: wait for what replaces them
    expect(page.locator("#heatmap")).to_contain_text("at or above threshold", timeout=30_000)
    # the inspection of the probe: scope inspector, token view, per-target NLL
    page.locator("#scope").get_by_text("would decline").wait_for(timeout=30_000)
    assert "e1" in page.locator("#scope").inner_text()
    expect(page.locator("#tokens")).to_contain_text("Output tokens", timeout=30_000)
    expect(page.locator("#nll")).to_contain_text("after “The Eiffel Tower stands in”", timeout=30_000)
    expect(page.locator("#claims")).to_contain_text("The Eiffel Tower stands in", timeout=30_000)  # e1 answers it
    # the memory changes, the picked probe stays: its inspection follows the memory
    page.get_by_role("button", name="Clear memory").click()
    page.locator("#scope").get_by_text("The memory is empty").wait_for(timeout=30_000)
    # a lesson: its point shows before it is loaded
    page.get_by_role("tab", name="Lessons").click()
    page.get_by_label("Scenario").click()
    page.get_by_role("option", name="An edit has consequences").click()
    page.locator("#lesson_text").get_by_text("reasons with it").wait_for(timeout=30_000)
    page.get_by_role("button", name="Load into the workspace").click()
    page.get_by_text("Loaded the lesson").wait_for(timeout=60_000)
    # the lesson checks its probes: a summary line, and a mark on each probe's explanation
    page.get_by_text(re.compile(r"^\d+ probes, \d+ routed.*Lesson “An edit has consequences”: \d of 4 probes as labelled")).wait_for(timeout=60_000)
    expect(page.locator("#why")).to_contain_text("The Eiffel Tower was designed by: ", timeout=30_000)
    assert page.locator("#why").inner_text().count("as labelled (") == 4
    assert "The Eiffel Tower is located in the country of" in page.get_by_label("Probe prompts (one per line)").input_value()
    # a 5-case evaluation, then one failing probe back into the workspace
    page.get_by_role("tab", name="Evaluate").click()
    page.get_by_label("Evaluation data (in the server's data directory)").fill("five.json")
    page.get_by_label("Cases").fill("5")
    page.get_by_role("button", name="Evaluate", exact=True).click()
    page.locator("#eval_chart .plot-container").wait_for(timeout=120_000)
    failing_probe = "The mother tongue of Danielle Darrieux is"  # the tiny model answers noise: this edit fails
    cell = page.locator("#failures").get_by_text(failing_probe, exact=True).first
    cell.wait_for(timeout=30_000)
    cell.click()
    page.get_by_text("Loaded a failing probe of the evaluation").wait_for(timeout=60_000)
    assert page.get_by_label("Probe prompts (one per line)").input_value().strip() == failing_probe
    assert failing_probe in page.locator("#memory").inner_text() and failing_probe in page.locator("#results").inner_text()
    page.close()


def test_a_shared_link_opens_the_workspace_in_a_second_page(browser, url):  # noqa: F811
    teacher = open_and_add_edit(browser, url, "Toko Yasuda plays the", "violin", "Toko Yasuda",
                                "Toko Yasuda is great at the\nThe capital of Japan is")
    teacher.get_by_role("button", name="Share this workspace").click()
    link_box = teacher.locator("#share_link textarea")
    expect(link_box).to_have_value(re.compile(r"\?workspace="), timeout=30_000)
    link = link_box.input_value()
    assert link.startswith(url)

    student = browser.new_page(viewport={"width": 1400, "height": 2000})
    student.goto(link)
    student.get_by_text("Opened a shared workspace").wait_for(timeout=60_000)
    expect(student.locator("#memory")).to_contain_text("violin", timeout=30_000)
    assert student.get_by_label("Probe prompts (one per line)").input_value() == "Toko Yasuda is great at the\nThe capital of Japan is"
    expect(student.locator("#results")).to_contain_text("Toko Yasuda is great at the", timeout=30_000)
    # the student's session is the student's: clearing it leaves the teacher's memory as it was
    student.get_by_role("button", name="Clear memory").click()
    student.get_by_text("Memory cleared").wait_for(timeout=30_000)
    teacher.get_by_role("button", name="Probe").click()
    expect(teacher.locator("#results")).to_contain_text("e1 → violin", timeout=30_000)
    assert "violin" in teacher.locator("#memory").inner_text()
    # a damaged link says so and opens an empty workspace
    stranger = browser.new_page()
    stranger.goto(url + "?workspace=" + link.split("=", 1)[1][:40])
    stranger.get_by_text("The shared link was not opened").wait_for(timeout=30_000)
    for page in (teacher, student, stranger):
        page.close()
