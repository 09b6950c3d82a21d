"""Decoding speed as a user of the web app sees it: answers streamed into a real (headless) Chromium.

Starts ``app.py`` on a free port with a throw-away home (the model cache is the usual one), asks it
a few research questions through the page with the default sampling settings, and reads the speed
the app recorded for each answer. The peer, measured in the same run: the same questions and seeds
through the engine in this process, with no server and no browser.

    python -m bench.bench_web
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import say
from chatcore.testing.servers import free_port

QUESTIONS = (
    "Explain what a p-value is, in detail.",
    "Give me five ideas for experiments on sleep and memory.",
    "Write a long paragraph about the history of statistics.",
)
ROOT = Path(__file__).resolve().parent.parent


def through_the_browser(home: Path) -> list[tuple[int, float, int]]:
    """(completion tokens, tok/s, seed) of each answer the web app streamed into Chromium."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("no system Chromium on PATH (install the chromium package)")
    port = free_port()
    log = open(home / "app.log", "w")
    server = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port)], cwd=ROOT, stdout=log,
                              stderr=subprocess.STDOUT, env=dict(os.environ, CHATCORE_HOME=str(home)))
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(300_000)
            for _ in range(300):  # the server loads the model first
                try:
                    page.goto(f"http://127.0.0.1:{port}")
                    break
                except Exception:  # noqa: BLE001 - not listening yet
                    time.sleep(1)
            page.wait_for_function("document.querySelector('#model-status')?.innerText.includes('ready')")
            for question in QUESTIONS:
                say(f"web: {question}")
                page.fill("#message textarea", question)
                page.keyboard.press("Enter")
                page.wait_for_selector("#stop", state="visible")
                page.wait_for_selector("#send", state="visible")
            browser.close()
    finally:
        server.terminate()
        server.wait()
    from chatcore.core.settings import Settings

    with sqlite3.connect(Settings(home=home).db_path) as db:
        rows = db.execute("SELECT completion_tokens, tokens_per_s, params FROM messages WHERE role = 'assistant'"
                          " ORDER BY id").fetchall()
    return [(tokens, rate, json.loads(params)["seed"]) for tokens, rate, params in rows]


def in_process(seeds: list[int]) -> list[tuple[int, float]]:
    """(completion tokens, tok/s) of the same questions and seeds through the engine, no server or browser."""
    from chatcore.core.events import Finished
    from chatcore.core.params import GenerationParams
    from chatcore.core.settings import Settings
    from chatcore.engine.loader import load_engine

    engine = load_engine(Settings(), progress=say)
    out = []
    for question, seed in zip(QUESTIONS, seeds):
        say(f"engine: {question}")
        params = GenerationParams.create(seed=seed)
        for event in engine.stream([{"role": "user", "content": question}], params):
            if isinstance(event, Finished):
                out.append((event.completion_tokens, event.decode_tok_s))
    return out


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="chatcore-web-") as home:
        web = through_the_browser(Path(home))
    engine = in_process([seed for _, _, seed in web])
    print(f"{'answer':<8} {'web tokens':>11} {'web tok/s':>10} {'engine tokens':>14} {'engine tok/s':>13}")
    for index, ((tokens, web_rate, _), (engine_tokens, engine_rate)) in enumerate(zip(web, engine), 1):
        print(f"{index:<8} {tokens:>11} {web_rate:>10.1f} {engine_tokens:>14} {engine_rate:>13.1f}")
    web_median = statistics.median(rate for _, rate, _ in web)
    engine_median = statistics.median(rate for _, rate in engine)
    print(f"median: web {web_median:.1f} tok/s, engine alone {engine_median:.1f} tok/s "
          f"(web / engine {web_median / engine_median:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
