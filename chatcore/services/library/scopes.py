"""Checking which documents a question is answered from, before any model work."""

from __future__ import annotations

from typing import Any

from chatcore.core.errors import ChatCoreError
from chatcore.services.library.retrieval import Scope


class EmptyScope(ChatCoreError):
    """The scope names real collections or documents, but none of them is indexed yet."""


def check_scope(library: Any, owner: str, scope: Scope) -> list[dict[str, Any]]:
    """The owner's indexed documents in ``scope``.

    An unknown collection name, or a document id that is missing or another owner's (alike), is
    ``NotFound``; a scope with nothing indexed in it is :class:`EmptyScope`.
    """
    library.retriever.resolve(owner, scope)
    for document_id in scope.documents or ():
        library.document(owner, document_id)
    ready = [d for d in library.documents(owner) if d["status"] == "ready"
             and (scope.collections is None or d["collection"] in scope.collections)
             and (scope.documents is None or d["id"] in scope.documents)]
    if not ready:
        raise EmptyScope(f"{scope.describe()} has no indexed documents yet")
    return ready
