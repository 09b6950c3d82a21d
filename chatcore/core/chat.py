"""Chat templating through the tokenizer's own template, and fitting a conversation to the window."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from chatcore.core.errors import ContextOverflowError, ModelError, ParameterError

ROLES = ("system", "user", "assistant")

# Used only when a tokenizer ships no chat template (base models); the ChatML layout most instruct
# models use, so answers stay sensible.
FALLBACK_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class Message:
    """One chat turn."""

    role: str
    content: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class FittedPrompt:
    """The token ids to feed the model, and what was left out to make them fit."""

    input_ids: list[int]
    messages: list[Message]  # what was actually sent, system prompt included
    dropped_messages: int


def build_messages(history: Sequence[Message | dict[str, Any]], system: str | None) -> list[Message]:
    """Normalise a history into ``Message``s, checking roles, with the system prompt first."""
    messages: list[Message] = []
    for i, item in enumerate(history):
        msg = item if isinstance(item, Message) else Message(str(item.get("role")), item.get("content"))  # type: ignore[arg-type]
        if msg.role not in ROLES:
            raise ParameterError("messages", f"messages[{i}].role must be one of {', '.join(ROLES)}, got {msg.role!r}")
        if not isinstance(msg.content, str):
            raise ParameterError("messages", f"messages[{i}].content must be a string")
        messages.append(msg)
    if system:
        messages = [Message("system", system)] + [m for m in messages if m.role != "system"]
    if not messages or messages[-1].role != "user":
        raise ParameterError("messages", "the last message must be a user message")
    return messages


def render_ids(tokenizer: Any, messages: Sequence[Message]) -> list[int]:
    """Token ids of the conversation rendered by the tokenizer's chat template, ready for an answer."""
    from jinja2 import TemplateError

    template = None if getattr(tokenizer, "chat_template", None) else FALLBACK_TEMPLATE
    try:
        # transformers renders in jinja2's ImmutableSandboxedEnvironment: a template reaching for
        # Python internals raises SecurityError here instead of running anything.
        rendered = tokenizer.apply_chat_template(
            [m.as_dict() for m in messages],
            chat_template=template,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
        )
    except TemplateError as exc:
        raise ModelError(f"the model's chat template failed and was not used: {exc}") from None
    ids = list(rendered["input_ids"])
    if not ids:
        raise ModelError("the model's chat template rendered an empty prompt")
    return ids


def fit_to_window(
    tokenizer: Any, messages: Sequence[Message], *, window: int, max_new_tokens: int
) -> FittedPrompt:
    """Drop the oldest turns until prompt + answer fit ``window``; never the system prompt or the newest message."""
    if max_new_tokens >= window:
        raise ParameterError(
            "max_new_tokens", f"max_new_tokens must be in the range [1, {window - 1}] for this model, got {max_new_tokens}"
        )
    budget = window - max_new_tokens
    system = [m for m in messages[:1] if m.role == "system"]
    history = list(messages[len(system) : -1])
    newest = messages[-1]
    dropped = 0
    while True:
        kept = system + history + [newest]
        ids = render_ids(tokenizer, kept)
        if len(ids) <= budget:
            return FittedPrompt(ids, kept, dropped)
        if not history:
            raise ContextOverflowError(
                f"the message is too long for the model's context window: the prompt takes {len(ids)} tokens, "
                f"and with max_new_tokens={max_new_tokens} only {budget} fit in the {window}-token window; "
                "shorten the message or the system prompt, or lower max_new_tokens"
            )
        # Drop whole exchanges: the oldest message, then any assistant replies that lost their question,
        # so the kept history still starts with a user turn as chat templates expect.
        history.pop(0)
        dropped += 1
        while history and history[0].role == "assistant":
            history.pop(0)
            dropped += 1
