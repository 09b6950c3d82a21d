"""The web app in a real browser: the system Chromium, headless, driven by Playwright, with the tiny model.

Streams an answer, stops a long one, reloads and reopens the conversation from the sidebar, checks that
markup in a message runs nothing and reaches no other host, and that every view has an empty state and
enables an action only when it applies. The engine is ``Held``: a test that must act while an answer runs
(Stop, two answers at once) holds the answers after their first piece, so it never races the decoder.

Set CHATCORE_SCREENSHOTS to a folder to save screenshots of the empty and filled Notes and Stats tabs
and of the Chat tab with a conversation.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from chatcore.testing.browsers import CHROMIUM, page_at
from chatcore.testing.engines import Held, Paced, endless
from chatcore.testing.servers import free_port
from chatcore.testing.workspaces import make_workspace
from chatcore.web.workspace import STREAM_INTERVAL_S

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="no system Chromium on PATH (install the chromium package)"),
]

BOT = "#chatbot [data-testid='bot']"  # one per answer, its rendered content only
USER = "#chatbot [data-testid='user']"
PAYLOAD = (
    'Check these: <img src=x onerror="window.__pwned=1;alert(1)"> <script>window.__pwned=2;alert(2)</script> '
    '[click me](javascript:window.__pwned=3) <a href="javascript:alert(4)">and me</a> '
    '<svg onload="window.__pwned=5"></svg> <iframe src="javascript:alert(6)"></iframe> '
    '<details open ontoggle="window.__pwned=7">x</details> ![pixel](http://tracker.invalid/p.png)'
)


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_engine, tiny_model_dir):
    """The real Gradio server in this process, over the tiny model with end-of-text off (answers run long)."""
    from chatcore.web import app, server

    engine = Held(Paced(endless(tiny_engine), delay_s=0.01))  # about 100 tokens a second, whatever the decoder
    workspace = make_workspace(tmp_path_factory.mktemp("web"), engine, model=str(tiny_model_dir),
                               stream_interval=STREAM_INTERVAL_S)
    demo = app.build_app(workspace)
    _, url, _ = server.launch(demo, port=free_port(), prevent_thread_lock=True, quiet=True)
    yield url, workspace
    demo.close()


@pytest.fixture(scope="module")
def engine(server):
    """The server's engine, to hold answers while a test acts on them."""
    _, workspace = server
    return workspace.manager.get()


@pytest.fixture
def page(browser, server):
    url, _ = server
    with page_at(browser, url, height=900, timeout_ms=30_000) as page:
        yield page


def _bot_texts(page) -> list[str]:
    return page.locator(BOT).all_inner_texts()


def _last_answer(page) -> str:
    texts = _bot_texts(page)
    return texts[-1] if texts else ""


def _set_max_tokens(page, value: int) -> None:
    page.click("#settings-panel .toggle-button")
    number = page.locator("#max-new-tokens input[type=number]")
    number.fill(str(value))
    number.press("Enter")
    page.wait_for_function(
        f"document.querySelector('#max-new-tokens input[type=range]').value == '{value}'"
    )
    page.click("#settings-panel .toggle-button")


def _set_seed(page, value: str) -> None:
    page.click("#settings-panel .toggle-button")
    page.fill("#seed input, #seed textarea", value)
    page.click("#settings-panel .toggle-button")


def _send(page, text: str) -> None:
    page.fill("#message textarea", text)
    page.keyboard.press("Enter")


def _wait_for_send_button(page) -> None:
    page.wait_for_selector("#send", state="visible")


def test_stream_stop_reload_and_reopen(page, server, engine):
    started = time.monotonic()
    _, workspace = server

    # 1. A question gets an answer that arrives in pieces. The page itself records every length the answer
    # shows (a MutationObserver, no round trips), so a busy machine cannot hide the steps between samples.
    _set_max_tokens(page, 256)
    page.evaluate("""bot => {
        window.__lengths = [];
        new MutationObserver(() => {
            const answers = document.querySelectorAll(bot);
            const length = answers.length ? answers[answers.length - 1].innerText.length : 0;
            if (length && window.__lengths[window.__lengths.length - 1] !== length) window.__lengths.push(length);
        }).observe(document.querySelector('#chatbot'), {subtree: true, childList: true, characterData: true});
    }""", BOT)
    _send(page, "What is a transformer in machine learning?")
    page.wait_for_function(f"[...document.querySelectorAll({BOT!r})].pop()?.innerText.includes('256 tokens')",
                           timeout=90_000)
    lengths = page.evaluate("window.__lengths")
    assert "256 tokens" in _last_answer(page), "the answer did not finish with its stats line"
    assert len(lengths) >= 4 and lengths == sorted(lengths), f"no streaming seen: lengths {lengths}"
    assert "first token" in _last_answer(page) and "tok/s" in _last_answer(page)
    page.wait_for_selector("text=Context:")
    _wait_for_send_button(page)

    # 2. Stop ends a long answer for real: it stops growing and is saved as stopped. The answer is held
    # after its first piece, so Stop is pressed while it certainly runs (it could land after the end).
    _set_max_tokens(page, 400)
    with engine.holding():
        _send(page, "Now write a very long essay about attention.")
        engine.wait_until_held(1)  # the answer runs: its first piece is out (it may be blank: a random model)
        page.wait_for_selector("#stop", state="visible")
        page.click("#stop")
        page.wait_for_function(f"[...document.querySelectorAll({BOT!r})].pop().innerText.includes('stopped')")
    stopped = _last_answer(page)
    page.wait_for_timeout(500)
    assert _last_answer(page) == stopped
    _wait_for_send_button(page)
    conversation = workspace.store.list_conversations("local")[0]
    saved = workspace.store.get_conversation("local", conversation["id"])["messages"]
    assert saved[-1]["finish_reason"] == "cancelled" and saved[-1]["completion_tokens"] < 400

    # 3. After a reload the conversation is listed; opening it restores its messages.
    page.reload()
    item = page.locator("#conversations label", has_text="What is a transformer in machine learning?")
    item.wait_for()
    assert page.locator(USER).count() == 0  # a fresh page starts with an empty chat
    item.click()
    page.wait_for_function(f"document.querySelectorAll({BOT!r}).length == 2")
    users = page.locator(USER).all_inner_texts()
    assert "What is a transformer in machine learning?" in users[0] and "long essay" in users[1]
    assert "stopped" in _bot_texts(page)[1]
    page.screenshot(path=os.environ.get("CHATCORE_SCREENSHOT") or str(Path(workspace.store.path).parent / "ui.png"))
    print(f"\nbrowser flow took {time.monotonic() - started:.1f}s")


def test_markup_in_messages_runs_nothing_and_reaches_no_other_host(page, server):
    url, _ = server
    ours = urlparse(url).netloc
    dialogs, foreign, failed = [], [], {}
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.on("request", lambda request: foreign.append(request.url) if urlparse(request.url).netloc != ours else None)
    page.on("requestfailed", lambda request: failed.__setitem__(request.url, request.failure))
    page.on("console", lambda message: dialogs.append(message.text) if "pwned" in message.text else None)

    _set_max_tokens(page, 32)
    _send(page, PAYLOAD)
    page.wait_for_function(f"[...document.querySelectorAll({BOT!r})].pop()?.innerText.includes('32 tokens')")
    _wait_for_send_button(page)
    for link in page.locator("#chatbot a").all():  # javascript: links must be inert
        link.click(force=True, no_wait_after=True)
    # Stored markup must stay inert when the conversation is reopened after a reload, too.
    page.reload()
    item = page.locator("#conversations label", has_text="Check these")
    item.wait_for()
    assert "<img src=x" in item.inner_text()  # the title is shown as text, not markup
    item.click()
    page.wait_for_function(f"document.querySelectorAll({BOT!r}).length == 1")
    page.wait_for_timeout(500)

    assert page.evaluate("window.__pwned") is None
    assert dialogs == []
    assert page.locator("#chatbot script, #chatbot iframe[src^='javascript'], #chatbot [onerror]").count() == 0
    # The only other-host request is the remote image, and the page's CSP blocks it before it leaves.
    for request_url in foreign:
        assert urlparse(request_url).hostname == "tracker.invalid", request_url
        assert "csp" in (failed.get(request_url) or "").lower(), (request_url, failed.get(request_url))


def test_two_tabs_chat_at_once(browser, server, page, engine):
    url, workspace = server
    other_context = browser.new_context(viewport={"width": 1400, "height": 900})
    other = other_context.new_page()
    try:
        other.goto(url)
        other.wait_for_function("document.querySelector('#model-status')?.innerText.includes('ready')")
        for tab in (page, other):
            _set_max_tokens(tab, 160)
        # Both answers are held after their first piece: they run at once however slow the second send is.
        with engine.holding():
            _send(page, "First tab asks about entropy")
            _send(other, "Second tab asks about enthalpy")
            engine.wait_until_held(2)
        for tab in (page, other):
            tab.wait_for_function(f"document.querySelector({BOT!r})?.innerText.includes('160 tokens')")
        assert "entropy" in page.locator(USER).inner_text() and "enthalpy" in other.locator(USER).inner_text()
        answers = {}
        for c in workspace.store.list_conversations("local"):
            if c["title"] in ("First tab asks about entropy", "Second tab asks about enthalpy"):
                answers[c["title"]] = workspace.store.get_conversation("local", c["id"])["messages"][-1]
        first, second = answers.values()
        # Both answers were being written at the same time: neither waited for the other to finish.
        assert first["created"] < second["updated"] and second["created"] < first["updated"]
    finally:
        other_context.close()


NOTE_BODY = ('Entropy measures disorder <script>window.__pwned=3</script> <svg onload="window.__pwned=4"></svg> '
             '[link](javascript:window.__pwned=5) ![x](http://example.com/leak.png)')


def test_an_answer_saved_as_a_note_is_in_the_notes_tab_and_links_back(page, server):
    _, workspace = server
    _set_max_tokens(page, 16)
    _send(page, "Notes test: what is entropy?")
    page.wait_for_function(f"[...document.querySelectorAll({BOT!r})].pop()?.innerText.includes('16 tokens')")
    _wait_for_send_button(page)

    # Clicking the answer selects it for the answer tools; keep a part of it, title it, save it.
    page.locator(BOT).last.click()
    page.wait_for_selector("#selected-answer:has-text('Selected answer')")
    page.fill("#note-text textarea", NOTE_BODY)
    page.fill("#note-title input", 'Entropy <img src=x onerror="window.__pwned=1">')
    page.fill("#note-tags input", "physics")
    page.click("#save-note")
    page.wait_for_function("document.querySelector('#note-title input').value === ''")

    # The Notes tab lists it (as text), finds it by its words, and opens its source conversation.
    page.get_by_role("tab", name="Notes").click()
    item = page.locator("#notes-list label", has_text="Entropy")
    item.wait_for()
    assert "<img src=x" in item.inner_text() and page.locator("#notes-list img").count() == 0
    page.fill("#notes-search input", "disorder")
    page.wait_for_selector("#notes-list label:has-text('«disorder»')")
    page.locator("#notes-list label", has_text="Entropy").click()
    page.wait_for_function("body => document.querySelector('#note-edit-body textarea')?.value === body",
                           arg=NOTE_BODY)  # the editor is drawn once a note is open
    assert page.locator("#notes-list img, #notes-list script, #notes-list iframe, #notes-list svg").count() == 0
    page.click("#note-open-source")
    page.wait_for_selector("#chatbot", state="visible")
    page.wait_for_function(f"document.querySelector({USER!r})?.innerText.includes('Notes test: what is entropy?')")
    assert page.locator("#chat-title input, #chat-title textarea").input_value() == "Notes test: what is entropy?"
    assert page.evaluate("window.__pwned") is None
    [note] = [n for n in workspace.store.db["notes"].rows if n["title"].startswith("Entropy")]
    assert note["body"] == NOTE_BODY and note["source_message_id"] is not None


def _seen(page, selector: str) -> bool:
    """Whether what the user sees at the middle of the (first) element is the element itself: nothing
    covers it."""
    element = page.locator(selector).first
    element.scroll_into_view_if_needed()
    return element.evaluate("""e => { const r = e.getBoundingClientRect();
        return e.contains(document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2)); }""")


def test_a_refused_message_says_why_on_the_page_and_keeps_the_text(page):
    # A bad seed is refused before anything is sent: the page must show the reason, not a bare "Error".
    _set_seed(page, "abc")
    _send(page, "A question that must not be lost")
    page.wait_for_selector("text=seed must be an integer, got 'abc'", timeout=15_000)
    assert page.input_value("#message textarea") == "A question that must not be lost"
    assert page.locator(USER).count() == 0


def test_a_refusal_leaves_the_conversation_and_the_sidebar_in_view(page):
    # Gradio covers each output of a refused event with an "Error" badge on white: a refused message hid
    # the whole conversation, a refused title the whole sidebar. What was on the page must stay in view.
    _set_max_tokens(page, 16)
    _send(page, "A first question")
    page.wait_for_function(f"[...document.querySelectorAll({BOT!r})].pop()?.innerText.includes('16 tokens')")
    _wait_for_send_button(page)
    _set_seed(page, "abc")
    _send(page, "A refused question")
    page.wait_for_selector("text=seed must be an integer, got 'abc'", timeout=15_000)
    assert _seen(page, USER) and _seen(page, BOT), "the refusal covered the conversation"
    title = page.locator("#chat-title input, #chat-title textarea")
    title.fill("")
    title.press("Enter")
    page.wait_for_selector("text=A title cannot be empty.", timeout=15_000)
    assert _seen(page, "#conversations label"), "the refusal covered the sidebar"


# -- empty states, and actions enabled only when they apply ------------------------------------------

EMOJI = r"/[\p{Extended_Pictographic}\u2460-\u24ff\u2900-\u297f\uff00-\uffef]/u"  # emoji, ⑂, ⤓, ＋
CONVERSATION_TOOLS = ["#rename", "#delete", "#export-markdown", "#export-json"]
ANSWER_TOOLS = ["#save-note", "#save-comment", "#rerun"]


def _clear_history(workspace) -> None:
    """Delete every conversation and note of the local user, so the page shows its first-visit state."""
    for conversation in workspace.store.list_conversations("local", limit=10_000):
        workspace.delete("local", conversation["id"])
    for note in workspace.notes("local", limit=10_000):
        workspace.delete_note("local", note["id"])


def _enabled(page, selectors: list[str]) -> list[bool]:
    return [page.locator(selector).is_enabled() for selector in selectors]


def _shot(page, name: str) -> None:
    """A screenshot into $CHATCORE_SCREENSHOTS, when set."""
    folder = os.environ.get("CHATCORE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"))


def test_a_first_visit_shows_empty_states_and_no_action_that_does_not_apply(page, server):
    _, workspace = server
    _clear_history(workspace)
    page.reload()
    page.wait_for_function("document.querySelector('#model-status')?.innerText.includes('ready')")

    # Chat: nothing open, so nothing to rename, delete or export; no answer, so no answer tools.
    empty_sidebar = page.evaluate("getComputedStyle(document.querySelector('#conversations'), '::after').content")
    assert "No conversations yet" in empty_sidebar
    assert page.locator("#chatbot", has_text="No conversation open").is_visible()
    assert _enabled(page, CONVERSATION_TOOLS) == [False] * 4
    page.get_by_text("Answer tools: click an answer in the chat").click()  # closed accordions draw nothing
    page.get_by_text("Research templates").click()
    page.locator("#rerun").wait_for(state="attached")
    assert _enabled(page, ANSWER_TOOLS + ["#use-template"]) == [False] * 4
    # No emoji anywhere: without an emoji font they are empty boxes. The status dot is drawn by CSS.
    assert page.locator("#model-status .status-dot.ready").count() == 1
    assert page.evaluate(f"{EMOJI}.test(document.body.innerText)") is False

    # Notes: an empty state saying how to make one, New note, and no editor or note buttons.
    page.get_by_role("tab", name="Notes").click()
    empty = page.locator("#notes-empty")
    empty.wait_for()
    assert "Save as note" in empty.inner_text() and "New note" in empty.inner_text()
    assert page.locator("#note-editor").is_hidden() and page.locator("#note-new").is_enabled()
    assert _enabled(page, ["#export-notes"]) == [False]
    _shot(page, "notes-empty")

    # Stats: one empty state per chart, no empty frames.
    page.get_by_role("tab", name="Stats").click()
    page.locator("#ratings-empty", has_text="no ratings yet").wait_for()
    for chart in ("messages", "ratings", "speed"):
        assert page.locator(f"#{chart}-empty").is_visible() and page.locator(f"#{chart}-plot").is_hidden(), chart
    _shot(page, "stats-empty")


NOTE_BUTTONS = ["#note-save", "#note-open-source", "#note-pin", "#note-unpin", "#note-delete"]


def test_actions_turn_on_as_they_come_to_apply(page, server):
    _, workspace = server
    _clear_history(workspace)
    page.reload()
    page.wait_for_function("document.querySelector('#model-status')?.innerText.includes('ready')")

    # A new note: only Save applies until it is saved; then Delete too, and no chat is open to pin it to.
    page.get_by_role("tab", name="Notes").click()
    page.locator("#notes-empty").wait_for()
    page.click("#note-new")
    page.locator("#note-editor").wait_for()
    page.wait_for_function("document.querySelector('#note-save').disabled === false")
    assert _enabled(page, NOTE_BUTTONS) == [True, False, False, False, False]
    page.fill("#note-edit-body textarea", "Written by hand: attention is a weighted average.")
    page.click("#note-save")
    page.locator("#notes-list label", has_text="Written by hand").wait_for()
    page.wait_for_function("document.querySelector('#note-delete').disabled === false")
    assert page.locator("#notes-empty").is_hidden() and page.locator("#export-notes").is_enabled()
    assert _enabled(page, NOTE_BUTTONS) == [True, False, False, False, True]

    # A conversation: its tools turn on, and clicking its answer turns on the answer tools.
    page.get_by_role("tab", name="Chat").click()
    _set_max_tokens(page, 16)
    _send(page, "Empty states: what is attention?")
    page.wait_for_function(f"[...document.querySelectorAll({BOT!r})].pop()?.innerText.includes('16 tokens')")
    _wait_for_send_button(page)
    page.wait_for_function("document.querySelector('#rename').disabled === false")
    assert _enabled(page, CONVERSATION_TOOLS) == [True] * 4
    page.locator(BOT).last.click()
    page.wait_for_selector("#selected-answer:has-text('Selected answer')")
    assert _enabled(page, ANSWER_TOOLS) == [True] * 3
    _shot(page, "chat-conversation")

    # Back in Notes with that chat open: Pin applies; once pinned, Unpin instead.
    page.get_by_role("tab", name="Notes").click()
    page.wait_for_function("document.querySelector('#note-pin').disabled === false")
    assert _enabled(page, NOTE_BUTTONS) == [True, False, True, False, True]
    page.click("#note-pin")
    page.wait_for_function("document.querySelector('#note-unpin').disabled === false")
    assert _enabled(page, NOTE_BUTTONS) == [True, False, False, True, True]
    page.locator("#notes-list label", has_text="Written by hand").click()
    page.wait_for_selector("#note-meta:has-text('pinned to the open chat')")
    _shot(page, "notes-selected")

    # Stats: messages and speed now have data; ratings keep their empty state.
    page.get_by_role("tab", name="Stats").click()
    page.locator("#messages-plot").wait_for()
    assert page.locator("#speed-plot").is_visible() and page.locator("#ratings-empty").is_visible()
    assert page.locator("#messages-empty").is_hidden() and page.locator("#speed-empty").is_hidden()
    _shot(page, "stats-filled")
