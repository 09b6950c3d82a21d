"""The system Chromium driven by playwright, headless, for the page's browser tests."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless system Chromium (never a downloaded one), closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def page_at(browser: Any, url: str, *, height: int = 900, timeout_ms: int = 30_000) -> Iterator[Any]:
    """A fresh tab on ``url`` once the model status reads ready, in its own context (no shared cookies)."""
    context = browser.new_context(viewport={"width": 1400, "height": height})
    page = context.new_page()
    page.set_default_timeout(timeout_ms)
    page.goto(url)
    page.wait_for_function("document.querySelector('#model-status')?.innerText.includes('ready')")
    try:
        yield page
    finally:
        context.close()


def screenshot(page: Any, name: str) -> None:
    """A full-page screenshot into ``$CHATCORE_SCREENSHOTS`` as ``name``.png, when that is set (to look at)."""
    import os
    from pathlib import Path

    folder = os.environ.get("CHATCORE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def add_model_spec(page: Any, picker: str, spec: str) -> None:
    """Type a model spec into the multiselect ``picker`` (a CSS selector) that takes custom values."""
    page.click(f"{picker} input")
    page.keyboard.type(spec)
    page.keyboard.press("Enter")
    page.locator(f"{picker} .token", has_text=spec).wait_for()
    page.keyboard.press("Escape")


@contextlib.contextmanager
def serve_page(workspace: Any) -> Iterator[str]:
    """The real Gradio page over ``workspace``, served in this process on a free port; yields its URL."""
    from chatcore.testing.servers import free_port
    from chatcore.web import app, server

    demo = app.build_app(workspace)
    _, url, _ = server.launch(demo, port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        yield url
    finally:
        demo.close()


def close_toasts(page: Any) -> None:
    """Close every toast on the page and wait until they are gone (they cover what a screenshot shows)."""
    for close in page.locator(".toast-close").all():
        close.click()
    page.locator(".toast-close").first.wait_for(state="detached")
