"""Many writers at once, in threads of one process and in separate processes: no lost rows, no locks."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from storage import Store

REPO = Path(__file__).resolve().parents[2]


def _check(store: Store, conversations: list[int], messages_each: int) -> None:
    for cid in conversations:
        messages = store.get_conversation("local", cid)["messages"]
        assert [m["position"] for m in messages] == list(range(messages_each))
    total = store.db.conn.execute("SELECT count(*) FROM messages").fetchone()[0]
    assert total == len(conversations) * messages_each


def test_threads_writing_different_conversations(store: Store, db_path: Path):
    threads, exchanges = 8, 15
    errors: list[BaseException] = []
    created: list[int] = []
    start = threading.Barrier(threads)
    # Half the threads share the fixture's store; the other half open their own, as separate
    # parts of an app would.
    other = Store(db_path)

    def worker(n: int) -> None:
        try:
            s = store if n % 2 else other
            start.wait()
            cid = s.create_conversation(title=f"thread {n}", source="test")
            created.append(cid)
            for i in range(exchanges):
                s.add_message(cid, "user", f"question {i} from {n}")
                mid = s.begin_assistant_message(cid, model="tiny")
                s.update_message_content(mid, "partial")
                s.finish_message(mid, f"answer {i} to {n}", finish_reason="stop")
                s.search("local", "answer")
                s.list_conversations("local")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    other.close()
    assert errors == []
    assert len(created) == threads
    _check(store, created, 2 * exchanges)


def test_threads_appending_to_the_same_conversation_get_distinct_positions(store: Store):
    cid = store.create_conversation()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(20):
                store.add_message(cid, "user", "same place")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    workers = [threading.Thread(target=worker) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    _check(store, [cid], 80)


def test_processes_writing_at_once(db_path: Path):
    Store(db_path).close()  # migrate once so the processes race on writes, not on the schema
    script = """
import sys
from storage import Store
store = Store(sys.argv[1])
for c in range(3):
    cid = store.create_conversation(title=sys.argv[2])
    for i in range(10):
        store.add_message(cid, "user", f"message {i}")
print("ok")
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(db_path), f"p{n}"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for n in range(4)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [(p.returncode, out.strip(), err) for p, (out, err) in zip(procs, outputs)] == [
        (0, "ok", "")
    ] * 4
    with Store(db_path) as store:
        conversations = [c["id"] for c in store.list_conversations("local")]
        assert len(conversations) == 12
        _check(store, conversations, 10)


def test_processes_migrating_a_new_database_at_once(tmp_path: Path):
    db_path = tmp_path / "race.db"
    script = "import sys; from storage import Store; Store(sys.argv[1]).create_conversation(); print('ok')"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(db_path)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [(p.returncode, err) for p, (_, err) in zip(procs, outputs)] == [(0, "")] * 4
    with Store(db_path) as store:
        assert store.count_conversations("local") == 4
