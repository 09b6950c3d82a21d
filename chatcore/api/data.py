"""Data analysis over HTTP: ``/v1/data`` (tables, profiles, sandboxed queries, analyses, questions, answers).

Endpoints (same keys as ``/v1``; each runs as the key's owner, and another owner's table id, table name or
answer id answers exactly as a missing one: 404 with the same message). Bad input is 400 naming the
parameter in ``error.param``.

- ``GET /v1/data/tables[?collection=NAME]``; ``POST /v1/data/tables`` (``multipart/form-data``: ``file`` and the
  optional ``name``, ``collection``, ``sheet``, ``bad_rows=refuse|skip``): 201 with the table, its profile and
  its load report. A workbook of several sheets without ``sheet`` is 400 naming them (``param: sheet``).
- ``GET /v1/data/tables/{id|name}`` (with its profile); ``DELETE`` it (undone by
  ``POST /v1/data/tables/{id}/restore``); ``GET /v1/data/tables/{id|name}/profile[?refresh=true]``.
- ``POST /v1/data/query`` ``{"sql", "question"?, "save"?}``, ``POST /v1/data/analyses``
  ``{"table", "kind", "params"?, "save"?}`` and ``POST /v1/data/ask`` ``{"question", "tables", "model"?, "seed"?,
  "save"?}``: an answer (``object: data.answer``): the SQL, its result, a chart, a narrative, its record.
- ``GET /v1/data/answers[?table=NAME&limit=N]``; ``GET /v1/data/answers/{id}[?format=json|csv]``.

A refused file is 400 ``invalid_file``; a query the sandbox refuses 400 ``query_refused``; SQL that does not
parse or bind 400 ``invalid_sql``; a query past the time limit 408 ``query_timeout``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Awaitable, Callable

from fastapi import Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from chatcore.api.errors import APIError, from_chatcore
from chatcore.api.evaluation import body_of, int_param
from chatcore.api.library import not_found, parse_id
from chatcore.core.errors import ChatCoreError, NotFoundError, ParameterError
from chatcore.services.chat import check_user_text
from chatcore.services.data import DataService, LoadRefused, QueryFailed, QueryRefused, QueryTimeout
from chatcore.services.data.analyses import ANALYSES
from storage.data import check_table_name
from storage.errors import InvalidValue, NotFound
from storage.library import DEFAULT_COLLECTION, check_collection_name, get_collection

BAD_ROWS = ("refuse", "skip")
ANSWER_FORMATS = ("json", "csv")
MAX_ANSWERS = 500
_HIDDEN = ("owner", "collection_id")  # the owner is the caller; the collection is shown by name
_RESERVED_PARAMS = ("owner", "table", "kind", "save")  # DataService.analyze's own arguments


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class QueryBody(_Body):
    sql: str
    question: str | None = None  # what the query answers (kept with the answer, and its chart's title)
    save: bool = True


class AnalysisBody(_Body):
    table: int | str
    kind: str
    params: dict[str, Any] = Field(default_factory=dict)
    save: bool = True


class AskBody(_Body):
    question: str
    tables: list[str]
    model: str | None = None
    seed: int | None = None
    save: bool = True


def table_json(table: dict[str, Any], *, profile: bool = True) -> dict[str, Any]:
    """A table as the API shows it (``profile`` left out of listings: it is the heavy part)."""
    hidden = _HIDDEN if profile else (*_HIDDEN, "profile")
    return {"object": "data.table", **{k: v for k, v in table.items() if k not in hidden}}


def answer_json(answer: Any) -> dict[str, Any]:
    return {"object": "data.answer", **answer.to_dict()}


def table_ref(value: str) -> int | str:
    """A table in a path: its id (digits), or its SQL name (which starts with a letter)."""
    return int(value) if value.isdigit() else value


async def data_call(what: str, fn: Callable[[], Any], *, param: str | None = None,
                    sql_param: str = "sql") -> Any:
    """``fn()`` off the event loop, each data error as its status: a missing or another owner's table or answer
    as one 404; a refused file, a refused or failed query and a bad value as 400 naming the parameter
    (``param`` for storage's refusals, ``sql_param`` for the query's); a slow query as 408."""
    try:
        return await run_in_threadpool(fn)
    except (NotFound, NotFoundError) as exc:
        raise not_found(exc, what) from None
    except ParameterError as exc:
        raise APIError(400, str(exc), param=exc.param, code="invalid_value") from None
    except InvalidValue as exc:
        raise APIError(400, str(exc), param=param, code="invalid_value") from None
    except LoadRefused as exc:
        raise APIError(400, str(exc), param="file", code="invalid_file") from None
    except QueryRefused as exc:
        raise APIError(400, str(exc), param=sql_param, code="query_refused") from None
    except QueryFailed as exc:
        raise APIError(400, str(exc), param=sql_param, code="invalid_sql") from None
    except QueryTimeout as exc:
        raise APIError(408, str(exc), param=sql_param, code="query_timeout") from None
    except ChatCoreError as exc:
        raise from_chatcore(exc) from None


def bool_param(raw: Request, name: str) -> bool:
    """An optional ``true``/``false`` query parameter (false when absent)."""
    value = raw.query_params.get(name, "false").lower()
    if value not in ("true", "false", "1", "0"):
        raise APIError(400, f"{name} must be true or false, got {value!r}", param=name)
    return value in ("true", "1")


class DataServing:
    """The ``/v1/data`` endpoints over one :class:`DataService`; ``authenticate`` says who a request runs as;
    ``resolve_model`` turns a request's ``model`` into the spec the service loads (``None``: the default), and
    refuses one the server does not have (404) or is still loading (503)."""

    def __init__(self, data: DataService | None, authenticate: Callable[[Request], Awaitable[str]],
                 resolve_model: Callable[[str], str | None] | None = None) -> None:
        self.data = data
        self.authenticate = authenticate
        self.resolve_model = resolve_model

    async def _owner(self, raw: Request) -> tuple[str, DataService]:
        owner = await self.authenticate(raw)
        if self.data is None:
            raise APIError(404, "this server keeps no history, so it has no data tables", code="no_data")
        return owner, self.data

    # -- tables ---------------------------------------------------------------------------------------------

    async def list_tables(self, raw: Request) -> Response:
        owner, data = await self._owner(raw)
        collection = raw.query_params.get("collection")

        def listing() -> list[dict[str, Any]]:
            if collection is not None:  # a wrong name is a 404, not an empty list
                try:
                    get_collection(data.store, owner, collection)
                except NotFound as exc:
                    raise not_found(exc, "collection", "collection") from None
            return data.tables(owner, collection=collection)

        tables = await data_call("table", listing)
        return JSONResponse({"object": "list", "data": [table_json(t, profile=False) for t in tables]})

    async def add_table(self, raw: Request) -> Response:
        """Load an uploaded file as a table (streamed to a temporary file, never whole in memory); 201."""
        owner, data = await self._owner(raw)
        if not raw.headers.get("content-type", "").startswith("multipart/form-data"):
            raise APIError(400, "send the table as multipart/form-data: the field 'file', and optionally 'name', "
                                "'collection', 'sheet' and 'bad_rows'", param="file")
        try:
            form = await raw.form(max_files=1)
        except Exception as exc:  # a malformed or over-long multipart body
            raise APIError(400, f"the multipart body could not be read: {exc}", param="file") from None
        try:
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise APIError(400, "send the table as a file in the field 'file'", param="file")
            fields = {key: form.get(key) for key in ("name", "collection", "sheet", "bad_rows")}
            for key, value in fields.items():
                if value is not None and not isinstance(value, str):
                    raise APIError(400, f"{key} must be text", param=key)
            options = self._load_options(fields)
            filename = Path(upload.filename or "").name
            if not filename:
                raise APIError(400, "the uploaded file has no name (its extension says how to read it)", param="file")
            if upload.size is not None and upload.size > data.max_bytes:  # never copied to disk
                raise APIError(400, f"{filename} is {upload.size / 2**20:,.0f} MB, over the limit of "
                                    f"{data.max_bytes / 2**20:,.0f} MB (set CHATCORE_DATA_MAX_MB to raise it)",
                               param="file", code="invalid_file")
            table = await data_call("table", lambda: self._load(data, owner, upload.file, filename, options),
                                    param="name")
        finally:
            await form.close()
        return JSONResponse(table_json(table), status_code=201)

    @staticmethod
    def _load_options(fields: dict[str, Any]) -> dict[str, Any]:
        """The form's name, collection, sheet and bad_rows, checked: a bad one is 400 naming it."""
        bad_rows = fields["bad_rows"] or "refuse"
        if bad_rows not in BAD_ROWS:
            raise APIError(400, f"bad_rows must be one of {', '.join(BAD_ROWS)}, got {bad_rows!r}", param="bad_rows")
        try:
            collection = check_collection_name(fields["collection"] or DEFAULT_COLLECTION)
        except InvalidValue as exc:
            raise APIError(400, str(exc), param="collection", code="invalid_value") from None
        name = fields["name"] or None
        if name is not None:
            try:
                name = check_table_name(name)
            except InvalidValue as exc:
                raise APIError(400, str(exc), param="name", code="invalid_value") from None
        return {"name": name, "collection": collection, "sheet": fields["sheet"] or None, "bad_rows": bad_rows}

    @staticmethod
    def _load(data: DataService, owner: str, source: Any, filename: str, options: dict[str, Any]) -> dict[str, Any]:
        """Copy the upload to a temporary file, check its sheet, and add it (blocking: call off the loop)."""
        with tempfile.TemporaryDirectory(prefix="chatcore-upload-") as folder:
            path = Path(folder) / filename
            with path.open("wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
            DataServing._check_sheet(data, path, filename, options["sheet"])
            return data.add(owner, path, filename=filename, **options)

    @staticmethod
    def _check_sheet(data: DataService, path: Path, filename: str, sheet: str | None) -> None:
        """A workbook of several sheets needs ``sheet``, one of its own; only a workbook has sheets."""
        if path.suffix.lower() != ".xlsx":
            if sheet is not None:
                raise APIError(400, "a sheet can only be chosen for an Excel (.xlsx) file", param="sheet")
            return
        if path.stat().st_size == 0:
            return  # the service's own words for an empty file
        names = data.sheets(path)
        if sheet is None and len(names) > 1:
            raise APIError(400, f"{filename} has {len(names)} sheets ({', '.join(names)}); choose one with the "
                                "field 'sheet'", param="sheet", code="choose_sheet")
        if sheet is not None and sheet not in names:
            raise APIError(400, f"{filename} has no sheet {sheet!r}; its sheets are {', '.join(names)}",
                           param="sheet", code="choose_sheet")

    async def get_table(self, raw: Request, ref: str) -> Response:
        owner, data = await self._owner(raw)
        return JSONResponse(table_json(await data_call("table", lambda: data.table(owner, table_ref(ref)))))

    async def delete_table(self, raw: Request, ref: str) -> Response:
        owner, data = await self._owner(raw)
        table = await data_call("table", lambda: data.remove(owner, table_ref(ref)))
        return JSONResponse({"object": "data.table", "id": table["id"], "name": table["name"], "deleted": True,
                             "restore": f"POST /v1/data/tables/{table['id']}/restore"})

    async def restore_table(self, raw: Request, table_id: str) -> Response:
        owner, data = await self._owner(raw)
        number = parse_id(table_id, "table")
        return JSONResponse(table_json(await data_call("table", lambda: data.restore(owner, number), param="name")))

    async def profile(self, raw: Request, ref: str) -> Response:
        owner, data = await self._owner(raw)
        refresh = bool_param(raw, "refresh")

        def read() -> dict[str, Any]:
            table = data.table(owner, table_ref(ref))
            return {"object": "data.profile", "table": table["name"], "table_id": table["id"],
                    **data.profile(owner, table["id"], refresh=refresh)}

        return JSONResponse(await data_call("table", read))

    # -- answers --------------------------------------------------------------------------------------------

    async def query(self, raw: Request) -> Response:
        """Run the caller's SQL in the sandbox; the answer, saved unless ``save`` is false."""
        owner, data = await self._owner(raw)
        body = await body_of(raw, QueryBody)
        if body.question is not None:
            await data_call("answer", lambda: check_user_text(body.question, "question"))
        answer = await data_call("answer", lambda: data.query(owner, body.sql, question=body.question, save=body.save))
        return JSONResponse(answer_json(answer))

    async def analyze(self, raw: Request) -> Response:
        """A model-free analysis (``groupby``, ``correlation``, ``compare``, ``regression``) of one table."""
        owner, data = await self._owner(raw)
        body = await body_of(raw, AnalysisBody)
        if body.kind not in ANALYSES:
            raise APIError(400, f"kind must be one of {', '.join(ANALYSES)}, got {body.kind!r}", param="kind")
        clash = [key for key in body.params if key in _RESERVED_PARAMS or not key.isidentifier()]
        if clash:
            raise APIError(400, f"params may not hold {clash[0]!r}", param="params")
        answer = await data_call("table", lambda: data.analyze(owner, body.table, body.kind, save=body.save,
                                                               **body.params))
        return JSONResponse(answer_json(answer))

    async def ask(self, raw: Request) -> Response:
        """A question the model answers by writing SQL over ``tables`` (it sees their schemas, never rows)."""
        owner, data = await self._owner(raw)
        body = await body_of(raw, AskBody)

        def answer() -> Any:
            check_user_text(body.question, "question")
            if not body.tables:
                raise ParameterError("tables", "name at least one table the question is about")
            for name in dict.fromkeys(body.tables):  # a missing or another owner's table: 404, before the model
                data.table(owner, name)
            model = body.model
            if model is not None and self.resolve_model is not None:
                model = self.resolve_model(model)
            return data.ask(owner, body.question, tables=list(dict.fromkeys(body.tables)), model=model,
                            seed=body.seed, save=body.save)

        # The model's SQL is the model's, not the caller's: a refusal or failure names the question.
        return JSONResponse(answer_json(await data_call("table", answer, sql_param="question")))

    async def list_answers(self, raw: Request) -> Response:
        owner, data = await self._owner(raw)
        table = raw.query_params.get("table") or None
        limit = int_param(raw, "limit", 1) or 50
        if limit > MAX_ANSWERS:
            raise APIError(400, f"limit must be at most {MAX_ANSWERS}, got {limit}", param="limit")
        answers = await data_call("answer", lambda: data.answers(owner, table=table, limit=limit))
        return JSONResponse({"object": "list", "data": [answer_json(a) for a in answers]})

    async def get_answer(self, raw: Request, answer_id: str) -> Response:
        """An answer as JSON, or with ``format=csv`` its result as a CSV download."""
        owner, data = await self._owner(raw)
        number = parse_id(answer_id, "answer")
        form = raw.query_params.get("format", "json")
        if form not in ANSWER_FORMATS:
            raise APIError(400, f"format must be one of {', '.join(ANSWER_FORMATS)}, got {form!r}", param="format")
        answer = await data_call("answer", lambda: data.answer(owner, number))
        if form == "csv":
            return PlainTextResponse(answer.to_csv(), media_type="text/csv; charset=utf-8",
                                     headers={"Content-Disposition": f'attachment; filename="answer-{number}.csv"'})
        return JSONResponse(answer_json(answer))
