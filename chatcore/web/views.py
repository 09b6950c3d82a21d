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
