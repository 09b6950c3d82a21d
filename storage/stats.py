"""Numbers for the Stats view: lists of flat dicts, one per point, ready for ``pandas.DataFrame``.

Only the owner's live conversations count. Days are calendar days at ``utc_offset_minutes``
from UTC (0: UTC days; the UI passes the browser's offset to get the user's days).
"""

from __future__ import annotations

import statistics
from typing import Any

from storage.errors import InvalidValue
from storage.store import Store


def messages_per_day(store: Store, owner: str, *, utc_offset_minutes: int = 0) -> list[dict[str, Any]]:
    """``{"day": "2026-05-09", "role": "user", "messages": 3}`` per day and role, by day then role."""
    return store.rows(
        "SELECT date(m.created, ?) AS day, m.role, count(*) AS messages"
        " FROM messages m JOIN conversations c ON c.id = m.conversation_id"
        " WHERE c.owner = ? AND c.deleted_at IS NULL GROUP BY day, m.role ORDER BY day, m.role",
        (_offset(utc_offset_minutes), owner),
    )


def ratings_per_day(store: Store, owner: str, *, utc_offset_minutes: int = 0) -> list[dict[str, Any]]:
    """``{"day": ..., "up": 2, "down": 1}`` for each day an answer was created that is rated now.

    Ratings carry no time of their own, so they are dated by their answer.
    """
    return store.rows(
        "SELECT date(m.created, ?) AS day, sum(m.rating = 1) AS up, sum(m.rating = -1) AS down"
        " FROM messages m JOIN conversations c ON c.id = m.conversation_id"
        " WHERE c.owner = ? AND c.deleted_at IS NULL AND m.rating IN (-1, 1)"
        " GROUP BY day ORDER BY day",
        (_offset(utc_offset_minutes), owner),
    )


def speed_by_model(store: Store, owner: str) -> list[dict[str, Any]]:
    """``{"model", "answers", "mean_tokens_per_s", "median_tokens_per_s"}`` per model, by name.

    Only answers with a measured decoding speed count.
    """
    speeds: dict[str, list[float]] = {}
    cursor = store.db.conn.execute(
        "SELECT coalesce(m.model, c.model, 'unknown'), m.tokens_per_s"
        " FROM messages m JOIN conversations c ON c.id = m.conversation_id"
        " WHERE c.owner = ? AND c.deleted_at IS NULL AND m.role = 'assistant'"
        " AND m.tokens_per_s IS NOT NULL",
        (owner,),
    )
    for model, speed in cursor:
        speeds.setdefault(model, []).append(speed)
    return [
        {
            "model": model,
            "answers": len(values),
            "mean_tokens_per_s": statistics.fmean(values),
            "median_tokens_per_s": statistics.median(values),
        }
        for model, values in sorted(speeds.items())
    ]


def _offset(minutes: int) -> str:
    if not isinstance(minutes, int) or isinstance(minutes, bool) or not -24 * 60 < minutes < 24 * 60:
        raise InvalidValue(f"A UTC offset must be whole minutes within a day, not {minutes!r}.")
    return f"{minutes:+d} minutes"
