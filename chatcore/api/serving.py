"""The API's logic: who a request runs as, which models there are, and answering a chat completion.

Differences from OpenAI's own API:

- Unset sampling parameters take ChatCore's defaults (temperature 0.7, top_p 0.95, top_k 50,
  repetition_penalty 1.1), not OpenAI's; send ``temperature: 0`` for greedy answers.
- Every exchange is saved to history (source ``api``) unless the request says ``"store": false``.
  The response's ``chatcore`` object carries the ``conversation_id`` and the ``seed`` used.
- An answer stopped on the server (the server shutting down, or Stop) finishes with ``"stop"``; a
  remote backend's failure mid-answer returns 502 (non-streaming) or an ``error`` event (streaming).
- At most ``running`` answers decode at once and ``waiting`` more wait their turn (:class:`Admission`);
  a request past that gets 429 ``server_busy`` with ``Retry-After`` at once.

Answers from the library (an extra request field, sent by the ``openai`` client as
``extra_body={"chatcore": {...}}``):

- ``"chatcore": {"collections": ["papers"]}``, ``{"documents": [3, 7]}`` or ``{"library": "all"}``, with
  optionally ``"passages": k`` (1 to 20, default 5): the answer is grounded in the best k passages and cites
  them as ``[n]``. The response's ``chatcore`` object adds ``scope``, ``sources`` (every numbered passage
  given: ``n``, ``document``, ``document_id``, ``page``, ``char_start``, ``char_end``, ``text``, ``score``...)
  and ``citations`` (each ``[n]`` the answer cites, as ``Citation.to_dict()``: ``verified`` is true when the
  number names a passage given and any text quoted with it is in that passage; otherwise ``reason`` says
  why). Streamed, the first chunk's ``chatcore`` carries the ``sources`` and the finishing chunk's (the one
  with ``finish_reason``) carries ``sources`` and ``citations``. A continued conversation keeps its scope.
- ``"evidence": true`` generates nothing: the response is a ``chat.completion`` whose message lists the
  ranked passages as ``[n] file, page p`` with their best sentences in ``**bold**``, ``usage`` all zero, and
  ``chatcore.evidence`` holds each passage with ``highlights`` (``[start, end]`` offsets into its ``text``).
  It is not saved, needs no loaded model, and streams as one content chunk when ``stream`` is true.
- A wrong field is 400 naming it (``chatcore.passages``); an unknown collection, or a document id that is
  missing or another user's (alike), 404 naming it; a scope with nothing indexed yet, 400 ``no_documents``.
- The library's own endpoints are under ``/v1/library`` (see :mod:`chatcore.api.library`).

Who a request runs as: with ``api_key`` set (``--api-key`` or ``CHATCORE_API_KEY``), that key runs as
the single-user owner ``local``; a key issued by ``chatcore users key NAME`` runs as NAME. Once a key
or an account exists, a request without a valid key gets 401; otherwise the API is open (single
user, 127.0.0.1).
"""

from __future__ import annotations

import hmac
import json
import threading
from typing import Any, AsyncIterator, Iterator

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from chatcore.api.admission import Admission
from chatcore.api.errors import APIError, from_validation, server_error, unauthorized
from chatcore.api.library import evidence_completion, resolve_scope
from chatcore.api.protocol import ChatCompletionRequest, DeltaMessage, ModelCard, ModelList
from chatcore.api.streams import Reply, collect, in_thread, sse
from chatcore.core.errors import ChatCoreError
from chatcore.core.events import Started
from chatcore.services.chat import ChatService, Saved, Sourced, check_user_text
from storage import LOCAL_OWNER


def parse_request(body: Any) -> ChatCompletionRequest:
    """A decoded JSON body as a checked request; 400 naming the first wrong field."""
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    try:
        return ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        raise from_validation(exc) from None
    except RecursionError:  # a field nested thousands deep
        raise APIError(400, "the request body is nested too deeply") from None


async def read_request(raw: Request) -> ChatCompletionRequest:
    """The request's body, read and checked."""
    try:
        body = await raw.json()
    except ValueError:  # not JSON, or not UTF-8
        raise APIError(400, "the request body must be JSON") from None
    except RecursionError:  # [[[[...]]]] thousands deep
        raise APIError(400, "the request body is nested too deeply") from None
    return parse_request(body)


class OpenAIServing:
    """The API over one model manager, one store (or ``None``: never save) and the keys."""

    def __init__(self, manager: Any, store: Any | None, api_key: str | None,
                 admission: Admission | None = None, library: Any | None = None) -> None:
        from chatcore.services.accounts import Accounts

        self.admission = admission or Admission()
        self.manager = manager
        self.store = store
        self.library = library  # a services.library.Library over the same store, or None
        self.api_key = api_key or None
        self.accounts = Accounts(store) if store is not None else None

    def owner(self, authorization: str) -> str:
        """Who a request with this ``Authorization`` header runs as; 401 for a missing or wrong key when keys are on."""
        scheme, _, token = authorization.partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""
        if self.api_key and token and hmac.compare_digest(token.encode(), self.api_key.encode()):
            return LOCAL_OWNER
        if token and self.accounts is not None:
            owner = self.accounts.owner_for_key(token)
            if owner is not None:
                return owner
        if not self.api_key and (self.accounts is None or not self.accounts.enabled):
            return LOCAL_OWNER  # single user and no key configured: the API is open
        raise unauthorized("Incorrect API key provided." if token
                           else "Missing API key: send 'Authorization: Bearer <key>'.")

    async def authenticate(self, raw: Request) -> str:
        """:meth:`owner` off the event loop: it may read the database."""
        return await run_in_threadpool(self.owner, raw.headers.get("authorization", ""))

    def models(self) -> list[ModelCard]:
        """The default backend's model (or every model a remote server offers), then the other loaded models
        by spec (blocking: call off the loop)."""
        backend = self.manager.get()
        window = backend.context_window
        if hasattr(backend, "list_models"):
            try:
                listed = backend.list_models()
            except ChatCoreError as exc:
                raise server_error(502, str(exc), "backend_unreachable") from exc
            cards = [ModelCard(**{**m, "max_model_len": m.get("max_model_len") or window}) for m in listed]
        else:
            cards = [ModelCard(id=backend.model_name, max_model_len=window)]
        for spec in self.manager.loaded()[1:]:  # the default is first, listed above under its own name
            try:
                other = self.manager.get(spec)
            except ChatCoreError:  # unloaded meanwhile to make room
                continue
            if spec not in {card.id for card in cards}:
                cards.append(ModelCard(id=spec, max_model_len=other.context_window))
        return cards

    async def show_available_models(self, raw: Request) -> Response:
        """``GET /v1/models``."""
        await self.authenticate(raw)
        models = await run_in_threadpool(self.models)
        return JSONResponse(ModelList(data=models).model_dump())

    async def show_model(self, raw: Request, model_id: str) -> Response:
        """``GET /v1/models/{id}``; 404 for a model this server does not have."""
        await self.authenticate(raw)
        for model in await run_in_threadpool(self.models):
            if model.id == model_id:
                return JSONResponse(model.model_dump())
        raise APIError(404, f"The model {model_id!r} does not exist", param="model", code="model_not_found")

    def backend_for(self, model: str) -> Any:
        """The backend that answers for ``model``: a loaded one (by spec or by name), or a model a remote server
        offers; 503 while one this server knows loads (asking starts it, ``model_not_ready``); else 404."""
        backend = self.manager.peek(model)
        if backend is not None:
            return backend
        default = self.manager.get()  # 503 while the default loads, as before the pool
        names = [m.id for m in self.models()]
        if hasattr(default, "with_model") and model in names:
            return default.with_model(model)
        if self.manager.known(model):  # cached or configured: never a download a client could start
            return self.manager.get(model)  # loads it in the background: 503 until it is ready
        raise APIError(404, f"The model {model!r} does not exist; this server has: {', '.join(names)}",
                       param="model", code="model_not_found")

    async def create_chat_completion(self, raw: Request) -> Response:
        """``POST /v1/chat/completions``: one answer, whole or as server-sent events."""
        owner = await self.authenticate(raw)
        request = await read_request(raw)
        options = request.chatcore
        scope = None
        if options is not None:  # a wrong collection or document fails before any model work
            scope = await run_in_threadpool(resolve_scope, self.library, owner, options)
            if options.evidence:
                return await self.evidence(request, owner, scope)
        backend = await run_in_threadpool(self.backend_for, request.model)
        system, history, prompt = request.conversation()
        params = request.sampling_params(backend.context_window)
        save = self.store is not None and request.store
        service = ChatService(lambda: backend, self.store, library=self.library)
        grounding = {"scope": scope, "passages": options.passages} if options is not None else {}
        cancel = threading.Event()
        release = await self.admission.enter()  # everything is checked: wait for a turn, or 429

        def events() -> Iterator[Any]:
            try:
                with self.manager.hold(backend):  # not unloaded to make room while it answers
                    yield from service.ask(prompt, params, history=history, system=system, owner=owner,
                                           source="api", save=save, cancel=cancel, **grounding)
            finally:
                release()  # on the worker, when the answer ends for whatever reason

        answer = in_thread(events, cancel)
        reply = Reply(backend.model_name)
        if scope is not None:
            reply.scope = scope.to_dict()
        await _until_started(answer, reply)
        if request.stream:
            return StreamingResponse(sse(answer, reply, request.include_usage, cancel), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return JSONResponse((await collect(answer, reply, raw, cancel)).model_dump())

    async def evidence(self, request: ChatCompletionRequest, owner: str, scope: Any) -> Response:
        """Evidence mode: the ranked passages with their best sentences, as a completion; nothing is generated."""
        question = check_user_text(request.conversation()[2])
        request.sampling_params(None)  # unused, but a wrong value is still refused, as everywhere
        found = await run_in_threadpool(self.library.evidence, owner, question, scope,
                                        k=request.chatcore.passages)
        completion = evidence_completion(Reply(request.model), found, scope)
        if not request.stream:
            return JSONResponse(completion.model_dump())
        return StreamingResponse(_evidence_events(completion, request.include_usage), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _evidence_events(completion: Any, include_usage: bool) -> AsyncIterator[str]:
    """Evidence mode streamed: one content chunk, the finishing chunk with the evidence, usage if asked."""
    reply = Reply(completion.model)
    reply.id, reply.created = completion.id, completion.created
    chunks = [reply.chunk(DeltaMessage(role="assistant", content=""), chatcore=completion.chatcore),
              reply.chunk(DeltaMessage(content=completion.choices[0].message.content)),
              reply.chunk(DeltaMessage(), "stop", chatcore=completion.chatcore)]
    if include_usage:
        chunks.append(reply.chunk(None, usage=completion.usage))
    for chunk in chunks:
        yield f"data: {json.dumps(chunk.model_dump(), ensure_ascii=False)}\n\n"
    yield "data: [DONE]\n\n"


async def _until_started(answer: AsyncIterator[Any], reply: Reply) -> None:
    """Read until the answer starts (and, from the library, until its sources are known), so a refused
    request gets its status code, not a broken stream."""
    try:
        async for event in answer:
            reply.note(event)
            if isinstance(event, Sourced) or (isinstance(event, Started) and not reply.grounded):
                return
            if not isinstance(event, (Saved, Started)):
                raise server_error(500, "the backend did not start the answer")
    except BaseException:
        await answer.aclose()
        raise
