"""Accounts and API keys: slow salted password hashes, hashed keys, the ``chatcore users`` commands."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from chatcore.cli import main
from chatcore.core.settings import Settings
from chatcore.services.accounts import (
    AccountError,
    Accounts,
    hash_key,
    hash_password,
    verify_password,
)
from storage import Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store(tmp_path / "chatcore.db") as store:
        yield store


@pytest.fixture
def accounts(store: Store) -> Accounts:
    return Accounts(store)


def test_password_hashes_are_salted_scrypt_and_verify() -> None:
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first != second  # a random salt each time
    assert first.startswith("scrypt$16384$8$1$")
    assert verify_password("correct horse", first) and verify_password("correct horse", second)
    assert not verify_password("correct horsE", first)
    for broken in (None, "", "md5$x", "scrypt$1$2$3$$", "scrypt$16384$8$1$!!$??"):
        assert not verify_password("correct horse", broken)


def test_accounts_add_authenticate_and_list(accounts: Accounts, store: Store) -> None:
    assert accounts.list() == [] and not accounts.enabled
    accounts.add("ada", "analytical")
    assert accounts.enabled
    assert accounts.authenticate("ada", "analytical")
    assert not accounts.authenticate("ada", "wrong-password")
    assert not accounts.authenticate("nobody", "analytical")
    assert not accounts.authenticate("local", "")
    stored = store.db.conn.execute("SELECT password_hash FROM users WHERE name = 'ada'").fetchone()[0]
    assert "analytical" not in stored and stored.startswith("scrypt$")
    accounts.set_password("ada", "engine-two")
    assert accounts.authenticate("ada", "engine-two") and not accounts.authenticate("ada", "analytical")
    assert [(u["name"], u["api_keys"]) for u in accounts.list()] == [("ada", 0)]


def test_a_name_used_by_saved_conversations_can_become_an_account(accounts: Accounts, store: Store) -> None:
    conversation_id = store.create_conversation("grace", title="before accounts")
    accounts.add("grace", "compilers")
    assert accounts.authenticate("grace", "compilers")
    assert store.get_conversation("grace", conversation_id)["title"] == "before accounts"


@pytest.mark.parametrize(("name", "password", "message"), [
    ("local", "long enough", "single-user owner"),
    ("", "long enough", "a user name is"),
    ("has space", "long enough", "a user name is"),
    ("-dash", "long enough", "a user name is"),
    ("x" * 65, "long enough", "a user name is"),
    ("ada", "short", "at least 8 characters"),
])
def test_bad_names_and_passwords_are_refused(accounts: Accounts, name: str, password: str, message: str) -> None:
    with pytest.raises(AccountError, match=message):
        accounts.add(name, password)
    assert accounts.list() == []


def test_a_duplicate_account_is_refused(accounts: Accounts) -> None:
    accounts.add("ada", "analytical")
    with pytest.raises(AccountError, match="already exists"):
        accounts.add("ada", "another-one")
    assert accounts.authenticate("ada", "analytical")


def test_api_keys_are_stored_only_as_a_hash(accounts: Accounts, store: Store) -> None:
    accounts.add("ada", "analytical")
    key = accounts.issue_key("ada")
    other = accounts.issue_key("ada")
    assert key.startswith("cc-") and len(key) > 40 and key != other
    assert accounts.owner_for_key(key) == accounts.owner_for_key(other) == "ada"
    assert accounts.owner_for_key(key + "x") is None
    assert accounts.owner_for_key("not-a-key") is None
    rows = store.db.conn.execute("SELECT key_hash, prefix, last_used FROM api_keys ORDER BY id").fetchall()
    dump = "\n".join(store.db.conn.iterdump())
    assert key not in dump and other not in dump
    assert rows[0][0] == hash_key(key) == hashlib.sha256(key.encode()).hexdigest()
    assert key.startswith(rows[0][1]) and rows[0][2] is not None  # last_used is set on use
    assert accounts.list()[0]["api_keys"] == 2
    assert accounts.revoke_keys("ada") == 2
    assert accounts.owner_for_key(key) is None


def test_keys_only_for_existing_accounts_or_local(accounts: Accounts) -> None:
    with pytest.raises(AccountError, match="No user 'nobody'"):
        accounts.issue_key("nobody")
    key = accounts.issue_key("local")
    assert accounts.owner_for_key(key) == "local"
    assert accounts.enabled  # a key exists: the API now needs one


# -- the command line -------------------------------------------------------------------------------


def _run(*args: str, input: str | None = None):
    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


def _store() -> Store:
    return Store(Settings().db_path)


def test_users_add_prompts_twice_for_a_hidden_password() -> None:
    result = _run("users", "add", "ada", input="analytical\nanalytical\n")
    assert result.exit_code == 0, result.output
    assert "Added user ada." in result.output
    assert "analytical" not in result.output  # hidden input is never echoed
    assert Accounts(_store()).authenticate("ada", "analytical")


def test_users_add_refuses_a_mismatched_confirmation_and_bad_input() -> None:
    result = _run("users", "add", "ada", input="analytical\nanalytic4l\nanalytical\nanalytical\n")
    assert "do not match" in result.output.lower() or "don't match" in result.output.lower()
    assert result.exit_code == 0 and Accounts(_store()).authenticate("ada", "analytical")
    again = _run("users", "add", "ada", "--password", "whatever-else")
    assert again.exit_code == 1 and "already exists" in again.output
    bad = _run("users", "add", "has space")
    assert bad.exit_code == 2 and "a user name is" in bad.output
    short = _run("users", "add", "bob", "--password", "short")
    assert short.exit_code == 1 and "at least 8 characters" in short.output


def test_users_list_and_key() -> None:
    assert _run("users", "list").output == "No user accounts: ChatCore is in single-user mode.\n"
    _run("users", "add", "ada", "--password", "analytical")
    result = _run("users", "key", "ada")
    assert result.exit_code == 0
    key = result.stdout.strip()
    assert Accounts(_store()).owner_for_key(key) == "ada"
    listed = _run("users", "list").output.splitlines()
    assert listed[0].split() == ["NAME", "KEYS", "CREATED"]
    assert listed[1].split()[:2] == ["ada", "1"]
    assert '"name": "ada"' in _run("users", "list", "--json").output
    missing = _run("users", "key", "nobody")
    assert missing.exit_code == 1 and "No user 'nobody'" in missing.output
    assert _run("users", "key", "ada", "--revoke").output == "Revoked 1 key of ada.\n"
    assert Accounts(_store()).owner_for_key(key) is None
