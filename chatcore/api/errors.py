"""Every error the API answers, built here in OpenAI's shape: ``{"error": {message, type, param, code}}``.

The ``openai`` client turns the status into its exception (400 ``BadRequestError``, 401
``AuthenticationError``, 404 ``NotFoundError``, 429 ``RateLimitError``, 5xx ``InternalServerError``)
and reads ``param`` and ``code`` from the body.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from chatcore.api.protocol import ErrorInfo, ErrorResponse
from chatcore.core.errors import ChatCoreError, ContextOverflowError, ModelError, ParameterError
from chatcore.services.models import ModelNotReadyError

# The service's names for what the API calls otherwise.
_API_PARAM = {"max_new_tokens": "max_tokens", "message": "messages"}
# How pydantic's error types read after a field's name: "temperature must be a number, got 'hot'".
_PHRASES = {
    "missing": "is required", "float_type": "must be a number", "int_type": "must be an integer",
    "bool_type": "must be true or false", "string_type": "must be a string", "list_type": "must be a list",
    "dict_type": "must be an object", "model_type": "must be an object", "model_attributes_type": "must be an object",
    "extra_forbidden": "is not a known field",
}


class APIError(Exception):
    """An error answered with OpenAI's error body and ``status``; ``headers`` go with it (Retry-After…)."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.type, self.param, self.code = status, type, param, code
        self.headers = headers

    def body(self) -> dict[str, Any]:
        info = ErrorInfo(message=str(self), type=self.type, param=self.param, code=self.code)
        return ErrorResponse(error=info).model_dump()

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def unauthorized(message: str) -> APIError:
    """401, with the header that tells a client to send a bearer key."""
    return APIError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


def server_error(status: int, message: str, code: str | None = None) -> APIError:
    return APIError(status, message, type="server_error", code=code)


def from_chatcore(exc: ChatCoreError) -> APIError:
    """ChatCore's errors as the status and body an OpenAI client expects."""
    if isinstance(exc, ParameterError):
        param = _API_PARAM.get(exc.param, exc.param)
        return APIError(400, str(exc).replace("max_new_tokens", "max_tokens"), param=param, code="invalid_value")
    if isinstance(exc, ContextOverflowError):
        return APIError(400, str(exc).replace("max_new_tokens", "max_tokens"), param="messages",
                        code="context_length_exceeded")
    if isinstance(exc, ModelNotReadyError):
        return server_error(503, str(exc), "model_not_ready")
    if isinstance(exc, ModelError):
        return server_error(502, str(exc), "backend_error")
    return server_error(500, str(exc))


def from_validation(exc: ValidationError) -> APIError:
    """400 for a request body pydantic refused, naming its first wrong field as ``param``."""
    error = exc.errors(include_url=False)[0]
    loc = error["loc"]
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
    return APIError(400, f"{where or 'the request body'} {_reason(error)}", param=str(loc[0]) if loc else None)


def _reason(error: dict[str, Any]) -> str:
    """What is wrong with one field, after its name."""
    kind = error["type"]
    if kind == "value_error":  # our validators' own words
        return str(error["ctx"]["error"])
    if kind == "literal_error":
        phrase = f"must be {error['ctx']['expected']}"
    elif kind in _PHRASES:
        phrase = _PHRASES[kind]
    else:
        return f"is invalid: {error['msg']}"
    return phrase if kind in ("missing", "extra_forbidden") else f"{phrase}, got {_short(error.get('input'))}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


async def api_error_handler(request: Request, exc: APIError) -> JSONResponse:
    """The app's handler for :class:`APIError`."""
    return exc.response()


async def chatcore_error_handler(request: Request, exc: ChatCoreError) -> JSONResponse:
    """The app's handler for a :class:`ChatCoreError` no one translated on its way up."""
    return from_chatcore(exc).response()
