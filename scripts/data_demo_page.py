"""The data issue's demonstration in a real browser against `python app.py` on the default model:

    python scripts/data_demo_page.py http://127.0.0.1:7860 OUT_DIR CSV

1. The Palmer penguins table (``CSV``: palmerpenguins' ``penguins.csv``) added in the Library tab's Data area;
   its profile card.
2. Three questions asked of it: the model's query, the result table and the chart, one screenshot each.
3. A model-free analysis: body mass compared between the sexes (Welch's t, Cohen's d, Mann–Whitney).
4. The sandbox refusing a file read, ATTACH and INSTALL typed in the SQL box.
"""
import sys
from pathlib import Path

from chatcore.testing.browsers import chromium, close_toasts, page_at

URL, OUT, CSV = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
OUT.mkdir(parents=True, exist_ok=True)
QUESTIONS = ["What is the average flipper length for each island?",
             "How many penguins of each species are there?",
             "What is the maximum bill length for each species?"]
REFUSED = ["SELECT * FROM read_csv('/etc/passwd')", "ATTACH '/tmp/other.duckdb' AS other",
           "INSTALL httpfs"]


def pick(page, box: str, option: str) -> None:
    page.click(f"{box} input")
    page.get_by_role("option", name=option, exact=True).click()


def type_sql(page, sql: str) -> None:
    editor = page.locator("#data-sql .cm-content")
    editor.click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    editor.fill(sql)


def shot(page, name: str, *, full: bool = True) -> None:
    """A screenshot without toasts, from the top (the sidebar is drawn where the page was scrolled to)."""
    close_toasts(page)
    page.evaluate("window.scrollTo(0, 0)")
    page.wait_for_timeout(300)
    page.screenshot(path=str(OUT / name), full_page=full)


with chromium() as browser, page_at(browser, URL, height=1000, timeout_ms=600_000) as page:
    page.get_by_role("tab", name="Library").click()
    page.get_by_role("tab", name="Data").click()
    page.set_input_files("#data-upload input[type=file]", CSV)
    page.wait_for_function("document.querySelector('#data-add').disabled === false")
    page.click("#data-add")
    page.locator("#data-progress", has_text="ready").wait_for()
    page.locator("#data-profile .column-card").nth(7).wait_for()
    print(page.locator("#data-profile").inner_text()[:400])
    shot(page, "1-profile.png")

    for n, question in enumerate(QUESTIONS, start=2):
        page.fill("#data-question textarea", question)
        page.click("#data-ask")
        page.locator("#data-ask-status", has_text="Answered").wait_for()
        page.locator("#data-answer-line", has_text=f"answer {n - 1}").wait_for()
        print(f"\n## {question}\n{page.locator('#data-sql .cm-content').inner_text()}\n"
              f"{page.locator('#data-result').inner_text()[:300]}\n{page.locator('#data-narrative').inner_text()}")
        shot(page, f"{n}-ask.png")

    pick(page, "#data-kind", "Two-group comparison")
    pick(page, "#data-by", "sex")
    pick(page, "#data-measure", "body_mass_g")
    page.wait_for_function("document.querySelector('#data-analyze').disabled === false")
    page.click("#data-analyze")
    page.locator("#data-answer-line", has_text="two-group comparison").wait_for()
    print("\n## compare\n" + page.locator("#data-narrative").inner_text() + "\n"
          + page.locator("#data-statistics").inner_text()[:600])
    shot(page, "5-compare.png")

    for i, sql in enumerate(REFUSED):
        close_toasts(page)
        type_sql(page, sql)
        page.click("#data-run")
        toast = page.locator(".toast-body").first
        toast.wait_for()
        print(f"\n## {sql}\n{toast.inner_text()}")
        page.wait_for_timeout(800)  # the toast slides in
        page.screenshot(path=str(OUT / f"{6 + i}-refused.png"))
