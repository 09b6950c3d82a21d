"""The Library tab's Data area in a real browser: the system Chromium, headless, driven by Playwright, against the
real Gradio server with the tiny model (the transformers loop), real SQLite and real DuckDB.

Uploads the trials CSV, watches the bar reach ready and the profile card appear, edits the SQL and runs it, and sees
the result table, a bar chart and the Download CSV button. Set CHATCORE_SCREENSHOTS to a folder to save
data-profile.png and data-answer.png.
"""

from __future__ import annotations

import pytest

from chatcore.testing.browsers import CHROMIUM, close_toasts, screenshot
from chatcore.testing.data import write_trials_csv

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="no system Chromium on PATH (install the chromium package)"),
]

QUERY = ("SELECT condition, avg(response) AS mean_response, avg(accuracy) AS mean_accuracy\n"
         "FROM trials\nGROUP BY condition\nORDER BY mean_response DESC")


def test_upload_the_trials_csv_see_its_profile_and_answer_a_typed_query(page, page_server, tmp_path):
    trials = write_trials_csv(tmp_path / "trials.csv")
    page.get_by_role("tab", name="Library").click()
    page.get_by_role("tab", name="Data").click()
    page.locator("#data-empty", has_text="No tables yet").wait_for()
    assert page.locator("#data-add").is_disabled() and page.locator("#data-card").is_hidden()

    # The file goes in with a bar; the list shows it and its profile card opens.
    page.set_input_files("#data-upload input[type=file]", str(trials))
    page.wait_for_function("document.querySelector('#data-add').disabled === false")
    page.click("#data-add")
    page.locator("#data-progress", has_text="ready: 60 rows").wait_for()
    page.locator("#data-tables", has_text="trials.csv").wait_for()
    page.locator("#data-profile .column-card").nth(4).wait_for()
    assert page.locator("#data-empty").is_hidden()
    card = page.locator("#data-profile").inner_text()
    assert "trials · 60 rows × 5 columns" in card and "condition" in card and "drug_b" in card
    assert page.locator("#data-profile svg.spark").count() == 4
    assert page.locator("#data-remove").is_enabled() and page.locator("#data-analyze").is_disabled()
    # Choosing an analysis shows the columns it asks for, filled from the table's.
    page.click("#data-kind input")
    page.get_by_role("option", name="Two-group comparison", exact=False).click()
    page.click("#data-by input")
    page.get_by_role("option", name="condition").click()
    page.locator("#data-groups .token", has_text="drug_a").wait_for()
    assert page.locator("#data-x").is_hidden() and page.locator("#data-analyze").is_disabled()
    page.click("#data-measure input")
    page.get_by_role("option", name="response").click()
    page.wait_for_function("document.querySelector('#data-analyze').disabled === false")
    close_toasts(page)
    page.evaluate("window.scrollTo(0, 0)")  # the sidebar is drawn where the page was scrolled to
    screenshot(page, "data-profile")

    # A typed query: the SQL box is editable; Run answers with the table, a chart, the CSV and the record.
    editor = page.locator("#data-sql .cm-content")
    editor.click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    editor.fill(QUERY)
    page.wait_for_function("document.querySelector('#data-run').disabled === false")
    page.click("#data-run")
    page.locator("#data-chart svg.data-chart").first.wait_for()
    # Two measures of different sizes: a chart each, a bar per condition in each.
    assert page.locator("#data-chart svg.data-chart").count() == 2 and page.locator("#data-chart .bar").count() == 6
    result = page.locator("#data-result").inner_text()
    assert "drug_b" in result and "77.5" in result and "63.75" in result
    assert "3 rows" in page.locator("#data-answer-line").inner_text()
    assert page.locator("#data-csv").is_enabled() and page.locator("#data-answer-empty").is_hidden()
    page.locator("#data-record-box").click()
    page.locator("#data-record", has_text="result").wait_for()
    url, workspace = page_server
    assert workspace.data.table("local", "trials")["sha256"] in page.locator("#data-record").inner_text()
    page.locator("#data-past input").click()
    page.get_by_role("option", name="avg(response)", exact=False).first.wait_for()
    page.keyboard.press("Escape")
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "data-answer")

    # A refused query says why; the answer on show stays.
    editor.click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    editor.fill("SELECT * FROM read_csv('/etc/passwd')")
    page.click("#data-run")
    page.locator(".toast-body", has_text="file, URL and extension access is off").wait_for()
    assert page.locator("#data-chart svg.data-chart").first.is_visible()
    assert "drug_b" in page.locator("#data-result").inner_text()
