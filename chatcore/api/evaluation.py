"""Evaluation and the arena over HTTP: ``/v1/eval`` (test sets, runs, reports) and ``/v1/arena``.

Endpoints (same keys as ``/v1``; each runs as the key's owner, and another owner's id answers exactly as a
missing one: 404 with the same message). Bad input is 400 naming the parameter in ``error.param``.

- ``GET /v1/eval/test_sets``; ``POST /v1/eval/test_sets`` (``multipart/form-data`` with ``file`` and an optional
  ``name``, or JSON ``{"name", "filename", "content"}``; every row is validated, a bad one named by line and
  field); ``POST /v1/eval/test_sets/example`` (the shipped science set); ``GET /v1/eval/test_sets/{id|name}``
  (with its items; ``?limit=N``); ``DELETE`` it (undone by ``POST /v1/eval/test_sets/{id}/restore``).
- ``POST /v1/eval/runs`` ``{"test_set", "models", "scorers"?, "judge"?, "max_new_tokens"?, "collections"?}``:
  202, the run computing in the background; ``GET /v1/eval/runs``; ``GET /v1/eval/runs/{id}`` (progress:
  ``done``, ``total``, ``fraction``, the ``model`` at work, ``finished`` once nothing more will change);
  ``POST .../cancel``, ``.../resume``, ``.../rescore`` ``{"scorers", "judge"?}``; ``GET .../outputs``.
- ``GET /v1/eval/report?runs=1,2&scorer=NAME&format=json|md|csv``.
- ``POST /v1/arena/battles`` ``{"prompt", "models", "max_new_tokens"?, "temperature"?, "seed"?}``: both answers,
  the names hidden (``model_a``/``model_b`` null); ``POST /v1/arena/battles/{id}/vote`` ``{"vote"}`` reveals
  them; ``GET /v1/arena/battles[/{id}]``; ``GET /v1/arena/leaderboard``; ``GET /v1/arena/votes?format=json|jsonl``.
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

from fastapi import Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.concurrency import run_in_threadpool

from chatcore.api.errors import APIError, from_validation
from chatcore.api.library import parse_id
from chatcore.core.errors import ParameterError
from chatcore.core.params import GenerationParams
from storage.errors import InvalidValue, NotFound

REPORT_FORMATS = ("json", "md", "csv")
VOTE_FORMATS = ("json", "jsonl")
ARENA_GENERATION = {"max_new_tokens": 512, "temperature": 0.7}  # a chat answer, not an evaluation's short one


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TestSetBody(_Body):
    """A test set sent as JSON: the file's text and its name (whose extension says the format)."""

    __test__ = False  # pytest: a request body named Test*, not a test case

    filename: str
    content: str
    name: str | None = None


class RunBody(_Body):
    test_set: int | str
    models: list[str]
    scorers: list[str] | None = None
    judge: str | None = None
    max_new_tokens: int | None = None
    collections: list[str] | None = None  # answer from these library collections (["all"]: the whole library)


class RescoreBody(_Body):
    scorers: list[str]
    judge: str | None = None


class BattleBody(_Body):
    prompt: str
    models: list[str]
    max_new_tokens: int | None = None
    temperature: float | None = None
    seed: int | None = None


class VoteBody(_Body):
    vote: str


async def body_of(raw: Request, model: type[_Body]) -> Any:
    """The JSON body validated as ``model``: 400 naming the first wrong field."""
    try:
        data = await raw.json()
    except ValueError:
        raise APIError(400, "the body must be a JSON object", param=None) from None
    if not isinstance(data, dict):
        raise APIError(400, "the body must be a JSON object", param=None)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation(exc) from None


async def call(what: str, fn: Callable[[], Any], *, param: str | None = None,
               names: dict[str, str] | None = None) -> Any:
    """``fn()`` off the event loop: ``NotFound`` (another owner's id, or none) as one 404; a refused value as 400
    naming the request's parameter (``names`` maps the service's names to the request's; ``param`` is for
    storage's refusals, which name none)."""
    try:
        return await run_in_threadpool(fn)
    except NotFound as exc:
        raise APIError(404, str(exc), code=f"{what}_not_found") from None
    except ParameterError as exc:
        raise APIError(400, str(exc), param=(names or {}).get(exc.param, exc.param), code="invalid_value") from None
    except InvalidValue as exc:
        raise APIError(400, str(exc), param=param, code="invalid_value") from None


def set_ref(value: str) -> int | str:
    """A test set in a path: its id, or its name."""
    return int(value) if value.isdigit() else value


def test_set_json(found: dict[str, Any]) -> dict[str, Any]:
    return {"object": "eval.test_set", **{k: v for k, v in found.items() if k != "owner"}}


def run_json(run: dict[str, Any], progress: Any) -> dict[str, Any]:
    """A run with its live progress; ``finished`` is true once nothing more will change."""
    fields = {k: v for k, v in run.items() if k not in ("owner", "finished", "done", "total", "status", "error")}
    return {"object": "eval.run", **fields, "status": progress.status, "done": progress.done, "total": progress.total,
            "fraction": round(progress.fraction, 4), "model": progress.model,
            "items_per_minute": progress.items_per_minute, "error": progress.error,
            "description": progress.describe(), "finished": progress.finished, "finished_at": run["finished"]}


def output_json(row: dict[str, Any]) -> dict[str, Any]:
    return {"object": "eval.output", "id": row["id"], "item": row["key"], "model": row["model"], "text": row["text"],
            "choices": row["choices"], "sources": row["sources"], "error": row["error"], "scores": row["scores"],
            "record": row["record"], "question": row["item"], "created": row["created"]}


def battle_json(view: Any) -> dict[str, Any]:
    return {"object": "arena.battle", **view.to_dict()}


def int_param(raw: Request, name: str, low: int) -> int | None:
    """An optional whole-number query parameter of at least ``low``."""
    value = raw.query_params.get(name)
    if value is None:
        return None
    if not value.isdigit() or int(value) < low:
        raise APIError(400, f"{name} must be a whole number of at least {low}, got {value!r}", param=name)
    return int(value)


class EvaluationServing:
    """The ``/v1/eval`` and ``/v1/arena`` endpoints over one ``Evaluations`` and one ``Arena``."""

    def __init__(self, evaluations: Any, arena: Any, authenticate: Callable[[Request], Awaitable[str]]) -> None:
        self.evaluations = evaluations
        self.arena = arena
        self.authenticate = authenticate

    async def _owner(self, raw: Request) -> str:
        owner = await self.authenticate(raw)
        if self.evaluations is None or self.arena is None:
            raise APIError(404, "this server keeps no history, so it has no evaluations", code="no_history")
        return owner

    # -- test sets ------------------------------------------------------------------------------------------

    async def list_test_sets(self, raw: Request) -> Response:
        owner = await self._owner(raw)
        rows = await call("test_set", lambda: self.evaluations.test_sets(owner))
        return JSONResponse({"object": "list", "data": [test_set_json(r) for r in rows]})

    async def add_test_set(self, raw: Request) -> Response:
        """A test set from a multipart upload or a JSON body; 201 with the stored set."""
        owner = await self._owner(raw)
        kind = raw.headers.get("content-type", "")
        if kind.startswith("multipart/form-data"):
            content, filename, name, where = await self._upload(raw)
        elif kind.startswith("application/json"):
            body = await body_of(raw, TestSetBody)
            content, filename, name, where = body.content, body.filename, body.name, "content"
        else:
            raise APIError(400, "send the test set as multipart/form-data (fields 'file' and 'name') or as JSON "
                                "{\"name\", \"filename\", \"content\"}", param="file")
        try:
            found = await call("test_set", lambda: self.evaluations.add_test_set(owner, content, filename, name),
                               param="name")
        except APIError as exc:
            if exc.status == 400 and exc.param != "name":  # a row's field or the format: the message names it
                exc.param = where
            raise
        return JSONResponse(test_set_json(found), status_code=201)

    async def _upload(self, raw: Request) -> tuple[bytes, str, str | None, str]:
        from chatcore.services.evaluation.testsets import MAX_BYTES

        try:
            form = await raw.form(max_files=1)
        except Exception as exc:  # a malformed or over-long multipart body
            raise APIError(400, f"the multipart body could not be read: {exc}", param="file") from None
        try:
            upload, name = form.get("file"), form.get("name")
            if upload is None or isinstance(upload, str):
                raise APIError(400, "send the test set as a file in the field 'file'", param="file")
            if name is not None and not isinstance(name, str):
                raise APIError(400, "name must be text", param="name")
            if upload.size is not None and upload.size > MAX_BYTES:  # never read into memory
                raise APIError(400, f"{upload.filename} is {upload.size / 2**20:.1f} MiB, over the limit of "
                                    f"{MAX_BYTES / 2**20:.0f} MiB", param="file")
            return await upload.read(), upload.filename or "", name, "file"
        finally:
            await form.close()

    async def add_example(self, raw: Request) -> Response:
        owner = await self._owner(raw)
        found = await call("test_set", lambda: self.evaluations.add_example(owner))
        return JSONResponse(test_set_json(found))

    async def get_test_set(self, raw: Request, ref: str) -> Response:
        owner = await self._owner(raw)
        limit = int_param(raw, "limit", 0)

        def read() -> dict[str, Any]:
            found = self.evaluations.test_set(owner, set_ref(ref))
            items = self.evaluations.items(owner, found["id"])
            shown = items if limit is None else items[:limit]
            return {**test_set_json(found), "data": [item.to_dict() for item in shown]}

        return JSONResponse(await call("test_set", read))

    async def delete_test_set(self, raw: Request, ref: str) -> Response:
        owner = await self._owner(raw)
        found = await call("test_set", lambda: self.evaluations.remove_test_set(owner, set_ref(ref)))
        return JSONResponse({"object": "eval.test_set", "id": found["id"], "name": found["name"], "deleted": True,
                             "restore": f"POST /v1/eval/test_sets/{found['id']}/restore"})

    async def restore_test_set(self, raw: Request, test_set_id: str) -> Response:
        owner = await self._owner(raw)
        number = parse_id(test_set_id, "test set")

        def restore() -> dict[str, Any]:
            self.evaluations.restore_test_set(owner, number)
            return self.evaluations.test_set(owner, number)

        return JSONResponse(test_set_json(await call("test_set", restore, param="name")))

    # -- runs -----------------------------------------------------------------------------------------------

    def _run(self, owner: str, run_id: int) -> dict[str, Any]:
        return run_json(self.evaluations.get_run(owner, run_id), self.evaluations.progress(owner, run_id))

    async def create_run(self, raw: Request) -> Response:
        """Validate, store and start a run in the background: 202 with its progress."""
        owner = await self._owner(raw)
        body = await body_of(raw, RunBody)

        def start() -> dict[str, Any]:
            scope = self._scope(owner, body.collections) if body.collections is not None else None
            generation = {"max_new_tokens": body.max_new_tokens} if body.max_new_tokens is not None else None
            run_id = self.evaluations.create_run(owner, body.test_set, body.models, body.scorers,
                                                 generation=generation, scope=scope, judge=body.judge)
            self.evaluations.start(owner, run_id)
            return self._run(owner, run_id)

        run = await call("test_set", start, names={"model": "models", "scorer": "scorers"})
        return JSONResponse(run, status_code=202)

    def _scope(self, owner: str, names: list[str]) -> Any:
        from chatcore.services.library import ALL, Scope
        from chatcore.services.library.scopes import EmptyScope, check_scope

        library = self.evaluations.library
        if library is None:
            raise APIError(400, "this server has no library to answer from", param="collections")
        if not names:
            raise APIError(400, "name at least one collection (or [\"all\"])", param="collections")
        scope = ALL if "all" in names else Scope(collections=tuple(dict.fromkeys(names)))
        try:
            check_scope(library, owner, scope)
        except NotFound as exc:
            raise APIError(404, str(exc), param="collections", code="collection_not_found") from None
        except EmptyScope as exc:
            raise APIError(400, f"{exc}: add documents with POST /v1/library/documents", param="collections",
                           code="no_documents") from None
        return scope

    async def list_runs(self, raw: Request) -> Response:
        owner = await self._owner(raw)

        def listing() -> list[dict[str, Any]]:
            return [run_json(run, self.evaluations.progress(owner, run["id"])) for run in self.evaluations.runs(owner)]

        return JSONResponse({"object": "list", "data": await call("run", listing)})

    async def get_run(self, raw: Request, run_id: str) -> Response:
        owner = await self._owner(raw)
        number = parse_id(run_id, "run")
        return JSONResponse(await call("run", lambda: self._run(owner, number)))

    async def cancel_run(self, raw: Request, run_id: str) -> Response:
        owner = await self._owner(raw)
        number = parse_id(run_id, "run")

        def cancel() -> dict[str, Any]:
            self.evaluations.cancel(owner, number)
            return self._run(owner, number)

        return JSONResponse(await call("run", cancel))

    async def resume_run(self, raw: Request, run_id: str) -> Response:
        owner = await self._owner(raw)
        number = parse_id(run_id, "run")

        def resume() -> dict[str, Any]:
            self.evaluations.resume(owner, number, background=True)
            return self._run(owner, number)

        return JSONResponse(await call("run", resume), status_code=202)

    async def rescore_run(self, raw: Request, run_id: str) -> Response:
        owner = await self._owner(raw)
        number = parse_id(run_id, "run")
        body = await body_of(raw, RescoreBody)

        def rescore() -> dict[str, Any]:
            written = self.evaluations.rescore(owner, number, body.scorers, judge=body.judge)
            return {**self._run(owner, number), "scores_written": written}

        return JSONResponse(await call("run", rescore, names={"scorer": "scorers"}))

    async def run_outputs(self, raw: Request, run_id: str) -> Response:
        owner = await self._owner(raw)
        number = parse_id(run_id, "run")
        rows = await call("run", lambda: self.evaluations.outputs(owner, number))
        return JSONResponse({"object": "list", "data": [output_json(row) for row in rows]})

    async def report(self, raw: Request) -> Response:
        """``?runs=1,2&scorer=NAME&format=json|md|csv``: the report over the runs (one test set)."""
        from chatcore.services.evaluation.report import disagreements_csv

        owner = await self._owner(raw)
        values = [part.strip() for value in raw.query_params.getlist("runs") for part in value.split(",")]
        if not values or not all(v.isdigit() and int(v) > 0 for v in values):
            raise APIError(400, f"runs must be run ids separated by commas, e.g. runs=1,2; got {','.join(values)!r}",
                           param="runs")
        form = raw.query_params.get("format", "json")
        if form not in REPORT_FORMATS:
            raise APIError(400, f"format must be one of {', '.join(REPORT_FORMATS)}, got {form!r}", param="format")
        scorer = raw.query_params.get("scorer") or None
        run_ids = list(dict.fromkeys(map(int, values)))
        report = await call("run", lambda: self.evaluations.report(owner, run_ids, scorer), names={"run": "runs"})
        if form == "md":
            return PlainTextResponse(report.to_markdown(), media_type="text/markdown; charset=utf-8")
        if form == "csv":
            name = f"report-runs-{'-'.join(map(str, report.runs))}.csv"
            return PlainTextResponse(disagreements_csv(report), media_type="text/csv; charset=utf-8",
                                     headers={"Content-Disposition": f'attachment; filename="{name}"'})
        return JSONResponse({"object": "eval.report", **report.to_dict()})

    # -- the arena ------------------------------------------------------------------------------------------

    async def create_battle(self, raw: Request) -> Response:
        """Two of ``models`` answer ``prompt`` (blocking, off the event loop); the names stay hidden."""
        owner = await self._owner(raw)
        body = await body_of(raw, BattleBody)
        settings = {"max_new_tokens": body.max_new_tokens, "temperature": body.temperature, "seed": body.seed}

        def battle() -> Any:
            params = GenerationParams.create(**{**ARENA_GENERATION,
                                                **{k: v for k, v in settings.items() if v is not None}})
            battle_id = self.arena.start(owner, body.prompt, body.models)
            view = self.arena.battle(owner, battle_id)
            for view in self.arena.answer(owner, battle_id, params):
                pass
            return view

        view = await call("battle", battle, names={"message": "prompt"})  # check_user_text's name for the text
        return JSONResponse(battle_json(view))

    async def vote(self, raw: Request, battle_id: str) -> Response:
        owner = await self._owner(raw)
        number = parse_id(battle_id, "battle")
        body = await body_of(raw, VoteBody)
        return JSONResponse(battle_json(await call("battle", lambda: self.arena.vote(owner, number, body.vote), param="vote")))

    async def get_battle(self, raw: Request, battle_id: str) -> Response:
        owner = await self._owner(raw)
        number = parse_id(battle_id, "battle")
        return JSONResponse(battle_json(await call("battle", lambda: self.arena.battle(owner, number))))

    async def list_battles(self, raw: Request) -> Response:
        from chatcore.services.evaluation.arena import view_of
        from storage.evaluation import battles

        owner = await self._owner(raw)
        rows = await call("battle", lambda: battles(self.arena.store, owner))
        return JSONResponse({"object": "list", "data": [battle_json(view_of(row)) for row in rows]})

    async def leaderboard(self, raw: Request) -> Response:
        owner = await self._owner(raw)
        min_votes = int_param(raw, "min_votes", 1)
        board = await call("battle", lambda: self.arena.leaderboard(owner, **({"min_votes": min_votes} if min_votes else {})))
        return JSONResponse({"object": "arena.leaderboard", **board.to_dict()})

    async def votes(self, raw: Request) -> Response:
        """Every voted battle with both names (``format=jsonl``: JSON Lines, as ``chatcore arena export``)."""
        owner = await self._owner(raw)
        form = raw.query_params.get("format", "json")
        if form not in VOTE_FORMATS:
            raise APIError(400, f"format must be one of {', '.join(VOTE_FORMATS)}, got {form!r}", param="format")
        records = await call("battle", lambda: self.arena.export(owner))
        if form == "jsonl":
            text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
            return PlainTextResponse(text, media_type="application/x-ndjson; charset=utf-8")
        return JSONResponse({"object": "list", "data": records})
