"""A question answered by a model writing SQL over the tables in scope.

The model sees the tables' schemas and profiles (``profile.describe_for_model``), never their rows, and two
worked examples built from those same columns, because small models copy a pattern far better than they
follow a rule. Its query goes through the sandbox's gate and ``EXPLAIN`` before it runs; an error (a column
that does not exist, a missing ``GROUP BY``) goes back to it, with DuckDB's own message, for ``retries`` more
tries. The result then goes back once more for a one- or two-sentence narrative, whose numbers are checked
against the result: the ones it does not hold are returned as ``unverified``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Sequence
from typing import Any

from chatcore.core.errors import ChatCoreError, ParameterError
from chatcore.core.events import Finished
from chatcore.core.params import GenerationParams
from chatcore.services.data.answers import Answer
from chatcore.services.data.errors import DataError, QueryFailed
from chatcore.services.data.narrative import unverified_numbers
from chatcore.services.data.profile import describe_for_model

MAX_QUESTION_CHARS = 2000
MAX_TABLES = 8
SQL_TOKENS = 160
NARRATIVE_TOKENS = 120
NARRATIVE_ROWS = 12  # the rows of the result the model reads to write its narrative

SQL_SYSTEM = ("You translate questions into one DuckDB SQL query. Use only the tables and columns below, with "
              "their exact names. Answer with the query alone, in a ```sql block.\n\n{schema}")
NARRATIVE_SYSTEM = ("You explain a query's result in one or two short sentences. Quote numbers exactly as they "
                    "appear in the result; never invent one.")
RETRY = "That query failed: {error}\nWrite a corrected query, in a ```sql block."

_FENCED = re.compile(r"```(?:sql|SQL)?\s*(.*?)(?:```|$)", re.DOTALL)
_SELECT = re.compile(r"\b(WITH|SELECT|FROM)\b.*", re.DOTALL | re.IGNORECASE)


def extract_sql(text: str) -> str | None:
    """The statement in a model's reply: its first fenced block, else from the first WITH/SELECT, to the first ``;``.

    A fenced block is taken whatever it holds, so that a ``COPY`` the model wrote meets the sandbox's refusal
    by name rather than passing for "no query".
    """
    match = _FENCED.search(text or "")
    if match and match.group(1).strip():
        candidate = match.group(1)
    else:
        found = _SELECT.search(text or "")
        if not found:
            return None
        candidate = found.group(0)
    sql = candidate.split(";", 1)[0].strip()
    return sql or None


_WORDS = re.compile(r"[a-z0-9]+")


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") else word


def mentioned_columns(question: str, profile: dict[str, Any]) -> list[str]:
    """The columns a question names (every word of the name but units, plurals aside), in the table's order.

    Schema linking: a small model picks the right column far more often when it is told which ones the
    question is about than when it must find them in the schema itself.
    """
    words = {_stem(w) for w in _WORDS.findall(question.lower())}
    found = []
    for column in profile["columns"]:
        parts = [_stem(p) for p in column["name"].split("_") if len(p) > 2 or p.isalpha() and len(p) > 1]
        meaningful = [p for p in parts if p not in {"mm", "cm", "kg", "ms", "pct", "num", "id"}] or parts
        if meaningful and all(p in words for p in meaningful):
            found.append(column["name"])
    return found


def _pick(profile: dict[str, Any], kinds: Sequence[str], *, max_distinct: int | None = None,
          prefer: Sequence[str] = (), skip: Sequence[str] = ()) -> str | None:
    candidates = [c["name"] for c in profile["columns"] if c["kind"] in kinds and c["name"] not in skip
                  and (max_distinct is None or c["distinct"] <= max_distinct)]
    preferred = [c for c in candidates if c in prefer]
    return (preferred or candidates or [None])[0]


def examples(name: str, profile: dict[str, Any], *, prefer: Sequence[str] = ()) -> list[dict[str, str]]:
    """Three worked question/query pairs on the table's own columns: a count per group, a mean per group, and
    the group with the highest value.

    They use the columns the question names (``prefer``) where it names some. A small model copies an
    example's columns: on the Palmer penguins table, examples on other columns than the question's gave 6 of
    12 right (it answered "by island" with ``GROUP BY species``), on the question's own 9 of 12
    (``scripts/data_ask_accuracy.py``). What the model must still choose is the query's shape; a question of
    another shape (a filter, an overall mean) is where it fails most.
    """
    category = (_pick(profile, ("text", "boolean", "numeric", "temporal"), max_distinct=50, prefer=prefer)
                if any(c in prefer for c in _low_distinct(profile)) else
                _pick(profile, ("text", "boolean"), max_distinct=50))
    if category is None:
        return []
    measure = _pick(profile, ("numeric",), prefer=prefer, skip=(category,))
    label = category.replace("_", " ")
    shots = [(f"How many rows are there for each {label}?",
              f"SELECT {category}, count(*) AS n FROM {name} GROUP BY {category} ORDER BY n DESC")]
    if measure is not None:
        what = measure.replace("_", " ")
        shots += [(f"What is the average {what} for each {label}?",
                   f"SELECT {category}, avg({measure}) AS mean_{measure} FROM {name} GROUP BY {category}"),
                  (f"Which {label} has the highest maximum {what}?",
                   f"SELECT {category}, max({measure}) AS max_{measure} FROM {name} GROUP BY {category} "
                   f"ORDER BY max_{measure} DESC LIMIT 1")]
    messages: list[dict[str, str]] = []
    for question, sql in shots:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": f"```sql\n{sql}\n```"}]
    return messages


def _low_distinct(profile: dict[str, Any]) -> list[str]:
    return [c["name"] for c in profile["columns"] if c["distinct"] <= 50]


def result_text(answer_columns: list[str], rows: list[list[Any]], *, limit: int = NARRATIVE_ROWS) -> str:
    """The first rows of a result as a small Markdown table, numbers as the result holds them."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.6g}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(answer_columns) + " |", "|" + "---|" * len(answer_columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows[:limit]]
    if len(rows) > limit:
        lines.append(f"({len(rows) - limit} more rows)")
    return "\n".join(lines)


def _generate(backend: Any, messages: list[dict[str, str]], system: str, *, max_new_tokens: int,
              seed: int | None) -> Finished:
    params = GenerationParams(temperature=0.0, max_new_tokens=max_new_tokens, repetition_penalty=1.0, seed=seed)
    finished = None
    for event in backend.stream(messages, params, system=system):
        if isinstance(event, Finished):
            finished = event
    if finished is None or finished.error:
        raise QueryFailed(f"the model gave no answer{': ' + finished.error if finished and finished.error else ''}")
    return finished


def ask(service: Any, owner: str, question: str, *, tables: Sequence[str], model: str | None = None,
        seed: int | None = None, retries: int = 2, on_step: Callable[[str], None] | None = None,
        save: bool = True) -> Answer:
    """The model's SQL for ``question``, run in the sandbox, with a chart and a checked narrative."""
    if not isinstance(question, str) or not question.strip():
        raise ParameterError("question", "the question is empty")
    if len(question) > MAX_QUESTION_CHARS:
        raise ParameterError("question", f"the question is longer than {MAX_QUESTION_CHARS:,} characters")
    if not tables:
        raise ParameterError("tables", "choose at least one table to ask about")
    if len(tables) > MAX_TABLES:
        raise ParameterError("tables", f"at most {MAX_TABLES} tables can be in scope at once")
    if not 0 <= retries <= 5:
        raise ParameterError("retries", "retries must be between 0 and 5")
    step = on_step or (lambda _message: None)
    rows = [service.table(owner, name) for name in tables]  # NotFound for another owner's, as for a missing one
    schema = "\n\n".join(describe_for_model(t["name"], t["profile"]) for t in rows)
    if service.backend_for is None:
        raise ChatCoreError("no model is available to write the query; use a model-free analysis or write SQL")
    step("loading the model")
    backend = service.backend_for(model)
    hold = service.hold(backend) if service.hold is not None else contextlib.nullcontext()
    with hold:
        named = [c for t in rows for c in mentioned_columns(question, t["profile"])]
        prompt = question.strip() + (f"\n(Columns: {', '.join(named)})" if named else "")
        messages = examples(rows[0]["name"], rows[0]["profile"], prefer=named) + [{"role": "user", "content": prompt}]
        system = SQL_SYSTEM.format(schema=schema)
        attempts: list[dict[str, Any]] = []
        result = None
        for attempt in range(retries + 1):
            step("writing the query" if attempt == 0 else f"correcting the query (try {attempt + 1})")
            reply = _generate(backend, messages, system, max_new_tokens=SQL_TOKENS, seed=seed)
            sql = extract_sql(reply.text)
            try:
                if sql is None:
                    raise QueryFailed("the reply holds no SELECT query")
                step("checking and running the query")
                result = service.warehouse.query(owner, sql, plan_first=True)
                attempts.append({"sql": result.sql, "error": None})
                break
            except DataError as exc:
                attempts.append({"sql": sql or reply.text, "error": str(exc)})
                messages += [{"role": "assistant", "content": reply.text},
                             {"role": "user", "content": RETRY.format(error=exc)}]
        if result is None:
            raise QueryFailed(f"the model did not write a query that runs in {retries + 1} "
                              f"tr{'ies' if retries else 'y'}; the last error: {attempts[-1]['error']} "
                              f"(its query: {attempts[-1]['sql']})")
        step("writing the narrative")
        table_text = result_text(result.names, result.rows)
        narrative_reply = _generate(
            backend, [{"role": "user", "content": f"Question: {question.strip()}\n\nQuery:\n{result.sql}\n\n"
                                                  f"Result:\n{table_text}"}],
            NARRATIVE_SYSTEM, max_new_tokens=NARRATIVE_TOKENS, seed=seed)
    narrative = narrative_reply.text.strip()
    unverified = unverified_numbers(narrative, result.rows, also_in=question)
    info = getattr(backend, "info", None)
    record = {"model": backend.model_name, "seed": reply.seed, "attempts": attempts,
              "weights_sha256": getattr(info, "weights_sha256", None)}
    return service.answer_from(owner, result, kind="ask", question=question.strip(), narrative=narrative,
                               unverified=unverified, record=record, params={"tables": list(tables)}, save=save)
