"""The library issue's demonstration in a real browser against `python app.py` on the default model:

    python scripts/library_demo_page.py http://127.0.0.1:7860 OUT_DIR
"""
import shutil
import sys
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

URL = sys.argv[1]
OUT = Path(sys.argv[2]); OUT.mkdir(parents=True, exist_ok=True)
PDFS = ["/usr/share/doc/libtasn1-doc/libtasn1.pdf", "/usr/share/doc/shared-mime-info/shared-mime-info-spec.pdf"]
QUESTIONS = [
    "What is the default weight of a glob pattern, and what is the maximum?",
    "Are glob patterns matched case-insensitively?",
    "Under which license can the libtasn1 library be redistributed?",
    "What does asn1Coding generate?",
    "Which encoding rules does libtasn1 implement?",
]
BOT = "#chatbot .message-row.bot-row"
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=shutil.which("chromium"), headless=True)
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.set_default_timeout(600_000)
    page.goto(URL)
    page.wait_for_function("document.querySelector('#model-status')?.innerText.includes('ready')")
    page.get_by_role("tab", name="Library").click()
    page.set_input_files("#library-upload input[type=file]", PDFS)
    page.wait_for_function("document.querySelector('#library-add').disabled === false")
    page.click("#library-add")
    page.locator("#library-progress", has_text="done: 2 of 2 files indexed").wait_for()
    page.screenshot(path=str(OUT / "1-library.png"), full_page=True)
    page.get_by_role("tab", name="Chat").click()
    page.click("#sources-picker input")
    page.get_by_role("option", name="Whole library").click()
    page.wait_for_function("document.querySelector('#evidence').disabled === false")
    page.fill("#message textarea", QUESTIONS[0])
    page.click("#evidence")
    page.locator("#evidence-view mark").first.wait_for()
    page.screenshot(path=str(OUT / "2-evidence.png"), full_page=True)
    for i, question in enumerate(QUESTIONS):
        if i:
            page.click("#new-chat")
            time.sleep(1)
            page.click("#sources-picker input")
            page.get_by_role("option", name="Whole library").click()
        page.fill("#message textarea", question)
        t = time.time()
        page.click("#send")
        page.wait_for_function(f"[...document.querySelectorAll({BOT!r})].pop()?.innerText.includes('Sources')")
        page.wait_for_selector("#send", state="visible")
        print(f"Q{i+1} {time.time()-t:.1f}s", question)
        print(page.locator(BOT).last.inner_text())
        print("context:", page.locator("#context-line").inner_text())
        page.locator(BOT).last.scroll_into_view_if_needed()
        page.screenshot(path=str(OUT / f"3-answer-{i+1}.png"), full_page=True)
    page.locator("#source-list label").first.click()
    page.locator("#source-image img").first.wait_for()
    page.screenshot(path=str(OUT / "4-source-page.png"), full_page=True)
    browser.close()
