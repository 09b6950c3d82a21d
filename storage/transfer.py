"""Export and import: the versioned JSON format (see EXPORT_FORMAT.md) and Markdown.

Import is two steps. :func:`parse_export` reads and validates the whole document without
touching the database and returns plain, normalized records, or raises
``ImportValidationError`` naming the first problem and where it is; only then does the store
write everything in one transaction.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from storage.errors import ImportValidationError

EXPORT_FORMAT = "chatcore-export"
EXPORT_VERSION = 1
MAX_IMPORT_BYTES = 50 * 1024 * 1024
# Deep enough for any real ``params`` value, shallow enough to walk without recursion limits.
MAX_NESTING = 32

ROLES = ("system", "user", "assistant")

# field -> (accepted JSON types, required). ``float`` fields accept integers too.
_NUMBER = (int, float)
CONVERSATION_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "id": ((int,), True),
    "title": ((str, type(None)), False),
    "created": ((str,), False),
    "updated": ((str,), False),
    "model": ((str, type(None)), False),
    "system_prompt": ((str, type(None)), False),
    "params": ((dict, type(None)), False),
    "source": ((str,), False),
    "parent_conversation_id": ((int, type(None)), False),
    "parent_message_id": ((int, type(None)), False),
    "archived": ((bool,), False),
    "messages": ((list,), True),
}
MESSAGE_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "id": ((int,), True),
    "position": ((int,), False),
    "role": ((str,), True),
    "content": ((str,), True),
    "created": ((str,), False),
    "updated": ((str,), False),
    "model": ((str, type(None)), False),
    "params": ((dict, type(None)), False),
    "prompt_tokens": ((int, type(None)), False),
    "completion_tokens": ((int, type(None)), False),
    "ttft_ms": ((*_NUMBER, type(None)), False),
    "tokens_per_s": ((*_NUMBER, type(None)), False),
    "finish_reason": ((str, type(None)), False),
    "complete": ((bool,), False),
    "rating": ((int, type(None)), False),
    "rating_comment": ((str, type(None)), False),
}
TOP_FIELDS = ("format", "version", "exported_at", "conversations")

_TYPE_NAMES = {
    int: "an integer",
    float: "a number",
    str: "a string",
    bool: "true or false",
    dict: "an object",
    list: "an array",
    type(None): "null",
}


def utc_now() -> str:
    """The current time as UTC ISO-8601 with microseconds, the one format stored everywhere."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def normalize_timestamp(value: str) -> str:
    """``value`` as UTC ISO-8601 with microseconds; naive times are taken as UTC."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc).isoformat(timespec="microseconds")


# ---------------------------------------------------------------------------------------------
# Export


def export_document(conversations: list[dict[str, Any]]) -> dict[str, Any]:
    """The versioned export document for conversations as returned by ``Store.get_conversation``."""
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "exported_at": utc_now(),
        "conversations": [
            {
                **{k: c[k] for k in CONVERSATION_FIELDS if k != "messages"},
                "messages": [{k: m[k] for k in MESSAGE_FIELDS} for m in c["messages"]],
            }
            for c in conversations
        ],
    }


def to_markdown(conversations: list[dict[str, Any]]) -> str:
    """Conversations as one readable Markdown document, separated by horizontal rules."""
    return "\n---\n\n".join(_conversation_markdown(c) for c in conversations)


def _conversation_markdown(conversation: dict[str, Any]) -> str:
    lines = [f"# {conversation['title'] or 'Untitled'}", ""]
    facts = [f"Conversation {conversation['id']}", f"created {conversation['created']}"]
    facts.append(f"updated {conversation['updated']}")
    if conversation["model"]:
        facts.append(f"model `{conversation['model']}`")
    if conversation["parent_conversation_id"] is not None:
        facts.append(f"forked from conversation {conversation['parent_conversation_id']}")
    lines += ["*" + " · ".join(facts) + "*", ""]
    if conversation["params"]:
        lines += [f"Parameters: `{json.dumps(conversation['params'], sort_keys=True)}`", ""]
    if conversation["system_prompt"]:
        lines += ["## System prompt", "", conversation["system_prompt"], ""]
    for message in conversation["messages"]:
        lines += [f"## {message_heading(message)}", "", message["content"], ""]
    return "\n".join(lines)


def message_heading(message: dict[str, Any]) -> str:
    """``Assistant · model · 42 tokens · 12.3 tokens/s · incomplete``: a message's one-line header."""
    parts = [message["role"].capitalize()]
    if message["model"]:
        parts.append(message["model"])
    if message["completion_tokens"] is not None:
        parts.append(f"{message['completion_tokens']} tokens")
    if message["tokens_per_s"] is not None:
        parts.append(f"{message['tokens_per_s']:.1f} tokens/s")
    if not message["complete"]:
        parts.append("incomplete")
    if message["rating"]:
        parts.append("rated +1" if message["rating"] > 0 else "rated -1")
    return " · ".join(parts)


# ---------------------------------------------------------------------------------------------
# Import


def parse_export(data: str | bytes | dict) -> list[dict[str, Any]]:
    """Validate an export document completely; return its conversations, normalized.

    Raises ``ImportValidationError`` for anything short of a valid version-1 document: too
    large, not UTF-8, malformed or truncated JSON, duplicate keys, nesting deeper than
    ``MAX_NESTING``, a wrong format or version, unknown or missing fields, wrong types,
    unknown roles, bad timestamps, ids repeated inside the file.
    """
    if isinstance(data, (str, bytes, bytearray)):
        size = len(data.encode("utf-8")) if isinstance(data, str) else len(data)
        if size > MAX_IMPORT_BYTES:
            raise ImportValidationError(
                "", f"file is {size:,} bytes; the limit is {MAX_IMPORT_BYTES:,} bytes (50 MB)"
            )
        document = _loads(data)
    elif isinstance(data, dict):
        document = data
    else:
        raise ImportValidationError("", f"expected JSON text or an object, got {type(data).__name__}")
    _check_depth(document)
    return _validate_document(document)


def _loads(data: str | bytes | bytearray) -> Any:
    if isinstance(data, (bytes, bytearray)):
        try:
            data = bytes(data).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ImportValidationError("", f"not UTF-8 text (byte {exc.start})") from None

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise ImportValidationError("", f"malformed JSON: the key {key!r} appears twice in one object")
            result[key] = value
        return result

    def no_constant(name: str) -> Any:
        raise ImportValidationError("", f"malformed JSON: {name} is not valid JSON")

    try:
        return json.loads(data, object_pairs_hook=no_duplicates, parse_constant=no_constant)
    except json.JSONDecodeError as exc:
        if exc.pos >= len(exc.doc.rstrip()):
            problem = "the file ends too early (truncated?)"
        elif exc.msg.startswith("Unterminated string"):
            problem = "a string runs to the end of the file (truncated?)"
        else:
            problem = exc.msg
        raise ImportValidationError(
            "", f"malformed JSON at line {exc.lineno} column {exc.colno}: {problem}"
        ) from None
    except RecursionError:
        raise ImportValidationError("", f"nesting too deep (the limit is {MAX_NESTING} levels)") from None


def _check_depth(document: Any) -> None:
    stack = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_NESTING:
            raise ImportValidationError("", f"nesting too deep (the limit is {MAX_NESTING} levels)")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def _validate_document(document: Any) -> list[dict[str, Any]]:
    if not isinstance(document, dict):
        raise ImportValidationError("", "the file must hold a JSON object")
    if document.get("format") != EXPORT_FORMAT:
        raise ImportValidationError(
            "format", f"must be {EXPORT_FORMAT!r}, found {document.get('format')!r}: not a ChatCore export"
        )
    version = document.get("version")
    if version != EXPORT_VERSION or isinstance(version, bool):
        raise ImportValidationError(
            "version", f"unsupported version {version!r}; this ChatCore reads version {EXPORT_VERSION}"
        )
    for key in document:
        if key not in TOP_FIELDS:
            raise ImportValidationError(key, "unknown field")
    if "exported_at" in document:
        _timestamp(document["exported_at"], "exported_at")
    conversations = document.get("conversations")
    if not isinstance(conversations, list):
        raise ImportValidationError("conversations", "must be an array")

    conversation_ids: set[int] = set()
    message_ids: dict[int, str] = {}  # id -> where it was seen, for duplicate messages
    message_conversation: dict[int, int] = {}  # message id -> its conversation's id in the file
    result = []
    for i, raw in enumerate(conversations):
        where = f"conversations[{i}]"
        conversation = _fields(raw, CONVERSATION_FIELDS, where)
        if conversation["id"] in conversation_ids:
            raise ImportValidationError(f"{where}.id", f"duplicate conversation id {conversation['id']}")
        conversation_ids.add(conversation["id"])
        for key in ("created", "updated"):
            if key in conversation:
                conversation[key] = _timestamp(conversation[key], f"{where}.{key}")
        messages = []
        last_position = None
        for j, raw_message in enumerate(conversation["messages"]):
            mwhere = f"{where}.messages[{j}]"
            message = _fields(raw_message, MESSAGE_FIELDS, mwhere)
            if message["role"] not in ROLES:
                raise ImportValidationError(f"{mwhere}.role", f"must be one of {', '.join(ROLES)}")
            if message["id"] in message_ids:
                raise ImportValidationError(
                    f"{mwhere}.id", f"duplicate message id {message['id']} (also {message_ids[message['id']]})"
                )
            message_ids[message["id"]] = mwhere
            message_conversation[message["id"]] = conversation["id"]
            if "position" in message:
                if last_position is not None and message["position"] <= last_position:
                    raise ImportValidationError(
                        f"{mwhere}.position", "messages must be in increasing position order"
                    )
                last_position = message["position"]
            if message.get("rating") not in (None, -1, 0, 1):
                raise ImportValidationError(f"{mwhere}.rating", "must be -1, 0, 1 or null")
            for key in ("created", "updated"):
                if key in message:
                    message[key] = _timestamp(message[key], f"{mwhere}.{key}")
            messages.append(message)
        conversation["messages"] = messages
        result.append(conversation)

    # Parent links may point outside the file (the parent was not exported); those are dropped
    # on import. A parent message inside the file must belong to the parent conversation.
    for i, conversation in enumerate(result):
        parent_message = conversation.get("parent_message_id")
        if parent_message in message_conversation:
            if message_conversation[parent_message] != conversation.get("parent_conversation_id"):
                raise ImportValidationError(
                    f"conversations[{i}].parent_message_id",
                    f"message {parent_message} is not in conversation "
                    f"{conversation.get('parent_conversation_id')}",
                )
    return result


def _fields(raw: Any, spec: dict[str, tuple[tuple[type, ...], bool]], where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ImportValidationError(where, "must be an object")
    for key in raw:
        if key not in spec:
            raise ImportValidationError(f"{where}.{key}", "unknown field")
    for key, (types, required) in spec.items():
        if key not in raw:
            if required:
                raise ImportValidationError(f"{where}.{key}", "required field is missing")
            continue
        value = raw[key]
        # bool is an int in Python; JSON true is never a valid integer here.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            expected = " or ".join(_TYPE_NAMES[t] for t in types if not (t is int and float in types))
            raise ImportValidationError(f"{where}.{key}", f"must be {expected}, found {_json_type(value)}")
    return dict(raw)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    for python_type, name in _TYPE_NAMES.items():
        if isinstance(value, python_type):
            return name
    return type(value).__name__


def _timestamp(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ImportValidationError(where, f"must be an ISO-8601 timestamp string, found {_json_type(value)}")
    try:
        return normalize_timestamp(value)
    except ValueError:
        raise ImportValidationError(where, f"not an ISO-8601 timestamp: {value!r}") from None
