"""User accounts and API keys: slow password hashes, hashed keys, and who a request runs as.

ChatCore is single-user by default: everything belongs to the owner ``local``. Adding an account
(``chatcore users add NAME``) turns on logins for the web app; each account's conversations, notes
and feedback are saved under its name and reachable only by it. API keys are issued per account;
the database keeps only their SHA-256 (a key is 256 random bits, so a fast hash is enough), and a
password only as a salted scrypt hash.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from typing import Any

from chatcore.core.errors import ChatCoreError
from storage import LOCAL_OWNER, Store
from storage import users as rows

# scrypt's cost: 16 MiB and ~50 ms per check, OWASP's recommended minimum. Stored with each hash, so
# raising it later keeps old hashes valid.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SALT_BYTES = 16
KEY_PREFIX = "cc-"  # recognisable in configs and secret scanners
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MIN_PASSWORD_CHARS = 8


class AccountError(ChatCoreError):
    """A user name or password was refused, or the account does not exist."""


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$salt$hash``, salt and hash in base64."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return "$".join(["scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), _b64(salt), _b64(digest)])


def verify_password(password: str, stored: str | None) -> bool:
    """Whether ``password`` matches ``stored``; takes as long for a missing or malformed hash."""
    try:
        kind, n, r, p, salt, digest = (stored or "").split("$")
        if kind != "scrypt":
            raise ValueError(kind)
        params, salt_bytes, expected = (int(n), int(r), int(p)), base64.b64decode(salt), base64.b64decode(digest)
    except ValueError:
        params, salt_bytes, expected = (SCRYPT_N, SCRYPT_R, SCRYPT_P), b"\0" * SALT_BYTES, b""
    try:
        actual = _scrypt(password, salt_bytes, *params)
    except ValueError:  # parameters scrypt refuses: a damaged hash
        _scrypt(password, b"\0" * SALT_BYTES, SCRYPT_N, SCRYPT_R, SCRYPT_P)
        return False
    return hmac.compare_digest(actual, expected) and bool(expected)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=128 * r * n * 2, dklen=32)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise AccountError(
            f"a user name is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit; got {name!r}"
        )
    if name == LOCAL_OWNER:
        raise AccountError(f"{LOCAL_OWNER!r} is the single-user owner and cannot log in; choose another name")
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_CHARS:
        raise AccountError(f"a password needs at least {MIN_PASSWORD_CHARS} characters")
    return password


class Accounts:
    """Accounts and keys over a :class:`Store`; every method is safe from any thread."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def add(self, name: str, password: str) -> None:
        from storage.errors import InvalidValue

        try:
            rows.add_user(self.store, check_name(name), hash_password(check_password(password)))
        except InvalidValue as exc:
            raise AccountError(str(exc)) from exc

    def set_password(self, name: str, password: str) -> None:
        from storage.errors import NotFound

        try:
            rows.set_password_hash(self.store, name, hash_password(check_password(password)))
        except NotFound as exc:
            raise AccountError(str(exc)) from exc

    def authenticate(self, name: str, password: str) -> bool:
        """Whether the name and password match an account (the shape Gradio's ``auth=`` takes)."""
        if not isinstance(name, str) or not isinstance(password, str):
            return False
        return verify_password(password, rows.password_hash(self.store, name))

    def list(self) -> list[dict[str, Any]]:
        return rows.list_users(self.store)

    @property
    def enabled(self) -> bool:
        """Whether anyone has an account or key: then nobody is let in without one."""
        return rows.has_accounts(self.store)

    def issue_key(self, name: str) -> str:
        """A new API key for account ``name`` (or ``local``), shown once: only its hash is kept."""
        from storage.errors import NotFound

        key = KEY_PREFIX + secrets.token_urlsafe(32)
        try:
            rows.add_api_key(self.store, name, hash_key(key), key[: len(KEY_PREFIX) + 6])
        except NotFound as exc:
            raise AccountError(str(exc)) from exc
        return key

    def revoke_keys(self, name: str) -> int:
        return rows.revoke_api_keys(self.store, name)

    def owner_for_key(self, key: str) -> str | None:
        """The account a key belongs to, or ``None`` for an unknown key."""
        if not isinstance(key, str) or not key.startswith(KEY_PREFIX):
            return None
        # A lookup by the hash of a 256-bit secret leaks nothing useful through its timing.
        return rows.owner_of_key(self.store, hash_key(key))
