"""The API's request and response bodies as pydantic models, after OpenAI's chat completions API.

Requests are validated here, at the boundary, in strict mode: a number sent as a string or a flag sent as
``1`` is refused, as OpenAI refuses it. Unknown fields are ignored, as OpenAI ignores fields it does not
use (``user``, ``metadata``, ``top_logprobs``…). Fields ChatCore cannot honour (``n`` above 1,
``logprobs``, tools, JSON formats, OpenAI's penalties) are refused, never silently dropped. Sampling
ranges are checked once, by :class:`GenerationParams`, as for the page and the CLI.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, WrapValidator, field_validator, model_validator

from chatcore.core.chat import Message
from chatcore.core.errors import ParameterError
from chatcore.core.params import GenerationParams
from chatcore.services.library.retrieval import ALL, Scope

# Request fields handed to GenerationParams under the same name.
SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "repetition_penalty", "seed", "stop")


def _one_message(reason: str) -> WrapValidator:
    """Replace pydantic's error for each member of a union with ``reason``, one message for the field."""

    def validate(value: Any, handler: Any) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise ValueError(reason) from None

    return WrapValidator(validate)


def _absent(value: Any) -> bool:
    return value is None


class _Body(BaseModel):
    """A request body part: strict types, unknown fields ignored."""

    model_config = ConfigDict(strict=True, extra="ignore")


class TextPart(_Body):
    type: Literal["text"]
    text: str


class ChatMessage(_Body):
    """One message of a request; ``developer`` is OpenAI's newer name for ``system``."""

    role: Literal["system", "developer", "user", "assistant"]
    content: Annotated[str | list[TextPart], _one_message("must be a string or a list of text parts "
                                                          '({"type": "text", "text": ...}; only text is supported)')]

    @property
    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(_Body):
    include_usage: bool = False


MAX_PASSAGES = 20


class LibraryOptions(BaseModel):
    """The request's ``chatcore`` object: answer from the library, citing its passages as ``[n]``.

    Exactly one of ``collections`` (names), ``documents`` (ids) or ``library: "all"``; ``passages`` is how
    many the answer is given (1 to 20, default 5); ``evidence: true`` returns the ranked passages with their
    best sentences marked instead of generating. Unknown fields are refused here: a misspelt option would
    otherwise answer from the wrong documents without a word.
    """

    model_config = ConfigDict(strict=True, extra="forbid")

    collections: list[str] | None = None
    documents: list[int] | None = None
    library: Literal["all"] | None = None
    passages: int = 5
    evidence: bool = False

    @field_validator("collections")
    @classmethod
    def _named_collections(cls, names: list[str] | None) -> list[str] | None:
        if names is not None and (not names or any(not name.strip() for name in names)):
            raise ValueError("must be a non-empty list of collection names")
        return names

    @field_validator("documents")
    @classmethod
    def _some_documents(cls, ids: list[int] | None) -> list[int] | None:
        if ids is not None and not ids:
            raise ValueError("must be a non-empty list of document ids")
        return ids

    @field_validator("passages")
    @classmethod
    def _passages_in_range(cls, k: int) -> int:
        if not 1 <= k <= MAX_PASSAGES:
            raise ValueError(f"must be in the range [1, {MAX_PASSAGES}], got {k}")
        return k

    @model_validator(mode="after")
    def _one_scope(self) -> "LibraryOptions":
        given = [name for name in ("collections", "documents", "library") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError('must name exactly one of "collections", "documents" or "library": "all"'
                             + (f" (got {', '.join(given)})" if given else ""))
        return self

    def scope(self) -> Scope:
        if self.library == "all":
            return ALL
        if self.collections is not None:
            return Scope(collections=tuple(dict.fromkeys(name.strip() for name in self.collections)))
        return Scope(documents=tuple(dict.fromkeys(self.documents or ())))


class ChatCompletionRequest(_Body):
    """``POST /v1/chat/completions``; ``top_k`` and ``repetition_penalty`` are extras, as in vLLM."""

    model: str
    messages: list[ChatMessage]
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    stop: Annotated[str | list[str] | None, _one_message("must be a string or a list of strings")] = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None  # OpenAI's newer name; wins over max_tokens
    stream: bool = False
    stream_options: StreamOptions | None = None
    store: bool = True  # False keeps the exchange out of the history
    # Refused unless they ask for nothing ChatCore lacks.
    n: int | None = None
    logprobs: bool | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    response_format: dict[str, Any] | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    chatcore: LibraryOptions | None = None  # answer from the library (see LibraryOptions)

    @field_validator("model")
    @classmethod
    def _named(cls, model: str) -> str:
        if not model:
            raise ValueError("is required (see GET /v1/models)")
        return model

    @field_validator("messages")
    @classmethod
    def _ends_with_a_question(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if not messages:
            raise ValueError("must be a non-empty list")
        if messages[-1].role != "user":
            raise ValueError("must end with a user message")
        return messages

    @field_validator("n")
    @classmethod
    def _one_answer(cls, n: int | None) -> int | None:
        if n not in (None, 1):
            raise ValueError("must be 1: ChatCore returns one answer per request")
        return n

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, logprobs: bool | None) -> bool | None:
        if logprobs:
            raise ValueError("are not supported")
        return logprobs

    @field_validator("tools", "functions")
    @classmethod
    def _no_tools(cls, tools: list[Any] | None) -> list[Any] | None:
        if tools:
            raise ValueError("are not supported: ChatCore has no function calling")
        return tools

    @field_validator("response_format")
    @classmethod
    def _text_only(cls, fmt: dict[str, Any] | None) -> dict[str, Any] | None:
        if fmt not in (None, {"type": "text"}):
            raise ValueError('must be {"type": "text"}: only the text response format is supported')
        return fmt

    @field_validator("frequency_penalty", "presence_penalty")
    @classmethod
    def _no_openai_penalty(cls, penalty: float | None) -> float | None:
        if penalty not in (None, 0.0):
            raise ValueError("is not supported; use repetition_penalty (1 to 2)")
        return penalty

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def conversation(self) -> tuple[str | None, list[Message], str]:
        """The system prompt, the earlier turns and the new user message."""
        system = [m.text for m in self.messages if m.role in ("system", "developer")]
        turns = [Message(m.role, m.text) for m in self.messages if m.role in ("user", "assistant")]
        return "\n\n".join(system) or None, turns[:-1], turns[-1].content

    def sampling_params(self, max_new_tokens_limit: int | None) -> GenerationParams:
        """The sampling parameters, range-checked; a ``ParameterError`` names the request's own field."""
        values: dict[str, Any] = {name: getattr(self, name) for name in SAMPLING_FIELDS}
        name = "max_completion_tokens" if self.max_completion_tokens is not None else "max_tokens"
        values["max_new_tokens"] = getattr(self, name)
        try:
            return GenerationParams.create(max_new_tokens_limit=max_new_tokens_limit, **values)
        except ParameterError as exc:
            if exc.param != "max_new_tokens":
                raise
            raise ParameterError(name, str(exc).replace("max_new_tokens", name)) from exc


# -- responses ---------------------------------------------------------------------------------


class ChatCoreExtension(BaseModel):
    """ChatCore's extra object on a response: where the exchange was saved and the seed it used.

    An answer from the library adds ``scope``, ``sources`` (the numbered passages it was given) and
    ``citations`` (each ``[n]`` it cites, checked); evidence mode adds ``evidence`` instead of citations.
    """

    conversation_id: int | None = None
    seed: int | None = None
    scope: dict[str, Any] | None = Field(default=None, exclude_if=_absent)
    sources: list[dict[str, Any]] | None = Field(default=None, exclude_if=_absent)
    citations: list[dict[str, Any]] | None = Field(default=None, exclude_if=_absent)
    evidence: list[dict[str, Any]] | None = Field(default=None, exclude_if=_absent)


class PromptTokensDetails(BaseModel):
    cached_tokens: int  # prompt tokens served from the KV cache


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = Field(default=None, exclude_if=_absent)


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: None = None


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: None = None
    finish_reason: Literal["stop", "length"]


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: None = None
    choices: list[Choice]
    usage: Usage
    chatcore: ChatCoreExtension


class DeltaMessage(BaseModel):
    """What a chunk adds: the role once, then text; empty on the finishing chunk."""

    role: Literal["assistant"] | None = Field(default=None, exclude_if=_absent)
    content: str | None = Field(default=None, exclude_if=_absent)


class ChunkChoice(BaseModel):
    index: int = 0
    delta: DeltaMessage
    logprobs: None = None
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed answer; the last, when usage is asked for, has no choices."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: None = None
    choices: list[ChunkChoice]
    usage: Usage | None = Field(default=None, exclude_if=_absent)
    # On the first chunk; for an answer from the library also on the finishing one, with its citations.
    chatcore: ChatCoreExtension | None = Field(default=None, exclude_if=_absent)


class ModelCard(BaseModel):
    """One model of ``GET /v1/models``; a remote server's own extra fields pass through."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: str = "model"
    created: int = 0
    owned_by: str = "chatcore"
    # vLLM's field for the context window; a ChatCore using this server as its backend reads it.
    max_model_len: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error body: ``{"error": {message, type, param, code}}``."""

    error: ErrorInfo
