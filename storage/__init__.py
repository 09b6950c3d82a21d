"""ChatCore's storage layer: conversations and messages in SQLite, searchable and exportable.

Never imports ``chatcore`` (lower layers do not import upper ones), torch or the UI.

    from storage import Store
    store = Store(settings.db_path)
    conversation_id = store.create_conversation("local", model="smollm2-135m-instruct")
"""

from storage.db import open_database
from storage.errors import ImportValidationError, InvalidValue, NotFound, StorageError
from storage.migrations import migrations
from storage.store import (
    HIGHLIGHT_END,
    HIGHLIGHT_START,
    LOCAL_OWNER,
    Store,
    fts_query,
    render_snippet,
)
from storage.transfer import EXPORT_FORMAT, EXPORT_VERSION, MAX_IMPORT_BYTES

__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "HIGHLIGHT_END",
    "HIGHLIGHT_START",
    "LOCAL_OWNER",
    "MAX_IMPORT_BYTES",
    "ImportValidationError",
    "InvalidValue",
    "NotFound",
    "StorageError",
    "Store",
    "fts_query",
    "migrations",
    "open_database",
    "render_snippet",
]
