"""Storage speed: the first page of 10,000 conversations and full-text search over 100,000 messages.

    .venv/bin/python -m bench.bench_storage [--conversations 10000] [--messages-per 10] [--runs 15]

Builds a throwaway database in a temporary directory (real schema, triggers and pragmas), then
times each operation ``--runs`` times and reports the median. Targets (issue 3): first page
under 50 ms, a search under 100 ms, on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from storage import Store
from storage.db import immediate
from storage.transfer import utc_now

OWNER = "local"
TARGETS_MS = {"list": 50.0, "search": 100.0}

# A vocabulary with a few very common words and a long tail, so searches cover both a term in
# most messages and a rare one.
_COMMON = (
    "the of and to in is that for it as with was on be by this are or an at from which can "
    "model data answer question token attention layer training python function memory"
).split()
_RARE = ("zygote quasar fjord sphinx xylophone kumquat gazebo oxymoron ptarmigan quixotic").split()


def _words(rng: random.Random, n: int) -> str:
    words = []
    for _ in range(n):
        r = rng.random()
        if r < 0.6:
            words.append(rng.choice(_COMMON))
        elif r < 0.9995:
            words.append(f"w{int(rng.paretovariate(1.1)) % 20000}")
        else:
            words.append(rng.choice(_RARE))
    return " ".join(words)


def build(store: Store, conversations: int, messages_per: int, seed: int = 0) -> None:
    """Fill ``store`` quickly: one transaction per 500 conversations, all triggers live."""
    rng = random.Random(seed)
    db = store.db
    batch = 500
    started = time.perf_counter()
    store.create_conversation(OWNER)  # creates the user row
    for first in range(0, conversations, batch):
        with immediate(db):
            for _ in range(first, min(first + batch, conversations)):
                now = utc_now()
                cid = db.execute(
                    "INSERT INTO conversations (owner, title, created, updated, source)"
                    " VALUES (?, ?, ?, ?, 'bench')",
                    (OWNER, _words(rng, 6), now, now),
                ).lastrowid
                db.conn.executemany(
                    "INSERT INTO messages (conversation_id, position, role, content, created,"
                    " updated) VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (cid, p, "user" if p % 2 == 0 else "assistant",
                         _words(rng, rng.randint(10, 120)), now, now)
                        for p in range(messages_per)
                    ],
                )
        done = min(first + batch, conversations)
        rate = done / (time.perf_counter() - started)
        print(f"\r  building: {done:,}/{conversations:,} conversations ({rate:,.0f}/s)",
              end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)


def _median_ms(fn, runs: int) -> float:
    fn()  # warm the page cache once; every run after is what a user sees on an open app
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def run(conversations: int = 10_000, messages_per: int = 10, runs: int = 15) -> dict[str, float]:
    """Build the database, time each operation, print a table; return ``{name: median ms}``."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.db")
        build(store, conversations, messages_per)
        total = store.db.conn.execute("SELECT count(*) FROM messages").fetchone()[0]
        cases = {
            "list: first page (50)": lambda: store.list_conversations(OWNER, limit=50),
            "list: page 100 (offset 4950)": lambda: store.list_conversations(OWNER, limit=50, offset=4950),
            "count_conversations": lambda: store.count_conversations(OWNER),
            "search: rare word 'quasar'": lambda: store.search(OWNER, "quasar"),
            "search: mid word 'w7'": lambda: store.search(OWNER, "w7"),
            "search: two words 'attention memory'": lambda: store.search(OWNER, "attention memory"),
            "search: common word 'model'": lambda: store.search(OWNER, "model"),
            "search: prefix 'quas*'": lambda: store.search(OWNER, "quas*"),
        }
        results = {name: _median_ms(fn, runs) for name, fn in cases.items()}
        store.close()
    print(f"\n{conversations:,} conversations, {total:,} messages; median of {runs} runs\n")
    print(f"{'operation':40} {'ms':>9} {'target':>8}")
    for name, ms in results.items():
        target = TARGETS_MS["search"] if name.startswith("search") else TARGETS_MS["list"]
        flag = "ok" if ms < target else "SLOW"
        print(f"{name:40} {ms:9.2f} {target:6.0f}ms {flag}")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--messages-per", type=int, default=10)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "storage.json",
                        help="Where to save the figures as JSON (default: %(default)s).")
    args = parser.parse_args(argv)
    results = run(args.conversations, args.messages_per, args.runs)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({
        "conversations": args.conversations,
        "messages": args.conversations * args.messages_per,
        "runs": args.runs,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "median_ms": results,
    }, indent=2) + "\n")
    print(f"\nsaved {args.output}")


if __name__ == "__main__":
    main()
