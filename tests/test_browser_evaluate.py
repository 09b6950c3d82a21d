"""The Evaluate tab and the chat's arena in a real browser: the system Chromium, headless, driven by Playwright,
against the real Gradio server and SQLite, with two real configurations over the tiny model (the transformers
loop as ``default`` and ChatCore's fast engine as ``default@quant=none``).

Uploads a small test set, runs it on both, watches the progress bar reach the end and the results table and
chart appear; then switches the chat to the arena, sends a message, sees two blind panes, votes, and sees the
names revealed and the leaderboard count the vote. Set CHATCORE_SCREENSHOTS to a folder to save
evaluate-results.png and arena-vote.png.
"""

from __future__ import annotations

import json

import pytest

from chatcore.services.evaluation.arena import Arena
from chatcore.services.evaluation.service import Evaluations
from chatcore.testing.browsers import CHROMIUM, add_model_spec, close_toasts, page_at, screenshot, serve_page
from chatcore.testing.workspaces import make_workspace

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="no system Chromium on PATH (install the chromium package)"),
]

SECOND = "default@quant=none"
CAPITALS = [
    {"id": "fr", "question": "What is the capital of France?", "answer": "Paris", "tags": ["europe"]},
    {"id": "uk", "question": "What is the capital of England?", "answer": "London", "tags": ["europe"]},
    {"id": "tx", "question": "What is the capital of Texas?", "answers": ["Austin"], "tags": ["america"]},
]


@pytest.fixture(scope="module")
def server(tmp_path_factory, hf_engine, tiny_engine, tiny_model_dir):
    """The real Gradio server in this process; evaluations and the arena over two real tiny backends."""
    workspace = make_workspace(tmp_path_factory.mktemp("web-evaluate"), hf_engine, model=str(tiny_model_dir))
    backends = {"default": hf_engine, SECOND: tiny_engine}
    workspace.evaluations = Evaluations(workspace.store, backends.__getitem__)
    workspace.arena = Arena(workspace.store, backends.__getitem__)
    with serve_page(workspace) as url:
        yield url, workspace


@pytest.fixture
def page(browser, server):
    url, _ = server
    with page_at(browser, url, height=1100, timeout_ms=60_000) as page:
        yield page






def test_evaluate_two_configurations_then_vote_in_the_arena(page, tmp_path):
    # The Evaluate tab starts empty: its empty states, and Run off until a test set is there.
    page.get_by_role("tab", name="Evaluate").click()
    page.locator("#eval-set-empty", has_text="No test set yet").wait_for()
    page.locator("#eval-results-empty", has_text="No run yet").wait_for()
    assert page.locator("#eval-run").is_disabled() and page.locator("#eval-remove").is_disabled()

    # A small test set uploaded is previewed, and its default scorers ticked.
    path = tmp_path / "capitals.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in CAPITALS))
    page.set_input_files("#eval-upload input[type=file]", str(path))
    page.locator("#eval-set-line", has_text="3 items").wait_for()
    page.locator("#eval-preview", has_text="What is the capital of France?").wait_for()
    assert page.locator("#eval-scorers input[type=checkbox]:checked").count() >= 2  # exact and f1 at least

    # Two configurations: the default, and the fast engine typed as a spec; Run, then the bar and the results.
    add_model_spec(page, "#eval-models", SECOND)
    page.wait_for_function("document.querySelector('#eval-run').disabled === false")
    page.click("#eval-run")
    page.locator("#eval-progress [role=progressbar]").wait_for()
    page.locator("#eval-progress", has_text="finished · 6/6").wait_for()
    page.locator("#eval-results", has_text=SECOND).wait_for()
    assert page.locator("#eval-chart svg path.whisker").count() == 2
    assert page.locator("#eval-results-empty").is_hidden() and page.locator("#eval-cancel").is_hidden()
    page.locator("#eval-items", has_text="What is the capital of Texas?").wait_for()
    assert page.locator("#eval-csv").is_enabled() and page.locator("#eval-md").is_enabled()
    close_toasts(page)
    screenshot(page, "evaluate-results")

    # The arena: two blind panes, the votes only once both answers end, the names after the vote.
    page.get_by_role("tab", name="Chat").click()
    page.click("#arena-toggle input")
    page.locator("#arena-area").wait_for()
    assert page.locator("#chatbot").is_hidden()
    add_model_spec(page, "#arena-models", SECOND)
    page.fill("#arena-message textarea", "Name a city by a river.")
    page.keyboard.press("Enter")
    page.locator("#arena-prompt", has_text="Name a city by a river.").wait_for()
    page.wait_for_function("document.querySelector('#arena-vote-a').disabled === false")
    assert page.locator("#arena-pane-a", has_text="Model A").is_visible()
    assert page.locator("#arena-pane-b", has_text="Model B").is_visible()
    assert "was" not in page.locator("#arena-name-a").inner_text()
    assert "which is better" in page.locator("#arena-status").inner_text()
    page.click("#arena-vote-a")
    page.locator("#arena-name-a", has_text="Model A was").wait_for()
    names = {page.locator(f"#arena-name-{side}").inner_text().split("was")[-1].strip() for side in "ab"}
    assert names == {"default", SECOND}
    page.wait_for_function("document.querySelector('#arena-vote-b').disabled === true")
    page.click("#arena-leaderboard button")
    page.locator("#arena-board-line", has_text="not enough votes yet (1 of 10)").wait_for()
    page.locator("#arena-board-table", has_text=SECOND).wait_for()
    assert page.locator("#arena-download").is_enabled()
    assert page.locator("#conversations label").count() == 0  # a battle is not a conversation
    if page.locator(".toast-close").count():
        close_toasts(page)
    screenshot(page, "arena-vote")
