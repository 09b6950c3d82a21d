"""Soak: kill -9 the API server mid-answer, again and again, and interrupt imports and exports.

    .venv/bin/python -m bench.soak [--kills 25] [--imports 10] [--exports 10] [--chats 8] [--turns 3]

Each kill round starts ``chatcore serve --api-only`` (``chatcore.api.routes.serve_api``) as its own process
over a tiny random model with end-of-text off, saves one finished exchange, streams a long answer
with the official ``openai`` client and kills the server with SIGKILL after a random number of
tokens. Then, before anything else opens the database: ``PRAGMA integrity_check`` is ``ok``, every
message committed before the kill is there exactly once with its text, the interrupted question is
saved, and its partial answer (if the first token got saved) is marked incomplete. The next round's
start is the clean restart. Import and export rounds kill ``chatcore import`` / ``chatcore export``
at random moments: the database holds all of the file or none of it, and the export's destination
holds the old file or the whole new one. Figures go to ``bench/results/soak.json``.

``tests/test_reliability_crash.py`` runs the same rounds, fewer of them, in ``make test``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatcore.testing.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "soak.json"
# The server process: the real serve_api (over a model whose answers never end early, see
# save_endless_tiny, so a kill always lands mid-answer).
SERVER_CODE = (
    "import sys\n"
    "from chatcore.api.routes import serve_api\n"
    "from chatcore.core.settings import Settings\n"
    "serve_api(Settings(), port=int(sys.argv[1]))\n"
)
# A warm parent that has imported everything once and forks a fresh server per round: the same
# process tree as a cold start minus ~10 s of imports on a busy 2-core machine. Each round's server is
# still its own process, killed with SIGKILL; the last round of every run is a real cold start.
ZYGOTE_CODE = (
    "import os, signal, sys\n"
    "import chatcore.api.routes, chatcore.services.models, chatcore.engine.loader, storage, uvicorn\n"
    "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
    "from chatcore.api.routes import serve_api\n"
    "from chatcore.core.settings import Settings\n"
    "from chatcore.engine.loader import load_backend\n"
    "load_backend(Settings(), lambda message: None)  # transformers imports the model's code lazily\n"
    "signal.signal(signal.SIGCHLD, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "for line in sys.stdin:\n"
    "    port = int(line)\n"
    "    pid = os.fork()\n"
    "    if pid == 0:\n"
    "        signal.signal(signal.SIGCHLD, signal.SIG_DFL)\n"
    "        null = os.open(os.devnull, os.O_WRONLY)\n"
    "        os.dup2(null, 1)\n"
    "        serve_api(Settings(), port=port)\n"
    "        os._exit(0)\n"
    "    print(pid, flush=True)\n"
)
CLI_CODE = "from chatcore.cli import main; main()"
START_TIMEOUT_S = 120
SAVE_JITTER_S = 0.6  # a little more than the service's save interval (0.5 s)


def environment(home: Path, cache: Path, model_dir: Path) -> dict[str, str]:
    """A clean environment for a ChatCore process: its own home and cache, the tiny model, no API key.

    CHATCORE_KERNELS passes through: a shared build of the C++ kernels isolates nothing, and without it
    every fresh cache built them again (a minute on 2 cores, most of the test suite's kill rounds).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATCORE_") or k == "CHATCORE_KERNELS"}
    env.update(CHATCORE_HOME=str(home), CHATCORE_CACHE=str(cache), CHATCORE_MODEL=str(model_dir),
               CHATCORE_DEVICE="cpu", CHATCORE_DTYPE="float32", PYTHONPATH=str(ROOT))
    return env


@dataclass
class Server:
    pid: int
    url: str
    started_s: float  # from launch to the first answered request
    process: subprocess.Popen | None = None  # a cold start; None for a server forked by the Zygote

    def client(self) -> Any:
        import openai

        return openai.OpenAI(base_url=f"{self.url}/v1", api_key="unused", max_retries=0, timeout=60)

    def kill(self) -> None:
        """SIGKILL: no handler, no flush, no finally."""
        os.kill(self.pid, signal.SIGKILL)
        _wait_gone(self.pid, self.process)

    def stop(self) -> None:
        """SIGTERM: a normal shutdown."""
        os.kill(self.pid, signal.SIGTERM)
        _wait_gone(self.pid, self.process)


def _wait_gone(pid: int, process: subprocess.Popen | None) -> None:
    if process is not None:
        process.wait(30)
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
    raise RuntimeError(f"process {pid} did not go away")


class Zygote:
    """A parent process with ChatCore imported, forking one API server process per ``start()``."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", ZYGOTE_CODE], env=env, cwd=ROOT, text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError("the zygote did not start")

    def start(self) -> Server:
        port = free_port()
        began = time.monotonic()
        self.process.stdin.write(f"{port}\n")
        self.process.stdin.flush()
        pid = int(self.process.stdout.readline())
        return _wait_ready(Server(pid, f"http://127.0.0.1:{port}", 0.0), began)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(30)


def start_server(env: dict[str, str]) -> Server:
    """Launch the API server as a new process (a cold start) and wait until its model has loaded."""
    port = free_port()
    began = time.monotonic()
    process = subprocess.Popen([sys.executable, "-c", SERVER_CODE, str(port)], env=env, cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return _wait_ready(Server(process.pid, f"http://127.0.0.1:{port}", 0.0, process), began)


def _wait_ready(server: Server, began: float) -> Server:
    import httpx

    while True:
        if server.process is not None and server.process.poll() is not None:
            raise RuntimeError(f"the server exited with {server.process.returncode}: "
                               f"{server.process.stderr.read().decode()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.url}/v1/models", timeout=5).status_code == 200:
                server.started_s = time.monotonic() - began
                return server
        if time.monotonic() - began > START_TIMEOUT_S:
            os.kill(server.pid, signal.SIGKILL)
            raise RuntimeError("the server did not come up")
        time.sleep(0.05)


def kill(process: subprocess.Popen) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait(30)


def integrity(db_path: Path) -> str:
    """``PRAGMA integrity_check`` on a plain connection, before ChatCore opens (and migrates) the file."""
    conn = sqlite3.connect(db_path)
    try:
        return ";".join(row[0] for row in conn.execute("PRAGMA integrity_check"))
    finally:
        conn.close()


def message_rows(db_path: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db_path)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(
            "SELECT id, conversation_id, position, role, content, complete, finish_reason FROM messages ORDER BY id")]
    finally:
        conn.close()


def table_counts(db_path: Path) -> dict[str, int]:
    conn = sqlite3.connect(db_path)
    try:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("conversations", "messages", "notes")}
    finally:
        conn.close()


# -- kill -9 during streamed answers ---------------------------------------------------------------


@dataclass
class KillFigures:
    kills: int = 0
    rows_checked: int = 0
    rows_lost: int = 0
    rows_duplicated: int = 0
    integrity: list[str] = field(default_factory=list)
    tokens_before_kill: list[int] = field(default_factory=list)
    partial_answers_saved: int = 0  # the interrupted answer's row existed (its first token was committed)
    restart_s: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kills": self.kills, "rows_checked": self.rows_checked, "rows_lost": self.rows_lost,
            "rows_duplicated": self.rows_duplicated, "integrity_ok": self.integrity.count("ok"),
            "chunks_before_kill": {"min": min(self.tokens_before_kill, default=0),
                                   "max": max(self.tokens_before_kill, default=0)},
            "partial_answers_saved_incomplete": self.partial_answers_saved,
            "restart_s": {"max": round(max(self.restart_s, default=0), 2),
                          "mean": round(sum(self.restart_s) / max(len(self.restart_s), 1), 2)},
        }


def kill_rounds(workdir: Path, model_dir: Path, kills: int, seed: int = 0) -> KillFigures:
    """``kills`` rounds of: start, one finished exchange, a streamed answer killed with SIGKILL, verify."""
    rng = random.Random(seed)
    home, cache = workdir / "home", workdir / "cache"
    env = environment(home, cache, model_dir)
    db_path = home / "chatcore.db"
    committed: dict[int, tuple[str, str, bool]] = {}  # message id -> (role, content, complete), all must survive
    figures = KillFigures()
    zygote = Zygote(env)
    try:
        _kill_rounds(zygote, env, db_path, kills, rng, committed, figures)
    finally:
        zygote.close()
    assert figures.rows_lost == 0 and figures.rows_duplicated == 0, figures
    return figures


def _kill_rounds(zygote: Zygote, env: dict[str, str], db_path: Path, kills: int, rng: random.Random,
                 committed: dict[int, tuple[str, str, bool]], figures: KillFigures) -> None:
    for round_no in range(kills + 1):
        # Forked servers for the kills; the last start is a cold one, as after a real crash.
        server = zygote.start() if round_no < kills else start_server(env)
        figures.restart_s.append(server.started_s)
        client = server.client()
        model = client.models.list().data[0].id
        if round_no == kills:  # the last start only proves the restart is clean
            reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "ok?"}],
                                                   max_tokens=2, temperature=0)
            assert reply.choices[0].message.content is not None
            server.stop()
            break
        question = f"Round {round_no}: explain write-ahead logging in detail."
        reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": f"Warm-up {round_no}"}],
                                               max_tokens=8, temperature=0)
        finished_id = reply.model_extra["chatcore"]["conversation_id"]
        stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}],
                                                max_tokens=1500, temperature=1.0, stream=True)
        after = rng.randint(2, 120)  # chunks to read before the kill
        received, chunks, conversation_id = "", 0, None
        for chunk in stream:
            if conversation_id is None:
                conversation_id = (chunk.model_extra.get("chatcore") or {}).get("conversation_id")
            if chunk.choices and chunk.choices[0].delta.content:
                received += chunk.choices[0].delta.content
                chunks += 1
                if chunks >= after:
                    time.sleep(rng.random() * SAVE_JITTER_S)  # land anywhere between two throttled saves
                    break
        server.kill()
        with contextlib.suppress(Exception):
            stream.close()
        figures.kills += 1
        figures.tokens_before_kill.append(chunks)

        figures.integrity.append(integrity(db_path))
        assert figures.integrity[-1] == "ok", figures.integrity[-1]
        rows = message_rows(db_path)
        by_id = {r["id"]: r for r in rows}
        # The finished exchange of this round is committed: it joins everything that must survive.
        for r in rows:
            if r["conversation_id"] == finished_id:
                committed[r["id"]] = _as_saved(r)
        for message_id, saved in committed.items():
            figures.rows_checked += 1
            row = by_id.get(message_id)
            if row is None or _as_saved(row) != saved:
                figures.rows_lost += 1
        seen = [(r["conversation_id"], r["position"]) for r in rows]
        figures.rows_duplicated += len(seen) - len(set(seen))
        texts = [(r["conversation_id"], r["role"], r["content"]) for r in rows if r["role"] == "user"]
        figures.rows_duplicated += len(texts) - len(set(texts))

        interrupted = [r for r in rows if r["conversation_id"] == conversation_id]
        assert interrupted and interrupted[0]["role"] == "user" and interrupted[0]["content"] == question, interrupted
        assert len(interrupted) <= 2, interrupted
        if len(interrupted) == 2:
            answer = interrupted[1]
            assert answer["role"] == "assistant" and not answer["complete"], answer
            # Saved text and received text are both prefixes of the one answer being generated.
            assert received.startswith(answer["content"]) or answer["content"].startswith(received), (answer, received)
            figures.partial_answers_saved += 1
        for r in interrupted:  # from now on the interrupted exchange must survive as it is
            committed[r["id"]] = _as_saved(r)


def _as_saved(row: dict[str, Any]) -> tuple[str, str, bool]:
    """What of a message row must survive every later kill unchanged: (role, content, complete)."""
    return row["role"], row["content"], bool(row["complete"])


# -- interrupted imports and exports -----------------------------------------------------------


def export_document(conversations: int, messages_per: int, seed: int = 0) -> dict[str, Any]:
    """A valid export file with ``conversations`` × ``messages_per`` messages of a few hundred characters."""
    rng = random.Random(seed)
    words = "attention window cache token sampling history export import sqlite journal".split()
    docs, next_id = [], 1
    for c in range(conversations):
        messages = []
        for m in range(messages_per):
            messages.append({"id": next_id, "role": "user" if m % 2 == 0 else "assistant",
                             "content": " ".join(rng.choice(words) for _ in range(60))})
            next_id += 1
        docs.append({"id": c + 1, "title": f"Imported {c}", "messages": messages})
    return {"format": "chatcore-export", "version": 1, "conversations": docs}


def cli(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CLI_CODE, *args], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@dataclass
class TransferFigures:
    rounds: int = 0
    killed_midway: int = 0  # the process was still running when killed
    finished_first: int = 0
    partial_states: int = 0  # must stay 0
    integrity_ok: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _timed_run(env: dict[str, str], command: tuple[str, ...]) -> float:
    """Seconds a whole ``chatcore COMMAND`` takes here, so the kills spread over all of it."""
    began = time.monotonic()
    if cli(env, *command).wait(300) != 0:
        raise RuntimeError(f"the reference {command[0]} failed")
    return time.monotonic() - began


def _kill_at_random(env: dict[str, str], command: tuple[str, ...], rng: random.Random, full: float,
                    db_path: Path, figures: TransferFigures) -> None:
    """One round: start ``chatcore COMMAND``, SIGKILL it at a random moment if still running, check the file."""
    process = cli(env, *command)
    time.sleep(rng.uniform(0.6, 1.1) * full)  # start-up comes first: aim at the reading and the writing
    if process.poll() is None:
        kill(process)
        figures.killed_midway += 1
    else:
        figures.finished_first += 1
    figures.rounds += 1
    if integrity(db_path) == "ok":
        figures.integrity_ok += 1


def import_kill_rounds(workdir: Path, model_dir: Path, rounds: int, *, conversations: int = 1500,
                       seed: int = 0) -> TransferFigures:
    """Kill ``chatcore import`` at random moments: the database has the whole file or none of it."""
    rng = random.Random(seed)
    home = workdir / "import-home"
    env = environment(home, workdir / "cache", model_dir)
    source = workdir / "import.json"
    document = export_document(conversations, 6, seed)
    source.write_text(json.dumps(document))
    db_path = home / "chatcore.db"
    from storage import Store

    with Store(db_path) as store:  # something already there, which must survive untouched
        cid = store.create_conversation("local", title="Before the import")
        store.add_message(cid, "user", "kept")
    command = ("import", str(source))
    full = _timed_run(env, command)
    figures = TransferFigures()
    per_import = conversations * 6
    for _ in range(rounds):
        before = table_counts(db_path)
        _kill_at_random(env, command, rng, full, db_path, figures)
        after = table_counts(db_path)
        grew = after["messages"] - before["messages"]
        if grew not in (0, per_import) or after["conversations"] - before["conversations"] not in (0, conversations):
            figures.partial_states += 1
    assert figures.partial_states == 0 and figures.integrity_ok == figures.rounds, figures
    return figures


def export_kill_rounds(workdir: Path, model_dir: Path, rounds: int, seed: int = 0) -> TransferFigures:
    """Kill ``chatcore export -o FILE`` at random moments: FILE is the old file or the whole new export."""
    rng = random.Random(seed)
    home = workdir / "import-home"  # the database the import rounds filled
    env = environment(home, workdir / "cache", model_dir)
    target = workdir / "exports" / "backup.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    old = "the previous backup\n"
    command = ("export", "--all", "--format", "json", "-o", str(target))
    full = _timed_run(env, command)
    figures = TransferFigures()
    for _ in range(rounds):
        target.write_text(old)
        _kill_at_random(env, command, rng, full, home / "chatcore.db", figures)
        text = target.read_text()
        if text != old:
            try:
                whole = json.loads(text)
            except ValueError:
                figures.partial_states += 1
                continue
            if whole.get("format") != "chatcore-export":
                figures.partial_states += 1
    assert figures.partial_states == 0 and figures.integrity_ok == figures.rounds, figures
    return figures


# -- many chats at once --------------------------------------------------------------------------


def concurrent_chats(server: Server, chats: int, turns: int, max_tokens: int = 24, tag: str = "soakchat") -> dict[str, Any]:
    """``chats`` API clients, each a ``turns``-turn conversation sent as growing histories, all at once."""
    import threading

    client = server.client()
    model = client.models.list().data[0].id
    errors: list[str] = []
    conversation_ids: list[list[int]] = [[] for _ in range(chats)]
    barrier = threading.Barrier(chats)

    def chat(i: int) -> None:
        history: list[dict[str, str]] = []
        try:
            barrier.wait(30)
            for turn in range(turns):
                history.append({"role": "user", "content": f"{tag}{i} turn{turn} marker{i}x{turn}"})
                text = ""
                for chunk in client.chat.completions.create(model=model, messages=history, max_tokens=max_tokens,
                                                            stream=True):
                    extra = chunk.model_extra.get("chatcore") if chunk.model_extra else None
                    if extra:
                        conversation_ids[i].append(extra["conversation_id"])
                    if chunk.choices and chunk.choices[0].delta.content:
                        text += chunk.choices[0].delta.content
                history.append({"role": "assistant", "content": text})
        except Exception as exc:  # noqa: BLE001 - reported and asserted by the caller
            errors.append(f"chat {i}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=chat, args=(i,)) for i in range(chats)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    return {"chats": chats, "turns": turns, "errors": errors, "seconds": round(time.monotonic() - began, 2),
            "conversation_ids": conversation_ids}


# -- the command -------------------------------------------------------------------------------


def save_endless_tiny(directory: Path) -> Path:
    """The tests' tiny random Llama, but its end-of-text token is one the model cannot produce.

    The tokenizer gains a special token past the model's vocabulary and names it end-of-text, so
    every answer runs to ``max_tokens`` (or a kill) through the unmodified loading and decoding code.
    """
    sys.path.insert(0, str(ROOT))
    from chatcore.testing.tiny import tiny_model, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    model = tiny_model(len(tokenizer))
    tokenizer.add_special_tokens({"eos_token": "<|never|>"})
    never = tokenizer.convert_tokens_to_ids("<|never|>")
    assert never >= model.config.vocab_size
    model.config.eos_token_id = model.generation_config.eos_token_id = never
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=25)
    parser.add_argument("--imports", type=int, default=10)
    parser.add_argument("--exports", type=int, default=10)
    parser.add_argument("--chats", type=int, default=8)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--rounds-of-chats", type=int, default=5, help="Rounds of --chats concurrent chats.")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="chatcore-soak-") as tmp:
        workdir = Path(tmp)
        model_dir = save_endless_tiny(workdir / "tiny-model")
        result: dict[str, Any] = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count()}}
        print(f"kill -9 during streamed answers × {args.kills} …", flush=True)
        result["kill_during_answers"] = kill_rounds(workdir / "kills", model_dir, args.kills, args.seed).as_dict()
        print(json.dumps(result["kill_during_answers"]), flush=True)
        print(f"kill -9 during imports × {args.imports} …", flush=True)
        result["kill_during_import"] = import_kill_rounds(workdir, model_dir, args.imports, seed=args.seed).as_dict()
        print(json.dumps(result["kill_during_import"]), flush=True)
        print(f"kill -9 during exports × {args.exports} …", flush=True)
        result["kill_during_export"] = export_kill_rounds(workdir, model_dir, args.exports, args.seed).as_dict()
        print(json.dumps(result["kill_during_export"]), flush=True)
        print(f"{args.rounds_of_chats} rounds of {args.chats} concurrent chats × {args.turns} turns …", flush=True)
        env = environment(workdir / "chats-home", workdir / "cache", model_dir)
        server = start_server(env)
        try:
            rss = []
            rounds = []
            for _ in range(args.rounds_of_chats):
                outcome = concurrent_chats(server, args.chats, args.turns)
                rss.append(rss_kib(server.pid))
                rounds.append({k: v for k, v in outcome.items() if k != "conversation_ids"})
                assert not outcome["errors"], outcome["errors"]
            counts = table_counts(workdir / "chats-home" / "chatcore.db")
            expected = args.rounds_of_chats * args.chats * args.turns
            result["concurrent_chats"] = {
                "rounds": rounds, "server_rss_mib_after_each_round": [round(r / 1024, 1) for r in rss],
                "conversations": counts["conversations"], "messages": counts["messages"],
                "expected_messages": 2 * expected, "rows_lost": 2 * expected - counts["messages"],
            }
        finally:
            server.stop()
        print(json.dumps(result["concurrent_chats"]), flush=True)
        result["seconds"] = round(time.monotonic() - began, 1)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


def rss_kib(pid: int | str = "self") -> int:
    """Resident memory (``VmRSS``) of process ``pid`` (this one by default), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


if __name__ == "__main__":
    main()
