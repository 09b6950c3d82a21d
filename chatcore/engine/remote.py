"""A backend that answers through any OpenAI-compatible server: vLLM, TGI, Ollama, llama.cpp, ChatCore.

It speaks the same typed events as the local decoder, so the service, the web app and the API do not
know the difference. The server does the prompt templating and the fitting to its window; every
sampling parameter is passed through. Network failures never raise out of :meth:`RemoteBackend.stream`:
they end the answer with ``finish_reason="error"``, a message fit for a person, and the text so far.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any, Callable, Iterator, Sequence

from chatcore.core.chat import Message, build_messages
from chatcore.core.errors import ModelError
from chatcore.core.events import Event, Finished, Started, TextDelta
from chatcore.core.params import GenerationParams
from chatcore.core.settings import DEFAULT_MODEL, Settings

# Servers that do not say their window (most do not in /v1/models) are assumed to hold this many tokens;
# it only bounds max_tokens here, the server itself fits or refuses the prompt.
DEFAULT_REMOTE_WINDOW = 8192
# Seconds to open a connection, and the longest silence between two streamed chunks (a long prompt's
# prefill on a busy cluster comes first, so this is generous).
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 120.0
# Sent when no key is configured: the client requires one, and a real key from the environment
# (OPENAI_API_KEY) must never leak to a server the user did not give it to.
NO_KEY = "none"

_FINISH = {"stop": "stop", "length": "length"}


def _timeout(read_s: float) -> Any:
    # The client's own Timeout class: openai 1.x re-exports httpx's, 3.x httpx2's, and each refuses the other's.
    import openai

    return openai.Timeout(read_s, connect=CONNECT_TIMEOUT_S)


def _client(base_url: str, api_key: str | None) -> Any:
    import openai

    return openai.OpenAI(base_url=base_url, api_key=api_key or NO_KEY, max_retries=0, timeout=_timeout(READ_TIMEOUT_S))


def describe_error(exc: BaseException, base_url: str) -> str:
    """One line saying what went wrong talking to the server, for the chat and the logs."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return f"the backend at {base_url} did not answer in time ({READ_TIMEOUT_S:.0f} s without data)"
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc
        return f"could not reach the backend at {base_url}: {cause}"
    if isinstance(exc, openai.AuthenticationError):
        return f"the backend at {base_url} refused the API key (HTTP 401); check --backend-api-key"
    if isinstance(exc, openai.APIStatusError):
        return f"the backend at {base_url} refused the request (HTTP {exc.status_code}): {_server_message(exc)}"
    if isinstance(exc, openai.APIError):
        return f"the backend at {base_url} failed: {_server_message(exc)}"
    return f"the backend at {base_url} failed: {type(exc).__name__}: {exc}"


def _server_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        message = error.get("message") if isinstance(error, dict) else error
        if message:
            return str(message)
    return str(getattr(exc, "message", None) or exc)


def list_models(base_url: str, api_key: str | None = None, *, client: Any = None) -> list[dict[str, Any]]:
    """The models the server offers, as the dicts of its ``/v1/models``; raises ``ModelError`` if unreachable.

    ``client`` reuses an open connection pool to the same server.
    """
    try:
        client = client or _client(base_url, api_key)
        return [m.model_dump() for m in client.models.list(timeout=_timeout(CONNECT_TIMEOUT_S * 3))]
    except Exception as exc:
        raise ModelError(describe_error(exc, base_url)) from exc


class RemoteBackend:
    """One model on an OpenAI-compatible server; safe to stream from several threads at once."""

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None,
                 context_window: int = DEFAULT_REMOTE_WINDOW, client: Any = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._model = model
        self._api_key = api_key
        self._context_window = context_window
        self._client = client or _client(self.base_url, api_key)

    @classmethod
    def connect(cls, settings: Settings, progress: Callable[[str], None] | None = None) -> "RemoteBackend":
        """Ask the server at ``settings.base_url`` for its models and pick ``settings.model``.

        The default model name stands for "whatever the server serves": its first model is used.
        """
        if not settings.base_url:
            raise ModelError("the openai backend needs a server: give --base-url (e.g. http://host:8000/v1)")
        if progress:
            progress(f"asking {settings.base_url} for its models")
        models = list_models(settings.base_url, settings.backend_api_key)
        if not models:
            raise ModelError(f"the backend at {settings.base_url} serves no models")
        by_id = {m["id"]: m for m in models}
        if settings.model in by_id:
            chosen = by_id[settings.model]
        elif settings.model == DEFAULT_MODEL:
            chosen = models[0]
        else:
            raise ModelError(
                f"the backend at {settings.base_url} does not serve {settings.model!r}; it serves: {', '.join(by_id)}"
            )
        # vLLM (and ChatCore) say their window as max_model_len.
        window = chosen.get("max_model_len")
        return cls(settings.base_url, chosen["id"], api_key=settings.backend_api_key,
                   context_window=window if isinstance(window, int) and window > 1 else DEFAULT_REMOTE_WINDOW)

    @property
    def context_window(self) -> int:
        return self._context_window

    @property
    def model_name(self) -> str:
        return self._model

    def list_models(self) -> list[dict[str, Any]]:
        """The server's models now (the list may change as the cluster changes)."""
        return list_models(self.base_url, client=self._client)

    def with_model(self, model: str) -> "RemoteBackend":
        """The same server and connection pool, another of its models."""
        return RemoteBackend(self.base_url, model, api_key=self._api_key, context_window=self._context_window,
                             client=self._client)

    def request(self, history: Sequence[Message | dict[str, Any]], params: GenerationParams,
                system: str | None, seed: int) -> dict[str, Any]:
        """The keyword arguments of ``chat.completions.create`` for one answer."""
        messages = build_messages(history, system)
        return {
            "model": self._model,
            "messages": [m.as_dict() for m in messages],
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
            "seed": seed,
            **({"stop": list(params.stop)} if params.stop else {}),
            # Not in OpenAI's API; vLLM, TGI, llama.cpp, Ollama's OpenAI route and ChatCore read them.
            "extra_body": {"top_k": params.top_k, "repetition_penalty": params.repetition_penalty},
            "stream": True,
            "stream_options": {"include_usage": True},
        }

    def stream(
        self, history: Sequence[Message | dict[str, Any]], params: GenerationParams, *,
        system: str | None = None, cancel: threading.Event | None = None,
    ) -> Iterator[Event]:
        """``Started``, ``TextDelta``s as the server streams them, then ``Finished`` with its usage."""
        start = time.perf_counter()
        # Drawn here when not given, as the local decoder does, so every answer records its seed; small,
        # because some servers keep seeds in 32 bits.
        seed = params.seed if params.seed is not None else random.SystemRandom().randrange(2**31)
        request = self.request(history, params, system, seed)  # ParameterError for a malformed history
        yield Started(0, self._context_window, 0, seed)  # the server fits the prompt; usage comes at the end
        text, reason, error = "", None, None
        prompt_tokens = completion_tokens = 0
        cached_tokens: int | None = None  # prompt tokens the server took from its cache, when it says
        chunks, first_at, stream = 0, None, None
        try:
            stream = self._client.chat.completions.create(**request)
            for chunk in stream:
                if cancel is not None and cancel.is_set():
                    reason = "cancelled"
                    break
                if chunk.usage is not None:
                    prompt_tokens = chunk.usage.prompt_tokens or 0
                    completion_tokens = chunk.usage.completion_tokens or 0
                    details = chunk.usage.prompt_tokens_details
                    cached_tokens = details.cached_tokens if details is not None else None
                for choice in chunk.choices[:1]:
                    delta = choice.delta.content if choice.delta else None
                    if delta:
                        if first_at is None:
                            first_at = time.perf_counter()
                        chunks += 1
                        text += delta
                        yield TextDelta(delta)
                    if choice.finish_reason:
                        reason = _FINISH.get(choice.finish_reason, "stop")
            if reason is None:
                reason = "error"
                error = f"the backend at {self.base_url} ended the answer without saying why (connection cut?)"
        except Exception as exc:  # every failure ends the answer with a message; the partial text stays
            reason, error = "error", describe_error(exc, self.base_url)
        finally:
            if stream is not None:
                stream.close()  # also what stops the server's decoder when we were cancelled
        end = time.perf_counter()
        if not completion_tokens:
            completion_tokens = chunks  # servers that send no usage: one chunk is about one token
        rate = (completion_tokens - 1) / (end - first_at) if first_at and completion_tokens > 1 and end > first_at else None
        yield Finished(
            text=text, finish_reason=reason, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
            ttft_ms=(first_at - start) * 1000 if first_at else None, decode_tok_s=rate,
            total_ms=(end - start) * 1000, model=self._model, seed=seed, error=error,
            extra={"backend": self.base_url, **({} if cached_tokens is None else {"cached_tokens": cached_tokens})},
        )
