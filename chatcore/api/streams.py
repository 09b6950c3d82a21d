"""An answer's events off the event loop, and the two ways they leave: one completion or server-sent events."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from typing import Any, AsyncIterator, Callable, Iterator

from fastapi import Request

from chatcore.api.errors import APIError, server_error
from chatcore.api.protocol import (
    AssistantMessage,
    ChatCompletionChunk,
    ChatCompletionResponse,
    ChatCoreExtension,
    Choice,
    ChunkChoice,
    DeltaMessage,
    PromptTokensDetails,
    Usage,
)
from chatcore.core.events import Finished, Started, TextDelta
from chatcore.services.chat import Cited, Saved, Sourced

_FINISH = {"stop": "stop", "length": "length", "cancelled": "stop"}
# How often a non-streaming request checks whether its client has gone away (seconds).
_DISCONNECT_POLL_S = 0.5
_END = object()


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


async def in_thread(events: Callable[[], Iterator[Any]], cancel: threading.Event) -> AsyncIterator[Any]:
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


class Reply:
    """What one answer's response carries besides its text."""

    def __init__(self, model: str) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        self.conversation_id: int | None = None
        self.seed: int | None = None
        self.scope: dict[str, Any] | None = None  # set for an answer from the library
        self.sources: list[dict[str, Any]] | None = None
        self.citations: list[dict[str, Any]] | None = None

    @property
    def grounded(self) -> bool:
        """Whether the answer comes from the library (its sources and citations go with it)."""
        return self.scope is not None

    def note(self, event: Any) -> None:
        if isinstance(event, Saved):
            self.conversation_id = event.conversation_id
        elif isinstance(event, Started):
            self.seed = event.seed
        elif isinstance(event, Sourced):
            self.sources = numbered(event.passages)
        elif isinstance(event, Cited):
            self.sources = numbered(event.passages)
            self.citations = [c.to_dict() for c in event.citations]

    def extension(self) -> ChatCoreExtension:
        return ChatCoreExtension(conversation_id=self.conversation_id, seed=self.seed, scope=self.scope,
                                 sources=self.sources, citations=self.citations)

    def chunk(self, delta: DeltaMessage | None, finish: str | None = None, **extra: Any) -> ChatCompletionChunk:
        """A chunk with one choice carrying ``delta``, or with no choice when ``delta`` is ``None``."""
        choices = [] if delta is None else [ChunkChoice(delta=delta, finish_reason=finish)]
        return ChatCompletionChunk(id=self.id, created=self.created, model=self.model, choices=choices, **extra)

    def completion(self, final: Finished) -> ChatCompletionResponse:
        choice = Choice(message=AssistantMessage(content=final.text),
                        finish_reason=_FINISH.get(final.finish_reason, "stop"))
        return ChatCompletionResponse(id=self.id, created=self.created, model=self.model, choices=[choice],
                                      usage=usage(final), chatcore=self.extension())


def numbered(passages: Any) -> list[dict[str, Any]]:
    """Passages as the response lists them: ``{n, document, page, char_start, char_end, text, ...}``, from 1."""
    return [{"n": n, **p.to_dict()} for n, p in enumerate(passages, start=1)]


def usage(final: Finished) -> Usage:
    """Token counts of a finished answer, with OpenAI's name for prompt tokens served from a cache."""
    cached = final.extra.get("cached_tokens")
    return Usage(prompt_tokens=final.prompt_tokens, completion_tokens=final.completion_tokens,
                 total_tokens=final.prompt_tokens + final.completion_tokens,
                 prompt_tokens_details=None if cached is None else PromptTokensDetails(cached_tokens=cached))


def _backend_failed(final: Finished) -> APIError:
    return server_error(502, final.error or "the backend failed", "backend_error")


async def collect(answer: AsyncIterator[Any], reply: Reply, request: Request,
                  cancel: threading.Event) -> ChatCompletionResponse:
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
            reply.note(event)  # the citations come after Finished
            if isinstance(event, Finished):
                final = event
    finally:
        if step is not None and not step.done():
            step.cancel()  # this request was cancelled: the answer's generator stops and sets the cancel flag
        else:
            await answer.aclose()
    if final is None:
        raise server_error(500, "the answer ended without a result")
    if final.finish_reason == "error":
        raise _backend_failed(final)
    return reply.completion(final)


def _sse_line(data: Any) -> str:
    if not isinstance(data, dict):
        data = data.model_dump()
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def finish_lines(reply: Reply, final: Finished, include_usage: bool, **extra: Any) -> str:
    """The finishing chunk (with ``extra``), then the usage chunk if asked for."""
    lines = _sse_line(reply.chunk(DeltaMessage(), _FINISH.get(final.finish_reason, "stop"), **extra))
    return lines + (_sse_line(reply.chunk(None, usage=usage(final))) if include_usage else "")


async def sse(answer: AsyncIterator[Any], reply: Reply, include_usage: bool,
              cancel: threading.Event) -> AsyncIterator[str]:
    """Server-sent events: a role chunk, a chunk per text delta, a finish chunk, usage if asked, ``[DONE]``.

    A client that disconnects makes Starlette cancel this generator: the cancel flag stops the decoder.
    """
    final: Finished | None = None
    try:
        yield _sse_line(reply.chunk(DeltaMessage(role="assistant", content=""), chatcore=reply.extension()))
        async for event in answer:
            reply.note(event)
            if isinstance(event, TextDelta):
                yield _sse_line(reply.chunk(DeltaMessage(content=event.text)))
            elif isinstance(event, Finished):
                if event.finish_reason == "error":
                    yield _sse_line(_backend_failed(event).body())  # the openai client raises APIError on it
                    break
                final = event
                if not reply.grounded:
                    yield finish_lines(reply, final, include_usage)
        if final is not None and reply.grounded:  # after the citations, which follow Finished
            yield finish_lines(reply, final, include_usage, chatcore=reply.extension())
        yield "data: [DONE]\n\n"
    finally:
        cancel.set()
        await answer.aclose()
