"""Rated answers with the question before them: the data behind ``chatcore feedback export``.

An answer counts as rated when it has a thumbs up (1) or down (-1), or a comment; a rating of 0
is a cleared thumb. Only the owner's live conversations are read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from storage.store import Store


def rated_exchanges(store: Store, owner: str) -> Iterator[dict[str, Any]]:
    """One dict per rated answer, oldest first.

    Keys: ``prompt`` (the last user message before the answer, ``None`` if there is none),
    ``answer``, ``rating``, ``comment``, ``settings`` (``model`` and ``params``, the seed
    included), ``conversation_id``, ``message_id`` and ``created`` (the answer's).
    """
    cursor = store.db.conn.execute(
        "SELECT a.id, a.conversation_id, a.content, a.rating, a.rating_comment, a.created,"
        " coalesce(a.model, c.model), coalesce(a.params, c.params),"
        " (SELECT u.content FROM messages u WHERE u.conversation_id = a.conversation_id"
        "  AND u.role = 'user' AND u.position < a.position ORDER BY u.position DESC LIMIT 1)"
        " FROM messages a JOIN conversations c ON c.id = a.conversation_id"
        " WHERE c.owner = ? AND c.deleted_at IS NULL AND a.role = 'assistant'"
        " AND (a.rating IN (-1, 1) OR coalesce(a.rating_comment, '') != '')"
        " ORDER BY a.created, a.id",
        (owner,),
    )
    for message_id, conversation_id, answer, rating, comment, created, model, params, prompt in cursor:
        yield {
            "prompt": prompt,
            "answer": answer,
            "rating": rating,
            "comment": comment,
            "settings": {"model": model, "params": None if params is None else json.loads(params)},
            "conversation_id": conversation_id,
            "message_id": message_id,
            "created": created,
        }
