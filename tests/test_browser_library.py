"""The Library tab and grounded answers in a real browser: the system Chromium, headless, driven by Playwright,
against the real Gradio server with the tiny model (the transformers loop) and a real SQLite library.

Uploads a real PDF not written by the project, watches it become ready, chooses Sources in the Chat tab, asks,
sees the sources under the answer, and opens one: the page drawn as an image and its text with the passage
marked. Set CHATCORE_SCREENSHOTS to a folder to save library-tab.png, chat-sources.png and source-page.png.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chatcore.testing.browsers import CHROMIUM, screenshot
from chatcore.testing.documents import make_pdf

SPEC = Path("/usr/share/doc/shared-mime-info/shared-mime-info-spec.pdf")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="no system Chromium on PATH (install the chromium package)"),
    pytest.mark.skipif(not SPEC.exists(), reason=f"{SPEC} is not on this machine (the shared-mime-info package)"),
]

BOT = "#chatbot [data-testid='bot']"
PAYLOAD = ('Markup in a document: <img src=x onerror="window.__pwned=1"> <script>window.__pwned=2</script> '
           '<b>never bold</b> ends here.')


def _upload(page, *paths: Path) -> None:
    page.get_by_role("tab", name="Library").click()
    page.set_input_files("#library-upload input[type=file]", [str(p) for p in paths])
    page.wait_for_function("document.querySelector('#library-add').disabled === false")
    page.click("#library-add")


def test_upload_a_pdf_ask_from_it_and_open_the_cited_page(page, page_server):
    # The Library starts empty: its empty state, and Add only once files are chosen.
    page.get_by_role("tab", name="Library").click()
    page.locator("#library-empty", has_text="No documents yet").wait_for()
    assert page.locator("#library-add").is_disabled()

    # A real PDF is indexed in the background; the bar reaches done and the table shows it ready.
    _upload(page, SPEC)
    page.locator("#library-progress", has_text="done: 1 of 1 files indexed").wait_for()
    page.locator("#library-documents", has_text="ready").wait_for()
    row = page.locator("#library-documents").inner_text()
    assert "shared-mime-info-spec.pdf" in row and "17" in row
    assert page.locator("#library-empty").is_hidden() and page.locator("#library-cancel").is_hidden()
    page.fill("#library-search textarea, #library-search input", "glob patterns")
    page.keyboard.press("Enter")
    page.locator("#library-results mark").first.wait_for()
    assert "shared-mime-info-spec.pdf, page" in page.locator("#library-results").inner_text()
    page.locator("#library-documents [role=gridcell]", has_text="shared-mime-info-spec.pdf").first.click()
    page.wait_for_function("document.querySelector('#library-delete').disabled === false")
    assert "shared-mime-info-spec.pdf" in page.locator("#library-selected").inner_text()
    for close in page.locator(".toast-close").all():  # the "Indexing…" toast would cover the picture
        close.click()
    page.locator(".toast-close").first.wait_for(state="detached")
    screenshot(page, "library-tab")

    # Chat: Evidence is off until Sources are chosen; then an answer lists its sources under it.
    page.get_by_role("tab", name="Chat").click()
    assert page.locator("#evidence").is_disabled()
    page.click("#sources-picker input")
    page.get_by_role("option", name="Whole library").click()
    page.wait_for_function("document.querySelector('#evidence').disabled === false")
    page.fill("#message textarea", "How are glob patterns matched against file names?")
    page.click("#evidence")
    page.locator("#evidence-view mark").first.wait_for()
    assert page.locator(BOT).count() == 0  # evidence generates nothing
    page.click("#send")
    page.wait_for_function(f"[...document.querySelectorAll({BOT!r})].pop()?.innerText.includes('Sources')")
    page.wait_for_selector("#send", state="visible")
    answer = page.locator(BOT).last.inner_text()
    assert "[1] shared-mime-info-spec.pdf, page" in answer and ("not cited" in answer or "cited" in answer)
    page.locator("#source-list label").first.wait_for()
    page.locator(BOT).last.scroll_into_view_if_needed()
    screenshot(page, "chat-sources")

    # Clicking a source shows its page: the PDF page as an image and the passage marked in the page's text.
    page.locator("#source-list label").first.click()
    page.locator("#source-image img").wait_for()
    page.locator("#source-page mark#cited-passage").wait_for()
    marked = page.locator("#source-page mark#cited-passage").inner_text()
    assert len(marked) > 20 and marked.split()[0] in page.locator("#source-page .source-page").inner_text()
    assert page.locator("#save-source-note").is_enabled()
    page.evaluate("document.querySelector('#source-viewer').scrollIntoView({block: 'start'})")
    screenshot(page, "source-page")
    page.click("#save-source-note")
    page.get_by_role("tab", name="Notes").click()
    page.locator("#notes-list label", has_text="shared-mime-info-spec.pdf, page").wait_for()

    # Reopened after a reload, the chat keeps its Sources and its answer's sources.
    page.reload()
    page.wait_for_function("document.querySelector('#model-status')?.innerText.includes('ready')")
    page.locator("#conversations label").first.click()
    page.wait_for_function(f"[...document.querySelectorAll({BOT!r})].pop()?.innerText.includes('Sources')")
    page.wait_for_function("document.querySelector('#sources-picker input').value === 'Whole library'")


def test_markup_in_a_document_is_shown_as_text_and_runs_nothing(page, page_server, tmp_path):
    pdf = make_pdf(tmp_path / "markup.pdf", [PAYLOAD])
    _upload(page, pdf)
    page.locator("#library-documents", has_text="markup.pdf").wait_for()
    page.locator("#library-progress", has_text="done").wait_for()
    page.fill("#library-search textarea, #library-search input", "markup document never bold")
    page.keyboard.press("Enter")
    page.locator("#library-results", has_text="<b>never bold</b>").wait_for()
    assert page.locator("#library-results b").count() == 0 and page.locator("#library-results img").count() == 0
    assert page.evaluate("window.__pwned") is None
