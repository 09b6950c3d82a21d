"""User accounts and API keys: rows only. Hashing and policy live in ``chatcore.services.accounts``.

Plain functions over a :class:`~storage.store.Store`, so every call uses the calling thread's
connection. Nothing here ever sees a password or a key, only their hashes.
"""

from __future__ import annotations

from typing import Any

from storage.db import immediate
from storage.errors import InvalidValue, NotFound
from storage.store import LOCAL_OWNER, Store
from storage.transfer import utc_now


def add_user(store: Store, name: str, password_hash: str) -> None:
    """Create an account; an existing name (other than the password-less ``local``) is refused."""
    now = utc_now()
    with immediate(store.db) as db:
        row = db.conn.execute("SELECT password_hash FROM users WHERE name = ?", (name,)).fetchone()
        if row is not None and row[0] is not None:
            raise InvalidValue(f"A user named {name!r} already exists.")
        if row is None:
            db.execute("INSERT INTO users (name, password_hash, created) VALUES (?, ?, ?)",
                       (name, password_hash, now))
        else:
            # The row exists because conversations were saved under this name before it had a password.
            db.execute("UPDATE users SET password_hash = ? WHERE name = ?", (password_hash, name))


def set_password_hash(store: Store, name: str, password_hash: str) -> None:
    cursor = store.db.execute(
        "UPDATE users SET password_hash = ? WHERE name = ? AND password_hash IS NOT NULL",
        (password_hash, name),
    )
    if cursor.rowcount == 0:
        raise NotFound(f"No user {name!r}.")


def password_hash(store: Store, name: str) -> str | None:
    """The stored hash of an account's password; ``None`` for no such account."""
    row = store.db.conn.execute("SELECT password_hash FROM users WHERE name = ?", (name,)).fetchone()
    return row[0] if row else None


def list_users(store: Store) -> list[dict[str, Any]]:
    """Accounts (users with a password), by name, with how many API keys each has."""
    return store.rows(
        "SELECT u.name, u.created, (SELECT count(*) FROM api_keys k WHERE k.owner = u.name) AS api_keys"
        " FROM users u WHERE u.password_hash IS NOT NULL ORDER BY u.name"
    )


def set_default_model(store: Store, name: str, spec: str | None) -> None:
    """Remember the model spec ``name`` chose last (``None``: the server's default)."""
    with immediate(store.db) as db:
        store.ensure_user(name, utc_now())  # the single local user has no row until something is saved
        db.execute("UPDATE users SET default_model = ? WHERE name = ?", (spec, name))


def default_model(store: Store, name: str) -> str | None:
    """The model spec ``name`` chose last, or ``None``."""
    row = store.db.conn.execute("SELECT default_model FROM users WHERE name = ?", (name,)).fetchone()
    return row[0] if row else None


def has_accounts(store: Store) -> bool:
    """Whether anyone has an account, or an API key (the ``local`` owner may have keys too)."""
    return store.db.conn.execute(
        "SELECT EXISTS (SELECT 1 FROM users WHERE password_hash IS NOT NULL)"
        " OR EXISTS (SELECT 1 FROM api_keys)"
    ).fetchone()[0] == 1


def add_api_key(store: Store, owner: str, key_hash: str, prefix: str) -> None:
    """Record a key for an existing account (or for ``local``)."""
    now = utc_now()
    with immediate(store.db) as db:
        if owner == LOCAL_OWNER:
            store.ensure_user(owner, now)
        elif password_hash(store, owner) is None:
            raise NotFound(f"No user {owner!r}.")
        db.execute(
            "INSERT INTO api_keys (owner, key_hash, prefix, created) VALUES (?, ?, ?, ?)",
            (owner, key_hash, prefix, now),
        )


def owner_of_key(store: Store, key_hash: str) -> str | None:
    """The owner of the key with this hash, or ``None``; marks the key used."""
    row = store.db.conn.execute("SELECT id, owner FROM api_keys WHERE key_hash = ?", (key_hash,)).fetchone()
    if row is None:
        return None
    store.db.execute("UPDATE api_keys SET last_used = ? WHERE id = ?", (utc_now(), row[0]))
    return row[1]


def list_api_keys(store: Store, owner: str) -> list[dict[str, Any]]:
    return store.rows(
        "SELECT id, prefix, created, last_used FROM api_keys WHERE owner = ? ORDER BY id", (owner,)
    )


def revoke_api_keys(store: Store, owner: str) -> int:
    """Delete every key of ``owner``; returns how many."""
    return store.db.execute("DELETE FROM api_keys WHERE owner = ?", (owner,)).rowcount
