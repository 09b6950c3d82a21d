"""Save docs/screenshot.png: the web app with the default model, one question answered, settings open.

    .venv/bin/python scripts/screenshot.py [--out docs/screenshot.png]

Uses a throwaway CHATCORE_HOME and the system Chromium (headless); needs the default model cached
(`chatcore pull`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "In two sentences, what does the softmax in attention do? Then show $\\mathrm{softmax}(x)_i$ in LaTeX."


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshot.png"))
    args = parser.parse_args()
    os.environ["CHATCORE_HOME"] = tempfile.mkdtemp(prefix="chatcore-shot-")
    sys.path.insert(0, str(ROOT))

    from playwright.sync_api import sync_playwright

    from chatcore.core.settings import Settings
    from chatcore.services.models import ModelManager
    from chatcore.testing.servers import free_port
    from chatcore.web import app, server
    from chatcore.web.workspace import Workspace
    from storage import Store

    settings = Settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    manager = ModelManager(settings)
    manager.start()
    workspace = Workspace(manager, Store(settings.db_path))
    demo = app.build_app(workspace)
    _, url, _ = server.launch(demo, port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), headless=True)
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.set_default_timeout(180_000)
            page.goto(url)
            page.wait_for_function("document.querySelector('#model-status')?.innerText.includes('ready')")
            page.click("#settings-panel .toggle-button")
            number = page.locator("#max-new-tokens input[type=number]")
            number.fill("160")
            number.press("Enter")
            page.locator("#settings-panel textarea").last.fill("You are a concise research assistant.")
            page.fill("#message textarea", QUESTION)
            page.keyboard.press("Enter")
            page.wait_for_function("[...document.querySelectorAll(\"#chatbot [data-testid='bot']\")].pop()"
                                   "?.innerText.includes('tok/s')")
            page.wait_for_selector("#send", state="visible")
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=args.out)
            browser.close()
    finally:
        demo.close()
    print(args.out)


if __name__ == "__main__":
    main()
