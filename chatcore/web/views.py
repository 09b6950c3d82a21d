"""How the page shows things, as plain strings: stats under answers, context and status lines, labels.

Pure functions over plain data (no gradio, no store), so they are tested alone and shared by the
``Workspace`` and the tab handlers. Icons are never emoji: they are drawn by CSS (``style.py``), so they
show on machines with no emoji font (headless Chromium, many Linux desktops).
"""

from __future__ import annotations

import html
import math
import re
from pathlib import Path
from typing import Any

# Search hits mark matches with these in plain-text labels (radio labels are never HTML).
MATCH_OPEN, MATCH_CLOSE = "«", "»"
BRANCH_PREFIX = "Branch: "
FINISH_WORDS = {"stop": "", "length": "hit the token limit", "cancelled": "stopped", "error": "error"}
RATINGS = {1: "Like", -1: "Dislike"}


def model_label(model: str) -> str:
    """A model as shown under answers, on notes and in the stats: the last part of a path or Hugging Face id."""
    return Path(model).name if "/" in model else model


def stats_line(message: dict[str, Any]) -> str:
    """``model · 42 tokens · first token 120 ms · 31.5 tok/s · seed 7``: the facts under an answer."""
    parts = []
    if message.get("model"):
        parts.append(model_label(message["model"]))
    if message.get("completion_tokens") is not None:
        parts.append(f"{message['completion_tokens']:,} tokens")
    if message.get("ttft_ms") is not None:
        parts.append(f"first token {message['ttft_ms']:,.0f} ms")
    if message.get("tokens_per_s") is not None:
        parts.append(f"{message['tokens_per_s']:.1f} tok/s")
    seed = (message.get("params") or {}).get("seed")
    if seed is not None:
        parts.append(f"seed {seed}")
    reason = FINISH_WORDS.get(message.get("finish_reason") or "", "")
    if reason:
        parts.append(reason)
    elif message.get("finish_reason") is None and not message.get("complete", True):
        parts.append("interrupted")
    return " · ".join(parts)


def answer_markdown(content: str, stats: str) -> str:
    """An answer for display: any code fence left open by a stopped answer closed, then its stats line."""
    if content.count("```") % 2:
        content += "\n```"
    if not stats:
        return content
    # The stats are our own text, escaped so that a model name cannot inject markup.
    return f"{content}\n\n<sub>{html.escape(stats)}</sub>"


def context_markdown(used: int | None, window: int | None, dropped: int = 0) -> str:
    """``Context: 1,234 / 8,192 tokens (15%)`` plus a notice when old turns were left out."""
    if not used or not window:
        return ""
    line = f"Context: {used:,} / {window:,} tokens ({100 * used / window:.0f}%)"
    if dropped:
        line += (f" — warning: the {dropped} oldest message{'s' if dropped != 1 else ''} did not fit the model's "
                 "window and were left out of this answer")
    return line


def conversation_label(title: str | None, parent: int | None = None) -> str:
    """A conversation's title on one line, branches marked ``Branch: ``."""
    title = " ".join((title or "Untitled").split())
    return f"{BRANCH_PREFIX}{title}" if parent else title


def match_label(snippet: str) -> str:
    """A search snippet on one line, its matches between « and »."""
    from storage import HIGHLIGHT_END, HIGHLIGHT_START

    text = " ".join(snippet.split())
    return text.replace(HIGHLIGHT_START, MATCH_OPEN).replace(HIGHLIGHT_END, MATCH_CLOSE)


def pinned_line(count: int, tokens: int | None) -> str:
    """``2 notes pinned · 310 tokens of context`` (the tokens when known), or ``""`` with none pinned."""
    if not count:
        return ""
    line = f"{count} note{'s' if count != 1 else ''} pinned"
    return line if tokens is None else f"{line} · {tokens:,} tokens of context"


def note_meta(note: dict[str, Any], conversation_id: int | None) -> str:
    """Where a note came from and where it is pinned, as plain text."""
    parts = [f"Note {note['id']}", f"updated {note['updated'][:16].replace('T', ' ')}"]
    if note.get("model"):
        parts.append(f"from {model_label(note['model'])}")
    if note["source_message_id"] is not None and not note["source_available"]:
        parts.append("its conversation is gone")
    pinned = note.get("pinned_to") or []
    if conversation_id in pinned:
        parts.append("pinned to the open chat")
    elif pinned:
        parts.append(f"pinned to {len(pinned)} chat{'s' if len(pinned) != 1 else ''}")
    return " · ".join(parts)


def status_markdown(status: str, loading: bool) -> str:
    """The model status line: a CSS-drawn dot (no emoji font needed) and the status as plain text."""
    state = "loading" if loading else ("ready" if status.startswith("ready") else "failed")
    return f'<span class="status-dot {state}"></span> {plain(status)}'


def plain(text: str) -> str:
    """Text shown inside Markdown exactly as written: no markup, no HTML."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|~>])", r"\\\1", html.escape(text, quote=False))


def preview(text: str, limit: int = 80) -> str:
    """``text`` on one line, cut at ``limit`` characters with an ellipsis."""
    line = " ".join(text.split())
    return line[:limit] + ("…" if len(line) > limit else "")


def text_of(content: Any) -> str:
    """The text of a chat message's content, which Gradio may hand over as a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text", ""))
    if isinstance(content, (list, tuple)):
        return "".join(text_of(part) for part in content)
    return str(content)


# -- the library -------------------------------------------------------------------------------------

SOURCES_OFF, SOURCES_ALL, COLLECTION_PREFIX = "off", "all", "collection:"
DOCUMENT_HEADERS = ["Title", "File", "Collection", "Pages", "Chunks", "Status", "Warnings / error"]


def source_choices(collections: list[str]) -> list[tuple[str, str]]:
    """The Sources picker: (label, value) for Off, the whole library and each collection."""
    return [("Off", SOURCES_OFF), ("Whole library", SOURCES_ALL),
            *((f"Collection: {name}", COLLECTION_PREFIX + name) for name in collections)]


def source_value(scope: Any) -> str:
    """The picker value for a saved scope (a ``Scope`` or ``None``); chosen documents show as the whole library."""
    if scope is None:
        return SOURCES_OFF
    if scope.collections is not None and len(scope.collections) == 1:
        return COLLECTION_PREFIX + scope.collections[0]
    return SOURCES_ALL


def mark(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` as HTML, every character escaped, the ``(start, end)`` spans wrapped in ``<mark>``."""
    out, at = [], 0
    for start, end in sorted(spans):
        start, end = max(start, at), min(end, len(text))
        if start >= end:
            continue
        out += [html.escape(text[at:start]), "<mark>", html.escape(text[start:end]), "</mark>"]
        at = end
    out.append(html.escape(text[at:]))
    return "".join(out)


def progress_html(fraction: float, line: str, status: str = "running") -> str:
    """A job as a progress bar with its line under it (``status`` colours it: running, done, cancelled, failed)."""
    percent = max(0.0, min(1.0, fraction)) * 100
    return (f'<div class="library-progress {html.escape(status)}" role="progressbar" aria-valuemin="0" '
            f'aria-valuemax="100" aria-valuenow="{percent:.0f}">'
            f'<div class="bar"><div class="fill" style="width:{percent:.1f}%"></div></div>'
            f'<div class="line">{html.escape(line)} ({percent:.0f}%)</div></div>')


def document_row(document: dict[str, Any]) -> list[Any]:
    """A document as a row of the documents table (``DOCUMENT_HEADERS``)."""
    notes = document.get("error") or "; ".join(document.get("warnings") or [])
    status = document["status"]
    if status == "indexing" and document.get("pages"):
        status = f"indexing ({document.get('progress') or 0} of {document['pages']} pages)"
    return [document.get("title") or "", document["filename"], document.get("collection") or "",
            document.get("pages") or 0, document.get("chunks") or 0, status, notes]


def refused_markdown(outcomes: list[Any]) -> str:
    """What happened to the files of an add: how many were queued, and each refused one with its reason."""
    queued = [o for o in outcomes if o.status in ("added", "requeued")]
    unchanged = [o for o in outcomes if o.status == "unchanged"]
    refused = [o for o in outcomes if o.status == "refused"]
    parts = [f"{len(queued)} file{'s' if len(queued) != 1 else ''} queued for indexing."]
    if unchanged:
        parts.append("Already in the library: " + ", ".join(plain(o.filename) for o in unchanged) + ".")
    lines = [" ".join(parts)]
    if refused:
        lines.append("**Refused:**")
        lines += [f"- {plain(o.filename)}: {plain(o.message)}" for o in refused]
    return "\n".join(lines)


def source_label(source: dict[str, Any]) -> str:
    """``[2] paper.pdf, page 4``: a source as the picker lists it (plain text)."""
    return f"[{source['n']}] {source['filename']}, page {source['page']}"


def source_state(source: dict[str, Any]) -> str:
    """``cited · verified``, ``cited · unverified (reason)`` or ``not cited``."""
    if not source.get("cited"):
        return "not cited"
    if source.get("kind") == "matched":  # the model cited nothing; ChatCore found the answer's words here
        return "matched in the answer (not cited by the model)"
    if source.get("verified"):
        return "cited · verified"
    reason = source.get("reason")
    return f"cited · unverified ({reason})" if reason else "cited · unverified"


def chat_plain(text: str) -> str:
    """:func:`plain` for the chat, whose LaTeX delimiters include ``\\[``, ``\\(`` and ``$``: those become entities."""
    escaped = plain(text)
    for code, entity in (("\\[", "&#91;"), ("\\]", "&#93;"), ("\\(", "&#40;"), ("\\)", "&#41;"), ("$", "&#36;")):
        escaped = escaped.replace(code, entity)
    return escaped


def sources_markdown(sources: list[dict[str, Any]]) -> str:
    """The sources under a grounded answer: one line each, ``[n] file, page p · cited · verified``."""
    if not sources:
        return ""
    lines = [f"- {chat_plain(source_label(s))} · {chat_plain(source_state(s))}" for s in sources]
    return "<sub>Sources</sub>\n\n" + "\n".join(lines)


def passages_html(items: list[tuple[int, str, int, str, list[tuple[int, int]]]], empty: str) -> str:
    """Ranked passages as HTML: ``(n, file, page, text, highlights)`` each, their best sentences marked."""
    if not items:
        return f'<div class="empty-state">{html.escape(empty)}</div>'
    blocks = []
    for n, filename, page, text, highlights in items:
        blocks.append(f'<div class="passage"><div class="where">[{n}] {html.escape(filename)}, page {page}</div>'
                      f'<div class="text">{mark(text, highlights)}</div></div>')
    return '<div class="passages">' + "".join(blocks) + "</div>"


def page_html(text: str, start: int, end: int, where: str) -> str:
    """A page's text with the cited passage marked (scrolled into view by its id), all of it escaped."""
    body = mark(text, [(start, end)]).replace("<mark>", '<mark id="cited-passage">', 1)
    return f'<div class="where">{html.escape(where)}</div><div class="source-page">{body}</div>'


def grounding_line(count: int, scope: Any) -> str:
    """``Answered from 3 passages of the whole library``, or that none matched (plain text)."""
    where = scope.describe()
    if not count:
        return f"no passage of {where} matched: answered without sources"
    return f"answered from {count} passage{'s' if count != 1 else ''} of {where}"


# -- evaluation and the arena ------------------------------------------------------------------------

TEST_SET_HEADERS = ["Id", "Question", "Accepted answers", "Choices", "Tags"]
RESULT_HEADERS = ["Model", "Accuracy", "95% interval", "n", "Mean value", "Errors"]
LEADERBOARD_HEADERS = ["Model", "Score", "95% interval", "Votes", "Wins"]
PREVIEW_ITEMS = 10
# Run statuses as the progress bar colours them (its classes: running, done, cancelled, failed).
RUN_BAR = {"running": "running", "finished": "done", "cancelled": "cancelled", "interrupted": "cancelled",
           "failed": "failed"}


def choice_letter(index: int) -> str:
    return chr(ord("A") + index)


def accepted_answers(item: dict[str, Any]) -> str:
    """An item's accepted answers on one line: the right choice (``B. newton``) or the answers joined by ``|``."""
    choices, gold = item.get("choices") or [], item.get("gold")
    if choices and gold is not None and 0 <= gold < len(choices):
        return f"{choice_letter(gold)}. {choices[gold]}"
    return " | ".join(item.get("answers") or [])


def item_question(item: dict[str, Any]) -> str:
    """The last user message of a stored item: what it asks."""
    messages = item.get("messages") or []
    return next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")


def test_set_rows(items: list[dict[str, Any]], limit: int = PREVIEW_ITEMS) -> list[list[str]]:
    """The first ``limit`` items of a test set as rows of the preview (``TEST_SET_HEADERS``)."""
    rows = []
    for item in items[:limit]:
        choices = item.get("choices") or []
        rows.append([str(item["id"]), preview(item_question(item), 120), accepted_answers(item),
                     " · ".join(f"{choice_letter(i)}. {c}" for i, c in enumerate(choices)),
                     ", ".join(item.get("tags") or [])])
    return rows


def test_set_line(test_set: dict[str, Any], items: list[dict[str, Any]]) -> str:
    """``**science-example** · 65 items (40 multiple choice) · from science.jsonl`` (Markdown)."""
    multiple = sum(1 for item in items if item.get("choices"))
    parts = [f"**{plain(test_set['name'])}**", f"{test_set['items']} items ({multiple} multiple choice)"]
    if test_set.get("filename"):
        parts.append("from " + plain(test_set["filename"]))
    shown = min(len(items), PREVIEW_ITEMS)
    if shown < len(items):
        parts.append(f"the first {shown} below")
    return " · ".join(parts)


def run_label(run: dict[str, Any]) -> str:
    """``Run 3 · science-example · default, default@quant=none · finished 130/130 · 2025-01-02 10:11``."""
    when = (run.get("created") or "")[:16].replace("T", " ")
    return (f"Run {run['id']} · {run['test_set']} · {', '.join(run['models'])} · {run['status']} "
            f"{run['done']}/{run['total']} · {when}")


def percent(value: float) -> str:
    return f"{value:.1%}" if math.isfinite(value) else "—"


def interval_text(low: float, high: float, fmt: Any = percent) -> str:
    return f"{fmt(low)} – {fmt(high)}" if math.isfinite(low) and math.isfinite(high) else "—"


def result_rows(results: list[Any]) -> list[list[Any]]:
    """A report's ``ModelResult``s as rows of the results table (``RESULT_HEADERS``)."""
    return [[r.model, percent(r.accuracy.mean), interval_text(r.accuracy.low, r.accuracy.high), r.accuracy.n,
             f"{r.mean_value:.3f}", r.errors] for r in results]


def tag_table(results: list[Any]) -> tuple[list[str], list[list[str]]]:
    """Accuracy per tag and model: headers ``Tag, model…`` and one row per tag (``62% (54–70%, n=20)``)."""
    tags = sorted({tag for r in results for tag in r.by_tag})
    rows = []
    for tag in tags:
        cells = []
        for r in results:
            i = r.by_tag.get(tag)
            cells.append("—" if i is None or not i.n else
                         f"{i.mean:.0%} ({i.low:.0%}–{i.high:.0%}, n={i.n})")
        rows.append([tag, *cells])
    return ["Tag", *(r.model for r in results)], rows


def mcnemar_markdown(comparisons: list[Any]) -> str:
    """One line per pair of models: McNemar's counts, p and what it means at the 5% level (Markdown)."""
    lines = []
    for c in comparisons:
        t = c.test
        verdict = ("a significant difference at the 5% level" if t.p_value < 0.05
                   else "no significant difference at the 5% level")
        method = "exact binomial" if t.exact else "chi-square, continuity-corrected"
        lines.append(f"**McNemar, {plain(c.model_a)} vs {plain(c.model_b)}** on {c.items} items: "
                     f"{t.b10} right only for {plain(c.model_a)}, {t.b01} right only for {plain(c.model_b)}; "
                     f"p = {t.p_value:.3g} ({method}): {verdict}.")
    return "\n\n".join(lines)


def _verdict(row: dict[str, Any] | None, scorer: str) -> str:
    if row is None:
        return "not yet"
    if row.get("error"):
        return "error"
    score = (row.get("scores") or {}).get(scorer)
    if score is None:
        return "not scored"
    return "right" if score["correct"] else "wrong"


def _shown_output(row: dict[str, Any] | None, limit: int = 300) -> str:
    """An output as the per-item table shows it: its text, its error, or the choice its likelihoods pick."""
    if row is None:
        return ""
    if row.get("error"):
        return "error: " + preview(row["error"], limit)
    if row.get("text") is not None:
        return preview(row["text"], limit)
    choices = row.get("choices") or []
    if choices:
        best = max(range(len(choices)), key=lambda i: choices[i]["logprob"])
        return f"picks {choice_letter(best)} by likelihood"
    return ""


def item_table(outputs: list[dict[str, Any]], models: list[str], scorer: str,
               only_disagreements: bool = False) -> tuple[list[str], list[list[str]], int]:
    """The per-item view: headers, rows (item, question, accepted, then each model's output and verdict) and
    how many items the models disagree on (one right and another wrong under ``scorer``)."""
    by_item: dict[str, dict[str, Any]] = {}
    for row in outputs:
        by_item.setdefault(row["key"], {"item": row["item"], "models": {}})["models"][row["model"]] = row
    headers = ["Item", "Question", "Accepted"]
    for model in models:
        headers += [f"{model}: output", f"{model}: verdict"]
    rows, disagreements = [], 0
    for key, entry in by_item.items():
        verdicts = [_verdict(entry["models"].get(model), scorer) for model in models]
        differ = {"right", "wrong"} <= set(verdicts)
        disagreements += differ
        if only_disagreements and not differ:
            continue
        row = [key, preview(item_question(entry["item"]), 160), accepted_answers(entry["item"])]
        for model, verdict in zip(models, verdicts):
            row += [_shown_output(entry["models"].get(model)), verdict]
        rows.append(row)
    return headers, rows, disagreements


def leaderboard_rows(leaderboard: Any) -> list[list[Any]]:
    """The arena's leaderboard as table rows; scores and intervals only once there are enough votes."""
    rows = []
    for r in leaderboard.rows:
        score = f"{r.score:.0f}" if leaderboard.enough else "—"
        interval = interval_text(r.low, r.high, lambda v: f"{v:.0f}") if leaderboard.enough else "—"
        rows.append([r.model, score, interval, r.votes, r.wins])
    return rows


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    step = (high - low) / (count - 1)
    return [low + i * step for i in range(count)]


def interval_chart(bars: list[tuple[str, float, float, float]], *, domain: tuple[float, float], title: str,
                   fmt: Any = percent) -> str:
    """A horizontal bar chart with 95% interval whiskers as inline SVG: ``(label, value, low, high)`` per bar.

    Drawn here because no plotting library is installed and Gradio's BarPlot has no error bars. Every label is
    escaped; the text takes the page's colour (``currentColor``), so it reads in light and dark themes.
    """
    lo, hi = domain
    label_w, plot_w, value_w, row_h, top, bottom = 230, 460, 170, 30, 30, 26
    width, height = label_w + plot_w + value_w, top + row_h * len(bars) + bottom

    def x(v: float) -> float:
        return label_w + plot_w * (min(max(v, lo), hi) - lo) / (hi - lo or 1)

    parts = [f'<svg class="interval-chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
             f'width="100%" role="img" aria-label="{html.escape(title)}" font-size="13" fill="currentColor">',
             f'<text x="{label_w}" y="18" font-weight="600">{html.escape(title)}</text>']
    axis_y = top + row_h * len(bars)
    for t in _ticks(lo, hi):
        parts.append(f'<line x1="{x(t):.1f}" y1="{top - 4}" x2="{x(t):.1f}" y2="{axis_y}" stroke="currentColor" '
                     f'stroke-opacity="0.15"/>')
        parts.append(f'<text x="{x(t):.1f}" y="{axis_y + 17}" text-anchor="middle" fill-opacity="0.7">'
                     f'{html.escape(fmt(t))}</text>')
    for i, (label, value, low, high) in enumerate(bars):
        y = top + i * row_h
        shown = label if len(label) <= 30 else label[:29] + "…"
        parts.append(f'<g class="bar"><title>{html.escape(label)}: {html.escape(fmt(value))} '
                     f'(95% interval {html.escape(interval_text(low, high, fmt))})</title>')
        parts.append(f'<text x="{label_w - 8}" y="{y + row_h / 2 + 4:.1f}" text-anchor="end">{html.escape(shown)}</text>')
        if math.isfinite(value):
            parts.append(f'<rect x="{label_w}" y="{y + 6}" width="{max(x(value) - label_w, 0):.1f}" '
                         f'height="{row_h - 12}" rx="3" fill="#60a5fa"/>')
        if math.isfinite(low) and math.isfinite(high):
            mid = y + row_h / 2
            parts.append(f'<path class="whisker" d="M{x(low):.1f} {mid:.1f}H{x(high):.1f}'
                         f'M{x(low):.1f} {mid - 7:.1f}V{mid + 7:.1f}M{x(high):.1f} {mid - 7:.1f}V{mid + 7:.1f}" '
                         f'stroke="#1e3a8a" stroke-width="2" fill="none"/>')
        parts.append(f'<text x="{label_w + plot_w + 10}" y="{y + row_h / 2 + 4:.1f}">{html.escape(fmt(value))} '
                     f'<tspan fill-opacity="0.7">({html.escape(interval_text(low, high, fmt))})</tspan></text></g>')
    parts.append(f'<line x1="{label_w}" y1="{axis_y}" x2="{label_w + plot_w}" y2="{axis_y}" stroke="currentColor" '
                 f'stroke-opacity="0.5"/></svg>')
    return "".join(parts)


def accuracy_chart(results: list[Any], scorer: str) -> str:
    """The report's accuracy per model with its bootstrap 95% interval, on a 0–100% axis."""
    bars = [(r.model, r.accuracy.mean, r.accuracy.low, r.accuracy.high) for r in results]
    return interval_chart(bars, domain=(0.0, 1.0), title=f"Accuracy ({scorer}) with 95% intervals")


def leaderboard_chart(leaderboard: Any) -> str:
    """The arena's Bradley-Terry scores with their bootstrap 95% intervals, on an axis fitted to them."""
    values = [v for r in leaderboard.rows for v in (r.score, r.low, r.high) if math.isfinite(v)]
    low, high = (min(values), max(values)) if values else (900.0, 1100.0)
    domain = (math.floor((low - 25) / 50) * 50, math.ceil((high + 25) / 50) * 50)
    bars = [(r.model, r.score, r.low, r.high) for r in leaderboard.rows]
    return interval_chart(bars, domain=domain, title="Bradley-Terry score with 95% intervals",
                          fmt=lambda v: f"{v:.0f}" if math.isfinite(v) else "—")
