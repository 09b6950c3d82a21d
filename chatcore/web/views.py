"""How the page shows things, as plain strings: stats under answers, context and status lines, labels.

Pure functions over plain data (no gradio, no store), so they are tested alone and shared by the
``Workspace`` and the tab handlers. Icons are never emoji: they are drawn by CSS (``style.py``), so they
show on machines with no emoji font (headless Chromium, many Linux desktops).
"""

from __future__ import annotations

import html
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
