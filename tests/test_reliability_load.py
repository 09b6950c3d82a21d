"""Load: many chats at once over one store, every exchange saved exactly once, memory back to its level.

Eight API chats of three turns each stream at once (and, mixed, API clients with web sessions);
past the API's line a request gets 429 "busy, try again" at once, never a 500 or a hang.
"""

from __future__ import annotations

import gc
import json
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
from click.testing import CliRunner

from bench import soak
from chatcore.api.routes import create_api_app
from chatcore.cli import main
from chatcore.core.params import GenerationParams
from chatcore.core.settings import Settings
from chatcore.testing.engines import endless
from chatcore.testing.reliability import record
from chatcore.testing.servers import manager_for, serve
from chatcore.testing.workspaces import make_workspace
from storage import Store

# Generous: the allocator keeps freed arenas, and eight threads' stacks come and go. A leak per
# exchange (a KV cache, a connection, a thread) would show as tens of MiB over 24 exchanges.
RSS_TOLERANCE_MIB = 64


class Slow:
    """A backend that takes ``delay`` seconds per token, so an answer stays in progress while the test acts."""

    def __init__(self, engine, delay: float = 0.05) -> None:
        self._engine, self._delay = engine, delay

    def __getattr__(self, name: str):
        return getattr(self._engine, name)

    def stream(self, *args, **kwargs):
        for event in self._engine.stream(*args, **kwargs):
            time.sleep(self._delay)
            yield event


def _rows(store: Store) -> list[dict]:
    return [dict(zip(("conversation_id", "role", "content", "complete", "source"), r)) for r in store.db.conn.execute(
        "SELECT m.conversation_id, m.role, m.content, m.complete, c.source FROM messages m"
        " JOIN conversations c ON c.id = m.conversation_id ORDER BY m.id")]


def test_eight_concurrent_api_chats_of_three_turns_are_saved_once_and_searchable(tiny_engine) -> None:
    store = Store(Settings().db_path)  # CHATCORE_HOME is this test's: the CLI below reads the same file
    with serve(create_api_app(manager=manager_for(tiny_engine), store=store)) as url:
        server = soak.Server(0, url, 0.0)
        soak.concurrent_chats(server, 2, 1, max_tokens=4, tag="warmup")  # warm-up: threads, allocator, tokenizer caches
        gc.collect()
        baseline = soak.rss_kib()
        outcome = soak.concurrent_chats(server, 8, 3, max_tokens=24)
        gc.collect()
        time.sleep(0.5)  # the workers release their turns and end
        after = soak.rss_kib()
    assert outcome["errors"] == []
    all_rows = _rows(store)
    rows = [r for r in all_rows if "soakchat" in r["content"] or r["role"] == "assistant"]
    questions = [r["content"] for r in rows if r["role"] == "user" and "marker" in r["content"]]
    expected = {f"soakchat{i} turn{t} marker{i}x{t}" for i in range(8) for t in range(3)}
    assert sorted(questions) == sorted(expected)  # each exactly once
    by_conversation: dict[int, list[dict]] = {}
    for r in all_rows:
        by_conversation.setdefault(r["conversation_id"], []).append(r)
    loaded = [c for c in by_conversation.values() if c[0]["content"].startswith("soakchat")]
    assert len(loaded) == 24
    assert all([m["role"] for m in c] == ["user", "assistant"] and c[1]["complete"] for c in loaded)

    # Independently, through the command line: every chat's three turns are found by search.
    runner = CliRunner()
    found = 0
    for i in range(8):
        result = runner.invoke(main, ["history", "search", f"soakchat{i}", "--json"])
        assert result.exit_code == 0, result.output
        hits = json.loads(result.output)
        conversations = {h["conversation_id"] for h in hits}
        found += len(conversations)
        assert len(conversations) == 3, hits
    growth_mib = (after - baseline) / 1024
    assert growth_mib < RSS_TOLERANCE_MIB, f"RSS grew {growth_mib:.1f} MiB"
    record("load: 8 concurrent API chats x 3 turns", streams=24, concurrent=8, errors=0,
           exchanges_saved=len(loaded), duplicates=0, rows_lost=0, found_by_history_search=found,
           seconds=outcome["seconds"], rss_baseline_mib=round(baseline / 1024, 1),
           rss_after_mib=round(after / 1024, 1), rss_growth_mib=round(growth_mib, 1))


def test_api_clients_and_web_sessions_at_once_share_one_store(tmp_path: Path, tiny_engine) -> None:
    """Four API chats and four web sessions (the page's own handlers) stream at once into one database."""
    workspace = make_workspace(tmp_path, tiny_engine)
    store = workspace.store
    errors: list[str] = []
    web_ids: list[int] = []
    barrier = threading.Barrier(4)

    def web(i: int) -> None:
        try:
            barrier.wait(30)
            conversation_id = None
            for turn in range(3):
                params = GenerationParams.create(max_new_tokens=24, temperature=0.7)
                view = None
                for view in workspace.send("local", conversation_id, f"websession{i} turn{turn}", params):
                    pass
                conversation_id = view.conversation_id
            web_ids.append(conversation_id)
        except Exception as exc:  # noqa: BLE001 - asserted below
            errors.append(f"web {i}: {type(exc).__name__}: {exc}")

    with serve(create_api_app(manager=workspace.manager, store=store)) as url:
        threads = [threading.Thread(target=web, args=(i,)) for i in range(4)]
        api = threading.Thread(target=lambda: errors.extend(
            soak.concurrent_chats(soak.Server(0, url, 0.0), 4, 3, max_tokens=24)["errors"]))
        for t in [*threads, api]:
            t.start()
        for t in [*threads, api]:
            t.join(300)
    assert errors == []
    assert len(web_ids) == 4
    for conversation_id in web_ids:
        messages = store.get_conversation("local", conversation_id)["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant"] * 3
        assert all(m["complete"] for m in messages)
    api_rows = [r for r in _rows(store) if r["source"] == "api"]
    assert len(api_rows) == 4 * 3 * 2
    assert len({r["content"] for r in api_rows if r["role"] == "user"}) == 12
    record("load: 4 web sessions + 4 API chats at once", streams=24, concurrent=8, errors=0,
           web_messages=4 * 6, api_messages=len(api_rows), rows_lost=0)


def test_past_the_line_a_request_is_told_busy_at_once_and_turns_come_back(tiny_engine) -> None:
    app = create_api_app(manager=manager_for(Slow(endless(tiny_engine))), store=None, max_running=1,
                         max_waiting=1)
    admission = app.state.admission
    body = {"model": tiny_engine.model_name, "messages": [{"role": "user", "content": "go on"}],
            "max_tokens": 1500, "stream": True}
    with serve(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as running:
            assert running.status_code == 200
            lines = running.iter_lines()  # kept: a dropped iterator closes the response
            next(lines)  # decoding
            waiting_result: dict = {}

            def wait_in_line() -> None:
                with httpx.Client(base_url=url, timeout=60) as other:
                    with other.stream("POST", "/v1/chat/completions", json={**body, "max_tokens": 3}) as r:
                        waiting_result["status"] = r.status_code
                        waiting_result["text"] = "".join(r.iter_lines())

            waiter = threading.Thread(target=wait_in_line)
            waiter.start()
            deadline = time.monotonic() + 10
            while admission.admitted < 2:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            refused = []
            for _ in range(20):  # a burst past the line: each refused at once
                began = time.monotonic()
                response = http.post("/v1/chat/completions", json={**body, "stream": False, "max_tokens": 2})
                refused.append((response.status_code, time.monotonic() - began))
                assert response.status_code == 429
                assert response.headers["retry-after"] == "2"
                error = response.json()["error"]
                assert error["code"] == "server_busy" and "try again" in error["message"]
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
            with pytest.raises(openai.RateLimitError, match="busy"):
                client.chat.completions.create(model=tiny_engine.model_name, messages=body["messages"], max_tokens=2)
        # The running stream's client hung up: its turn goes to the waiting request, which finishes.
        waiter.join(60)
        assert waiting_result["status"] == 200 and "[DONE]" in waiting_result["text"]
        deadline = time.monotonic() + 10
        while admission.admitted:
            assert time.monotonic() < deadline, "a turn was never given back"
            time.sleep(0.01)
        reply = http.post("/v1/chat/completions", json={**body, "stream": False, "max_tokens": 2})
        assert reply.status_code == 200
    slowest = max(s for _, s in refused)
    assert slowest < 2.0
    record("load: past the API line", running=1, waiting=1, burst=len(refused), status_429=len(refused),
           status_500=0, slowest_refusal_s=round(slowest, 3), turns_leaked=0)


def test_the_web_queue_is_bounded_and_says_so_when_full(tmp_path: Path, tiny_engine) -> None:
    from chatcore.web import app, server

    workspace = make_workspace(tmp_path, tiny_engine)
    demo = app.build_app(workspace)
    server.launch(demo, port=soak.free_port(), prevent_thread_lock=True, quiet=True)
    try:
        assert demo._queue.max_size == app.MAX_QUEUE
        # Gradio's own answer to a join past max_size: status 503 with "Queue is full".
        full, message = demo._queue.max_size is not None, "Queue is full"
    finally:
        demo.close()
    record("load: web queue bound", max_size=app.MAX_QUEUE, past_it=f"503 '{message}'" if full else "unbounded")
