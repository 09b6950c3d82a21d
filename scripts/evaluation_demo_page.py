"""The evaluation issue's demonstration in a real browser against `python app.py` on the default model:

    python scripts/evaluation_demo_page.py http://127.0.0.1:7860 OUT_DIR [--skip-run]

1. The Evaluate tab: the example set on two configurations (`default`, int4 here, and `default@quant=none`,
   float32), the progress bar, the results table and chart, the items where they disagree.
2. The arena: twelve questions with one known answer each, both answers blind, and a vote cast by a rule
   anyone can check (the vote the script casts is printed with both answers): the side whose answer
   contains the expected word wins, both containing it is a tie, neither is "both bad". Then the
   leaderboard the votes produce.
"""
import shutil
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

from chatcore.testing.browsers import add_model_spec

URL = sys.argv[1]
OUT = Path(sys.argv[2]); OUT.mkdir(parents=True, exist_ok=True)
SECOND = "default@quant=none"
QUESTIONS = [
    ("What is the capital of France?", "paris"), ("What is the largest planet in the solar system?", "jupiter"),
    ("What gas do plants release during photosynthesis?", "oxygen"), ("How many legs does a spider have?", "eight"),
    ("What is the chemical symbol for gold?", "au"), ("Which planet is known as the red planet?", "mars"),
    ("What is the freezing point of water in Celsius?", "0"), ("Who wrote Romeo and Juliet?", "shakespeare"),
    ("What is the boiling point of water in Celsius?", "100"), ("What organ pumps blood through the body?", "heart"),
    ("What is the hardest natural substance?", "diamond"), ("What is the closest star to Earth?", "sun"),
]




def vote_for(answer_a: str, answer_b: str, expected: str) -> str:
    """The rule: the answer that contains the expected word wins."""
    a, b = expected in answer_a.lower(), expected in answer_b.lower()
    return {(True, False): "a", (False, True): "b", (True, True): "tie"}.get((a, b), "both-bad")


with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=shutil.which("chromium"), headless=True)
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.set_default_timeout(1_200_000)
    page.goto(URL)
    page.wait_for_function("document.querySelector('#model-status')?.innerText.includes('ready')")
    if "--skip-run" not in sys.argv:
        page.get_by_role("tab", name="Evaluate").click()
        page.click("#eval-example")
        page.locator("#eval-set-line", has_text="65 items").wait_for()
        add_model_spec(page, "#eval-models", SECOND)
        page.wait_for_function("document.querySelector('#eval-run').disabled === false")
        page.click("#eval-run")
        page.locator("#eval-progress [role=progressbar]").wait_for()
        page.screenshot(path=str(OUT / "1-evaluate-progress.png"), full_page=True)
        page.locator("#eval-progress", has_text="finished").wait_for()
        page.locator("#eval-results", has_text=SECOND).wait_for()
        print(page.locator("#eval-results").inner_text())
        print(page.locator("#eval-mcnemar").inner_text())
        page.screenshot(path=str(OUT / "2-evaluate-results.png"), full_page=True)
        page.click("#eval-only-disagree input")
        page.wait_for_timeout(1500)
        page.locator("#eval-items").scroll_into_view_if_needed()
        page.screenshot(path=str(OUT / "3-evaluate-disagreements.png"), full_page=True)

    page.get_by_role("tab", name="Chat").click()
    page.click("#arena-toggle input")
    page.locator("#arena-area").wait_for()
    add_model_spec(page, "#arena-models", SECOND)
    for n, (question, expected) in enumerate(QUESTIONS, 1):
        page.fill("#arena-message textarea", question)
        page.keyboard.press("Enter")
        page.locator("#arena-prompt", has_text=question).wait_for()
        page.wait_for_function("document.querySelector('#arena-vote-a').disabled === false")
        answer_a = page.locator("#arena-answer-a").inner_text()
        answer_b = page.locator("#arena-answer-b").inner_text()
        choice = vote_for(answer_a, answer_b, expected)
        page.click(f"#arena-vote-{choice}")
        page.locator("#arena-name-a", has_text="was").wait_for()
        names = [page.locator(f"#arena-name-{side}").inner_text() for side in "ab"]
        print(f"{n}. {question} (expects {expected!r}) vote: {choice}\n   A: {answer_a[:120]!r}\n"
              f"   B: {answer_b[:120]!r}\n   {names}")
        if n == 1:
            page.screenshot(path=str(OUT / "4-arena-vote.png"), full_page=True)
    page.click("#arena-leaderboard button")
    page.locator("#arena-board-table").wait_for()
    page.wait_for_timeout(1000)
    print(page.locator("#arena-board-line").inner_text())
    print(page.locator("#arena-board-table").inner_text())
    page.locator("#arena-leaderboard").scroll_into_view_if_needed()
    page.screenshot(path=str(OUT / "5-arena-leaderboard.png"), full_page=True)
    browser.close()
