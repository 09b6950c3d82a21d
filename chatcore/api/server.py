"""The OpenAI-compatible HTTP API: ``GET /v1/models`` and ``POST /v1/chat/completions``.

Mounted on the web app's server (:func:`mount_api`) or served alone (:func:`create_api_app`). The
official ``openai`` client works against it unmodified. Differences from OpenAI's own API:

- Unset sampling parameters take ChatCore's defaults (temperature 0.7, top_p 0.95, top_k 50,
  repetition_penalty 1.1), not OpenAI's; send ``temperature: 0`` for greedy answers. ``top_k`` and
  ``repetition_penalty`` are accepted as extra fields, as vLLM accepts them.
- ``n`` must be 1; ``logprobs``, tools and JSON response formats are refused with 400.
- Every exchange is saved to history (source ``api``) unless the request says ``"store": false``.
  The response's ``chatcore`` object carries the ``conversation_id`` and the ``seed`` used.
- An answer stopped on the server (the server shutting down, or Stop) finishes with ``"stop"``; a
  remote backend's failure mid-answer returns 502 (non-streaming) or an ``error`` event (streaming).
- At most ``max_running`` answers decode at once and ``max_waiting`` more wait their turn; a request
  past that gets 429 ``server_busy`` with ``Retry-After`` at once (the ``openai`` client retries it).

Who a request runs as: with ``api_key`` set (``--api-key`` or ``CHATCORE_API_KEY``), that key runs as
the single-user owner ``local``; a key issued by ``chatcore users key NAME`` runs as NAME. Once a key
or an account exists, a request without a valid key gets 401; otherwise the API is open (single
user, 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import threading
import time
import uuid
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.routing import Mount

from chatcore.core.chat import ROLES, Message
from chatcore.core.errors import (
    ChatCoreError,
    ContextOverflowError,
    ModelError,
    ParameterError,
)
from chatcore.core.events import Finished, Started, TextDelta
from chatcore.core.params import GenerationParams
from chatcore.core.settings import DEFAULT_CONCURRENCY
from chatcore.services.chat import ChatService, Saved
from chatcore.services.models import ModelNotReadyError
from storage import LOCAL_OWNER

API_PREFIX = "/v1"
_SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "repetition_penalty", "seed", "stop")
_FINISH = {"stop": "stop", "length": "length", "cancelled": "stop"}
# How often a non-streaming request checks whether its client has gone away (seconds).
_DISCONNECT_POLL_S = 0.5
# Answers decoding at once (one default everywhere, see core.settings) and answers allowed to wait for a turn.
MAX_RUNNING = DEFAULT_CONCURRENCY
MAX_WAITING = 32
BUSY_RETRY_AFTER_S = 2


class APIError(Exception):
    """An error answered with OpenAI's error body: ``{"error": {message, type, param, code}}``."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.type, self.param, self.code = status, type, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": str(self), "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        if self.status == 429:
            headers = {"Retry-After": str(BUSY_RETRY_AFTER_S)}
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


class Admission:
    """A bounded line for answers: ``running`` decode at once, ``waiting`` more queue, the rest get 429.

    Refusing at once is the point: past the line's size a client hears "busy, try again" instead of
    hanging on an ever longer queue. A turn is released when the answer's worker ends, whatever ended it.
    """

    def __init__(self, running: int = MAX_RUNNING, waiting: int = MAX_WAITING) -> None:
        if running < 1 or waiting < 0:
            raise ValueError("running must be at least 1 and waiting at least 0")
        self.running, self.waiting = running, waiting
        self._admitted = 0  # running plus waiting; touched on the event loop only
        self._turns: asyncio.Semaphore | None = None

    @property
    def admitted(self) -> int:
        return self._admitted

    async def enter(self) -> Callable[[], None]:
        """Wait for a turn; returns its release, callable once from any thread. Raises 429 when full."""
        if self._admitted >= self.running + self.waiting:
            raise APIError(429, f"ChatCore is busy: {self.running} answers are running and {self.waiting} "
                                "are waiting; try again in a few seconds",
                           type="server_error", code="server_busy")
        if self._turns is None:
            self._turns = asyncio.Semaphore(self.running)
        self._admitted += 1
        try:
            await self._turns.acquire()
        except BaseException:
            self._admitted -= 1
            raise
        loop, lock, released = asyncio.get_running_loop(), threading.Lock(), [False]

        def free() -> None:
            self._admitted -= 1
            self._turns.release()

        def release() -> None:
            with lock:
                if released[0]:
                    return
                released[0] = True
            try:
                loop.call_soon_threadsafe(free)
            except RuntimeError:  # the loop has closed: the server is gone, and its line with it
                pass

        return release


def _translate(exc: Exception) -> APIError | None:
    """ChatCore's errors as the status and body an OpenAI client expects; ``None`` for any other."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, ParameterError):
        param = {"max_new_tokens": "max_tokens", "message": "messages"}.get(exc.param, exc.param)
        return APIError(400, str(exc).replace("max_new_tokens", "max_tokens"), param=param, code="invalid_value")
    if isinstance(exc, ContextOverflowError):
        return APIError(400, str(exc).replace("max_new_tokens", "max_tokens"), param="messages",
                        code="context_length_exceeded")
    if isinstance(exc, ModelNotReadyError):
        return APIError(503, str(exc), type="server_error", code="model_not_ready")
    if isinstance(exc, ModelError):
        return APIError(502, str(exc), type="server_error", code="backend_error")
    return None


# -- the request ------------------------------------------------------------------------------


def _content_text(content: Any, i: int) -> str:
    """A message's text: a string, or a list of ``{"type": "text", "text": ...}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise APIError(400, f"messages[{i}].content: only text parts are supported", param="messages")
            parts.append(part["text"])
        return "".join(parts)
    raise APIError(400, f"messages[{i}].content must be a string or a list of text parts", param="messages")


def parse_messages(raw: Any) -> tuple[str | None, list[Message], str]:
    """The system prompt, the earlier turns and the new user message of a request's ``messages``."""
    if not isinstance(raw, list) or not raw:
        raise APIError(400, "messages must be a non-empty list", param="messages")
    system_parts, turns = [], []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise APIError(400, f"messages[{i}] must be an object", param="messages")
        role = {"developer": "system"}.get(item.get("role"), item.get("role"))
        if role not in ROLES:
            raise APIError(400, f"messages[{i}].role must be one of system, user, assistant; got {item.get('role')!r}",
                           param="messages")
        text = _content_text(item.get("content"), i)
        if role == "system":
            system_parts.append(text)
        else:
            turns.append(Message(role, text))
    if not turns or turns[-1].role != "user":
        raise APIError(400, "the last message must be a user message", param="messages")
    return "\n\n".join(system_parts) or None, turns[:-1], turns[-1].content


def parse_params(body: dict[str, Any], max_new_tokens_limit: int | None) -> GenerationParams:
    """Validated sampling parameters; anything ChatCore cannot honour is refused, not ignored."""
    if body.get("n") not in (None, 1):
        raise APIError(400, "n must be 1: ChatCore returns one answer per request", param="n")
    if body.get("logprobs"):
        raise APIError(400, "logprobs are not supported", param="logprobs")
    if body.get("tools") or body.get("functions"):
        raise APIError(400, "tools and function calling are not supported", param="tools")
    fmt = body.get("response_format")
    if fmt not in (None, {"type": "text"}):
        raise APIError(400, "only the text response format is supported", param="response_format")
    for name in ("frequency_penalty", "presence_penalty"):
        if body.get(name) not in (None, 0, 0.0):
            raise APIError(400, f"{name} is not supported; use repetition_penalty (1 to 2)", param=name)
    values = {k: body.get(k) for k in _SAMPLING_FIELDS}
    max_tokens, max_completion = body.get("max_tokens"), body.get("max_completion_tokens")
    values["max_new_tokens"] = max_completion if max_completion is not None else max_tokens
    try:
        return GenerationParams.create(max_new_tokens_limit=max_new_tokens_limit, **values)
    except ParameterError as exc:
        if exc.param == "max_new_tokens":
            name = "max_completion_tokens" if max_completion is not None else "max_tokens"
            raise APIError(400, str(exc).replace("max_new_tokens", name), param=name, code="invalid_value") from exc
        raise


# -- running an answer off the event loop -------------------------------------------------------

_END = object()


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


async def _in_thread(events: Callable[[], Iterator[Any]], cancel: threading.Event) -> AsyncIterator[Any]:
    """Iterate ``events()`` on a worker thread, so torch never blocks the event loop.

    Leaving early (the client went away, the task was cancelled) sets ``cancel``: the decoder stops at
    its next token, and the worker drains the rest so the partial answer is saved as stopped.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()

    def put(item: Any) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop has closed (server shutdown): nobody is listening
            cancel.set()

    def work() -> None:
        try:
            for event in events():
                put(event)
        except BaseException as exc:  # handed to the request, which answers it
            put(_Failed(exc))
        finally:
            put(_END)

    threading.Thread(target=work, name="api-answer", daemon=True).start()
    try:
        while True:
            item = await queue.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.exc
            yield item
    finally:
        cancel.set()


# -- the app ----------------------------------------------------------------------------------


class _API:
    """The handlers, over one model manager, one store (or ``None``: never save) and the keys."""

    def __init__(self, manager: Any, store: Any | None, api_key: str | None,
                 admission: Admission | None = None) -> None:
        from chatcore.services.accounts import Accounts

        self.admission = admission or Admission()
        self.manager = manager
        self.store = store
        self.api_key = api_key or None
        self.accounts = Accounts(store) if store is not None else None

    def owner(self, request: Request) -> str:
        """Who the request runs as, from its bearer key; 401 for a missing or wrong key when keys are on."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""
        if self.api_key and token and hmac.compare_digest(token.encode(), self.api_key.encode()):
            return LOCAL_OWNER
        if token and self.accounts is not None:
            owner = self.accounts.owner_for_key(token)
            if owner is not None:
                return owner
        if not self.api_key and (self.accounts is None or not self.accounts.enabled):
            return LOCAL_OWNER  # single user and no key configured: the API is open
        message = "Incorrect API key provided." if token else "Missing API key: send 'Authorization: Bearer <key>'."
        raise APIError(401, message, code="invalid_api_key")

    def models(self) -> list[dict[str, Any]]:
        """The backend's model, or every model a remote server offers (blocking: call off the loop)."""
        backend = self.manager.get()
        window = backend.context_window
        if hasattr(backend, "list_models"):
            try:
                listed = backend.list_models()
            except ChatCoreError as exc:
                raise APIError(502, str(exc), type="server_error", code="backend_unreachable") from exc
            return [{**m, "max_model_len": m.get("max_model_len") or window} for m in listed]
        # max_model_len is vLLM's field for the window; a ChatCore using this server as its backend reads it.
        return [{"id": backend.model_name, "object": "model", "created": 0, "owned_by": "chatcore",
                 "max_model_len": window}]

    def backend_for(self, model: Any) -> Any:
        """The backend that answers for ``model``; 404 for a model this server does not have."""
        if not isinstance(model, str) or not model:
            raise APIError(400, "model is required (see GET /v1/models)", param="model")
        backend = self.manager.get()
        if model == backend.model_name:
            return backend
        names = [m["id"] for m in self.models()]
        if hasattr(backend, "with_model") and model in names:
            return backend.with_model(model)
        raise APIError(404, f"The model {model!r} does not exist; this server has: {', '.join(names)}",
                       param="model", code="model_not_found")

    async def completions(self, request: Request) -> Any:
        owner = await run_in_threadpool(self.owner, request)  # a database read: off the event loop
        try:
            body = await request.json()
        except ValueError:  # not JSON, or not UTF-8
            raise APIError(400, "the request body must be JSON") from None
        except RecursionError:  # [[[[...]]]] thousands deep
            raise APIError(400, "the request body is nested too deeply") from None
        if not isinstance(body, dict):
            raise APIError(400, "the request body must be a JSON object")
        backend = await run_in_threadpool(self.backend_for, body.get("model"))
        system, history, prompt = parse_messages(body.get("messages"))
        params = parse_params(body, backend.context_window)
        options = body.get("stream_options") or {}
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        save = self.store is not None and body.get("store") is not False
        service = ChatService(lambda: backend, self.store)
        cancel = threading.Event()
        release = await self.admission.enter()  # everything is checked: wait for a turn, or 429

        def events() -> Iterator[Any]:
            try:
                yield from service.ask(prompt, params, history=history, system=system, owner=owner, source="api",
                                       save=save, cancel=cancel)
            finally:
                release()  # on the worker, when the answer ends for whatever reason

        answer = _in_thread(events, cancel)
        reply = _Reply(backend.model_name)
        # Read until the answer starts, so a refused request gets its status code, not a broken stream.
        try:
            async for event in answer:
                reply.note(event)
                if isinstance(event, Started):
                    break
                if not isinstance(event, Saved):
                    raise APIError(500, "the backend did not start the answer", type="server_error")
        except BaseException:
            await answer.aclose()
            raise
        if body.get("stream"):
            return StreamingResponse(_sse(answer, reply, include_usage, cancel), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return await _collect(answer, reply, request, cancel)


class _Reply:
    """What one answer's response carries besides its text."""

    def __init__(self, model: str) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        self.conversation_id: int | None = None
        self.seed: int | None = None

    def note(self, event: Any) -> None:
        if isinstance(event, Saved):
            self.conversation_id = event.conversation_id
        elif isinstance(event, Started):
            self.seed = event.seed

    def extension(self) -> dict[str, Any]:
        return {"conversation_id": self.conversation_id, "seed": self.seed}

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "system_fingerprint": None,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    def completion(self, final: Finished) -> dict[str, Any]:
        return {
            "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": final.text, "refusal": None},
                         "logprobs": None, "finish_reason": _FINISH.get(final.finish_reason, "stop")}],
            "usage": _usage(final),
            "chatcore": self.extension(),
        }


def _usage(final: Finished) -> dict[str, Any]:
    usage: dict[str, Any] = {"prompt_tokens": final.prompt_tokens, "completion_tokens": final.completion_tokens,
                             "total_tokens": final.prompt_tokens + final.completion_tokens}
    if "cached_tokens" in final.extra:  # OpenAI's name for prompt tokens served from a cache
        usage["prompt_tokens_details"] = {"cached_tokens": final.extra["cached_tokens"]}
    return usage


def _backend_failed(final: Finished) -> APIError:
    return APIError(502, final.error or "the backend failed", type="server_error", code="backend_error")


async def _collect(answer: AsyncIterator[Any], reply: _Reply, request: Request, cancel: threading.Event) -> JSONResponse:
    """The whole answer as one ``chat.completion``; a client that hangs up stops the decoder."""
    final: Finished | None = None
    step: asyncio.Future | None = None
    try:
        while True:
            step = asyncio.ensure_future(answer.__anext__())
            while not step.done():
                await asyncio.wait({step}, timeout=_DISCONNECT_POLL_S)
                if not step.done() and not cancel.is_set() and await request.is_disconnected():
                    cancel.set()  # the decoder stops at its next token; reading on saves the partial answer
            try:
                event = step.result()
            except StopAsyncIteration:
                break
            if isinstance(event, Finished):
                final = event
    finally:
        if step is not None and not step.done():
            step.cancel()  # this request was cancelled: the answer's generator stops and sets the cancel flag
        else:
            await answer.aclose()
    if final is None:
        raise APIError(500, "the answer ended without a result", type="server_error")
    if final.finish_reason == "error":
        raise _backend_failed(final)
    return JSONResponse(reply.completion(final))


def _sse_line(data: Any) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _sse(answer: AsyncIterator[Any], reply: _Reply, include_usage: bool,
               cancel: threading.Event) -> AsyncIterator[str]:
    """Server-sent events: a role chunk, a chunk per text delta, a finish chunk, usage if asked, ``[DONE]``.

    A client that disconnects makes Starlette cancel this generator: the cancel flag stops the decoder.
    """
    try:
        yield _sse_line({**reply.chunk({"role": "assistant", "content": ""}), "chatcore": reply.extension()})
        async for event in answer:
            if isinstance(event, TextDelta):
                yield _sse_line(reply.chunk({"content": event.text}))
            elif isinstance(event, Finished):
                if event.finish_reason == "error":
                    yield _sse_line(_backend_failed(event).body())  # the openai client raises APIError on it
                    break
                yield _sse_line(reply.chunk({}, _FINISH.get(event.finish_reason, "stop")))
                if include_usage:
                    yield _sse_line({**reply.chunk({}), "choices": [], "usage": _usage(event)})
        yield "data: [DONE]\n\n"
    finally:
        cancel.set()
        await answer.aclose()


def _openai_errors(handler: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Answer ChatCore's errors with OpenAI's error body; anything else stays a 500."""

    @functools.wraps(handler)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await handler(*args, **kwargs)
        except (APIError, ChatCoreError) as exc:
            translated = _translate(exc)
            if translated is None:
                raise
            return translated.response()

    return wrapper


def create_v1_app(*, manager: Any, store: Any | None, api_key: str | None = None,
                  max_running: int = MAX_RUNNING, max_waiting: int = MAX_WAITING) -> FastAPI:
    """The API as an application whose routes are relative to ``/v1``; :func:`mount_api` mounts it."""
    api = _API(manager, store, api_key, Admission(max_running, max_waiting))
    app = FastAPI(title="ChatCore OpenAI-compatible API", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.admission = api.admission

    @app.get("/models")
    @_openai_errors
    async def list_models(request: Request) -> Any:
        await run_in_threadpool(api.owner, request)
        return {"object": "list", "data": await run_in_threadpool(api.models)}

    @app.get("/models/{model_id:path}")
    @_openai_errors
    async def get_model(request: Request, model_id: str) -> Any:
        await run_in_threadpool(api.owner, request)
        for model in await run_in_threadpool(api.models):
            if model["id"] == model_id:
                return model
        raise APIError(404, f"The model {model_id!r} does not exist", param="model", code="model_not_found")

    @app.post("/chat/completions")
    @_openai_errors
    async def chat_completions(request: Request) -> Any:
        return await api.completions(request)

    return app


def mount_api(fastapi_app: FastAPI, *, manager: Any, store: Any | None, api_key: str | None = None,
              max_running: int = MAX_RUNNING, max_waiting: int = MAX_WAITING) -> FastAPI:
    """Serve the API under ``/v1`` of ``fastapi_app`` (Gradio's included), ahead of its other routes."""
    v1 = create_v1_app(manager=manager, store=store, api_key=api_key, max_running=max_running,
                       max_waiting=max_waiting)
    # First in the route list, so that a catch-all mount at "/" (Gradio's) never shadows it.
    fastapi_app.router.routes.insert(0, Mount(API_PREFIX, app=v1, name="openai-api"))
    return v1


def create_api_app(*, manager: Any, store: Any | None, api_key: str | None = None,
                   max_running: int = MAX_RUNNING, max_waiting: int = MAX_WAITING) -> FastAPI:
    """A server with the API alone (``chatcore serve --api-only``)."""
    app = FastAPI(title="ChatCore", docs_url=None, redoc_url=None, openapi_url=None)
    mount_api(app, manager=manager, store=store, api_key=api_key, max_running=max_running, max_waiting=max_waiting)
    return app


def serve_api(settings: Any, *, host: str = "127.0.0.1", port: int = 7860) -> None:
    """``chatcore serve --api-only``: load the backend in the background and serve the API until interrupted."""
    import uvicorn

    from chatcore.engine.loader import load_backend
    from chatcore.services.accounts import Accounts
    from chatcore.services.models import ModelManager
    from storage import Store

    store = Store(settings.db_path)
    manager = ModelManager(settings, loader=load_backend)
    manager.start()
    if host not in ("127.0.0.1", "localhost", "::1") and not settings.api_key and not Accounts(store).enabled:
        print(f"warning: serving on {host} with no API key: anyone who can reach it can use it "
              "(give --api-key or CHATCORE_API_KEY, or issue keys with `chatcore users key`)")
    uvicorn.run(create_api_app(manager=manager, store=store, api_key=settings.api_key), host=host, port=port,
                log_level="warning")
