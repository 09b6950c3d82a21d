"""Evaluation: test sets, runs, outputs with their reproducibility records, scores, and arena battles.

Plain functions over a :class:`~storage.store.Store`, like ``storage.library``. Parsing test sets, generating,
scoring and statistics happen above (``chatcore.services.evaluation``); this module only keeps what they produce.

Ownership: another owner's test set, run or battle id raises the same ``NotFound`` as a missing one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

from storage.db import immediate
from storage.errors import InvalidValue, NotFound
from storage.store import Store, dump_json, inserted_id, load_json
from storage.transfer import utc_now

RUN_STATUSES = ("running", "finished", "cancelled", "failed", "interrupted")
VOTES = ("a", "b", "tie", "both_bad")
TEST_SET_NAME_MAX_CHARS = 100

_SET_COLUMNS = "id, owner, name, filename, sha256, items, created"
_RUN_COLUMNS = ("r.id, r.owner, r.test_set_id, s.name AS test_set, r.models, r.scorers, r.params, r.status, r.total,"
                " r.done, r.error, r.created, r.updated, r.finished")
_BATTLE_COLUMNS = ("id, owner, prompt, model_a, model_b, answer_a, answer_b, record_a, record_b, vote, created,"
                   " voted")


def items_sha256(items: Sequence[dict[str, Any]]) -> str:
    """The hash of a test set's items as stored: the same questions give the same hash, whatever the file."""
    canonical = json.dumps(list(items), ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# -- test sets ----------------------------------------------------------------------------------------------


def add_test_set(store: Store, owner: str, name: str, items: Sequence[dict[str, Any]], *,
                 filename: str | None = None) -> dict[str, Any]:
    """Store a validated test set (each item a dict with a unique ``id``); refuses a live name already taken."""
    name = (name or "").strip()
    if not name or len(name) > TEST_SET_NAME_MAX_CHARS:
        raise InvalidValue(f"a test set's name must be 1 to {TEST_SET_NAME_MAX_CHARS} characters")
    if not items:
        raise InvalidValue("the test set has no items")
    keys = [str(item["id"]) for item in items]
    if len(set(keys)) != len(keys):
        raise InvalidValue("the test set repeats an item id")
    now = utc_now()
    with immediate(store.db):
        store.ensure_user(owner, now)
        taken = store.rows("SELECT id FROM test_sets WHERE owner = ? AND name = ? AND deleted_at IS NULL",
                           (owner, name))
        if taken:
            raise InvalidValue(f"a test set named {name!r} exists; choose another name or remove it first")
        cursor = store.db.conn.execute(
            "INSERT INTO test_sets (owner, name, filename, sha256, items, created) VALUES (?, ?, ?, ?, ?, ?)",
            (owner, name, filename, items_sha256(items), len(items), now))
        set_id = inserted_id(cursor)
        store.db.conn.executemany(
            "INSERT INTO test_items (test_set_id, position, key, item) VALUES (?, ?, ?, ?)",
            [(set_id, position, key, json.dumps(item, ensure_ascii=False, sort_keys=True))
             for position, (key, item) in enumerate(zip(keys, items))])
    return get_test_set(store, owner, set_id)


def get_test_set(store: Store, owner: str, ref: int | str) -> dict[str, Any]:
    """One of the owner's live test sets, by id or by name; ``NotFound`` for another owner's alike."""
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
        rows = store.rows(f"SELECT {_SET_COLUMNS} FROM test_sets WHERE id = ? AND owner = ? AND deleted_at IS NULL",
                          (int(ref), owner))
    else:
        rows = store.rows(f"SELECT {_SET_COLUMNS} FROM test_sets WHERE name = ? AND owner = ? AND deleted_at IS NULL",
                          (ref, owner))
    if not rows:
        raise NotFound(f"no test set {ref}")
    return rows[0]


def list_test_sets(store: Store, owner: str) -> list[dict[str, Any]]:
    """The owner's live test sets, newest first."""
    return store.rows(f"SELECT {_SET_COLUMNS} FROM test_sets WHERE owner = ? AND deleted_at IS NULL ORDER BY id DESC",
                      (owner,))


def test_items(store: Store, owner: str, test_set_id: int) -> list[dict[str, Any]]:
    """The set's items in file order: ``{"item_id", "key", **item}``."""
    get_test_set(store, owner, test_set_id)
    rows = store.rows("SELECT id, key, item FROM test_items WHERE test_set_id = ? ORDER BY position", (test_set_id,))
    return [{**json.loads(row["item"]), "item_id": row["id"], "key": row["key"]} for row in rows]


def delete_test_set(store: Store, owner: str, test_set_id: int) -> None:
    """Soft-delete a set: its runs keep their items, and the name is free again."""
    get_test_set(store, owner, test_set_id)
    store.db.conn.execute("UPDATE test_sets SET deleted_at = ? WHERE id = ?", (utc_now(), test_set_id))


def restore_test_set(store: Store, owner: str, test_set_id: int) -> None:
    """Undo a delete, unless another live set took the name meanwhile."""
    rows = store.rows("SELECT name FROM test_sets WHERE id = ? AND owner = ? AND deleted_at IS NOT NULL",
                      (test_set_id, owner))
    if not rows:
        raise NotFound(f"no deleted test set {test_set_id}")
    with immediate(store.db):
        if store.rows("SELECT id FROM test_sets WHERE owner = ? AND name = ? AND deleted_at IS NULL",
                      (owner, rows[0]["name"])):
            raise InvalidValue(f"a test set named {rows[0]['name']!r} exists again; rename it first")
        store.db.conn.execute("UPDATE test_sets SET deleted_at = NULL WHERE id = ?", (test_set_id,))


# -- runs ---------------------------------------------------------------------------------------------------


def create_run(store: Store, owner: str, test_set_id: int, models: Sequence[str], scorers: Sequence[str],
               params: dict[str, Any]) -> int:
    """A running run of every item of the set on every model; returns its id."""
    if not models:
        raise InvalidValue("a run needs at least one model")
    if len(set(models)) != len(models):
        raise InvalidValue("a run names the same model twice")
    test_set = get_test_set(store, owner, test_set_id)
    now = utc_now()
    with immediate(store.db):
        cursor = store.db.conn.execute(
            "INSERT INTO eval_runs (owner, test_set_id, models, scorers, params, status, total, created, updated) "
            "VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?)",
            (owner, test_set_id, json.dumps(list(models)), json.dumps(list(scorers)), dump_json(params),
             test_set["items"] * len(models), now, now))
    return inserted_id(cursor)


def get_run(store: Store, owner: str, run_id: int) -> dict[str, Any]:
    """One of the owner's runs, JSON columns decoded; ``NotFound`` for another owner's alike."""
    rows = store.rows(f"SELECT {_RUN_COLUMNS} FROM eval_runs r JOIN test_sets s ON s.id = r.test_set_id "
                      "WHERE r.id = ? AND r.owner = ?", (run_id, owner))
    if not rows:
        raise NotFound(f"no run {run_id}")
    return _run(rows[0])


def list_runs(store: Store, owner: str, *, limit: int = 100) -> list[dict[str, Any]]:
    """The owner's runs, newest first."""
    rows = store.rows(f"SELECT {_RUN_COLUMNS} FROM eval_runs r JOIN test_sets s ON s.id = r.test_set_id "
                      "WHERE r.owner = ? ORDER BY r.id DESC LIMIT ?", (owner, limit))
    return [_run(row) for row in rows]


def update_run(store: Store, run_id: int, **fields: Any) -> None:
    """Set some of a run's ``status``, ``done``, ``error``, ``scorers`` (a list); also beats its heartbeat."""
    allowed = {"status", "done", "error", "scorers"}
    if set(fields) - allowed:
        raise InvalidValue(f"a run's fields are {sorted(allowed)}")
    if "status" in fields and fields["status"] not in RUN_STATUSES:
        raise InvalidValue(f"a run's status is one of {', '.join(RUN_STATUSES)}")
    if "scorers" in fields:
        fields["scorers"] = json.dumps(list(fields["scorers"]))
    extra = ", finished = ?" if fields.get("status") in ("finished", "cancelled", "failed") else ""
    values = (*fields.values(), utc_now(), *((utc_now(),) if extra else ()), run_id)
    assignments = "".join(f"{key} = ?, " for key in fields)
    store.db.conn.execute(f"UPDATE eval_runs SET {assignments}updated = ?{extra} WHERE id = ?", values)


def claim_run(store: Store, run_id: int, stale_before: str) -> bool:
    """Take up a run marked running or interrupted whose worker last beat before ``stale_before``.

    One conditional UPDATE: of two processes resuming at once, only one sees its row change.
    """
    cursor = store.db.conn.execute(
        "UPDATE eval_runs SET status = 'running', updated = ?, error = NULL WHERE id = ? "
        "AND status IN ('running', 'interrupted', 'cancelled', 'failed') AND updated <= ?",
        (utc_now(), run_id, stale_before))
    return cursor.rowcount == 1


def running_runs(store: Store) -> list[dict[str, Any]]:
    """Runs marked running: after a restart none of them has a worker any more."""
    rows = store.rows(f"SELECT {_RUN_COLUMNS} FROM eval_runs r JOIN test_sets s ON s.id = r.test_set_id "
                      "WHERE r.status = 'running' ORDER BY r.id")
    return [_run(row) for row in rows]


def run_items(store: Store, owner: str, run_id: int) -> list[dict[str, Any]]:
    """The items of a run's set, even if the set was deleted since (a run keeps its items)."""
    run = get_run(store, owner, run_id)
    rows = store.rows("SELECT id, key, item FROM test_items WHERE test_set_id = ? ORDER BY position",
                      (run["test_set_id"],))
    return [{**json.loads(row["item"]), "item_id": row["id"], "key": row["key"]} for row in rows]


def _run(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "models": json.loads(row["models"]), "scorers": json.loads(row["scorers"]),
            "params": load_json(row["params"]) or {}}


# -- outputs and scores -------------------------------------------------------------------------------------


def save_output(store: Store, run_id: int, item_id: int, model: str, *, text: str | None,
                choices: list[dict[str, Any]] | None, sources: list[dict[str, Any]] | None,
                record: dict[str, Any], error: str | None = None,
                scores: Sequence[tuple[str, float, bool, dict[str, Any] | None]] = ()) -> int:
    """Write one item's output on one model, whole, with its ``(scorer, value, correct, detail)`` scores, and
    count it done, in one transaction; returns the output's id.

    A second output for the same (run, item, model) is refused by the schema: a resumed run skips it.
    """
    with immediate(store.db):
        cursor = store.db.conn.execute(
            "INSERT INTO eval_outputs (run_id, item_id, model, text, choices, sources, record, error, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, item_id, model, text, None if choices is None else json.dumps(choices),
             None if sources is None else json.dumps(sources, ensure_ascii=False), dump_json(record), error,
             utc_now()))
        output_id = inserted_id(cursor)
        save_scores(store, [(output_id, *score) for score in scores])  # joins this transaction
        store.db.conn.execute("UPDATE eval_runs SET done = done + 1, updated = ? WHERE id = ?", (utc_now(), run_id))
    return output_id


def finished_pairs(store: Store, run_id: int) -> set[tuple[int, str]]:
    """(item id, model) of every output the run already has: what a resumed run skips."""
    rows = store.db.conn.execute("SELECT item_id, model FROM eval_outputs WHERE run_id = ?", (run_id,)).fetchall()
    return {(item_id, model) for item_id, model in rows}


def outputs(store: Store, owner: str, run_id: int) -> list[dict[str, Any]]:
    """Every output of the owner's run with its item and its scores (``{scorer: {value, correct, detail}}``)."""
    get_run(store, owner, run_id)
    rows = store.rows(
        "SELECT o.id, o.item_id, i.key, i.position, i.item, o.model, o.text, o.choices, o.sources, o.record,"
        " o.error, o.created FROM eval_outputs o JOIN test_items i ON i.id = o.item_id WHERE o.run_id = ?"
        " ORDER BY i.position, o.id", (run_id,))
    scores: dict[int, dict[str, Any]] = {}
    for output_id, scorer, value, correct, detail in store.db.conn.execute(
            "SELECT s.output_id, s.scorer, s.value, s.correct, s.detail FROM eval_scores s"
            " JOIN eval_outputs o ON o.id = s.output_id WHERE o.run_id = ?", (run_id,)):
        scores.setdefault(output_id, {})[scorer] = {"value": value, "correct": bool(correct),
                                                    "detail": load_json(detail)}
    return [{**row, "item": json.loads(row["item"]), "choices": load_json(row["choices"]),
             "sources": load_json(row["sources"]), "record": load_json(row["record"]),
             "scores": scores.get(row["id"], {})} for row in rows]


def save_scores(store: Store, rows: Iterable[tuple[int, str, float, bool, dict[str, Any] | None]]) -> None:
    """Write (output id, scorer, value, correct, detail) rows in one transaction; a rescore replaces its own."""
    now = utc_now()
    with immediate(store.db):
        store.db.conn.executemany(
            "INSERT OR REPLACE INTO eval_scores (output_id, scorer, value, correct, detail, created) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(output_id, scorer, float(value), int(bool(correct)), dump_json(detail), now)
             for output_id, scorer, value, correct, detail in rows])


# -- the arena ----------------------------------------------------------------------------------------------


def create_battle(store: Store, owner: str, prompt: str, model_a: str, model_b: str) -> int:
    """A battle between two models on one prompt, before either answers; returns its id."""
    if model_a == model_b:
        raise InvalidValue("an arena battle needs two different models")
    now = utc_now()
    with immediate(store.db):
        store.ensure_user(owner, now)
        cursor = store.db.conn.execute(
            "INSERT INTO arena_battles (owner, prompt, model_a, model_b, created) VALUES (?, ?, ?, ?, ?)",
            (owner, prompt, model_a, model_b, now))
    return inserted_id(cursor)


def save_battle_answer(store: Store, owner: str, battle_id: int, side: str, answer: str,
                       record: dict[str, Any] | None) -> None:
    """Keep side ``a`` or ``b``'s answer (as it grows, and whole at the end) with its record."""
    if side not in ("a", "b"):
        raise InvalidValue("a side is 'a' or 'b'")
    get_battle(store, owner, battle_id)
    store.db.conn.execute(f"UPDATE arena_battles SET answer_{side} = ?, record_{side} = ? WHERE id = ?",
                          (answer, dump_json(record), battle_id))


def vote(store: Store, owner: str, battle_id: int, choice: str) -> dict[str, Any]:
    """Record the owner's vote (``a``, ``b``, ``tie`` or ``both_bad``); a battle takes one vote."""
    if choice not in VOTES:
        raise InvalidValue(f"a vote is one of {', '.join(VOTES)}")
    with immediate(store.db):
        battle = get_battle(store, owner, battle_id)
        if battle["vote"] is not None:
            raise InvalidValue(f"battle {battle_id} already has a vote ({battle['vote']})")
        if battle["record_a"] is None or battle["record_b"] is None:  # an empty answer is over too, and may be voted bad
            raise InvalidValue(f"battle {battle_id} is not over: both answers are needed before a vote")
        store.db.conn.execute("UPDATE arena_battles SET vote = ?, voted = ? WHERE id = ?",
                              (choice, utc_now(), battle_id))
    return get_battle(store, owner, battle_id)


def get_battle(store: Store, owner: str, battle_id: int) -> dict[str, Any]:
    """One of the owner's battles; ``NotFound`` for another owner's alike."""
    rows = store.rows(f"SELECT {_BATTLE_COLUMNS} FROM arena_battles WHERE id = ? AND owner = ?", (battle_id, owner))
    if not rows:
        raise NotFound(f"no battle {battle_id}")
    return _battle(rows[0])


def battles(store: Store, owner: str, *, voted: bool | None = None) -> list[dict[str, Any]]:
    """The owner's battles, oldest first; ``voted`` keeps only those with (or without) a vote."""
    condition = "" if voted is None else (" AND vote IS NOT NULL" if voted else " AND vote IS NULL")
    rows = store.rows(f"SELECT {_BATTLE_COLUMNS} FROM arena_battles WHERE owner = ?{condition} ORDER BY id", (owner,))
    return [_battle(row) for row in rows]


def _battle(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "record_a": load_json(row["record_a"]), "record_b": load_json(row["record_b"])}
