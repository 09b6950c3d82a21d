"""``chatcore ask`` and ``chatcore chat``: answers streamed to the terminal, saved to history."""

from __future__ import annotations

import contextlib
import functools
import json
import sys
import threading
from dataclasses import dataclass
from typing import Any

import click

from chatcore.cli.group import main
from chatcore.cli.options import (
    backend_options,
    model_options,
    params_from,
    sampling_options,
    settings_from,
)
from chatcore.core.chat import Message
from chatcore.core.events import Finished, TextDelta
from chatcore.core.params import GenerationParams
from chatcore.core.settings import Settings
from chatcore.services.chat import ChatService, Cited, Saved, Sourced, check_user_text
from chatcore.services.library import ALL, Citation, Scope
from storage import LOCAL_OWNER


def _service(settings: Settings, save: bool, *, lazy: bool = False, library: Any | None = None) -> ChatService:
    """A service over the local engine, with the history store unless saving is off.

    The engine loads now, so that a chat starts ready, or with ``lazy`` at its first use, so that a
    command whose input turns out wrong says so without a model load first. With a ``library`` the
    answers can be grounded in the user's documents.
    """
    store = None
    if save:
        from chatcore.cli.docs import library_for
        from storage import Store

        # A library even without --docs: a continued conversation saved with a scope keeps answering from it.
        store = library.store if library is not None else Store(settings.db_path)
        library = library or library_for(settings, store)
    from chatcore.engine.loader import (
        load_backend,  # the local decoder, or --backend openai's server
    )

    if settings.compile == "auto":  # a one-shot command would spend more time compiling than decoding
        settings = settings.with_overrides(compile="0")
    engine = functools.cache(lambda: load_backend(settings, progress=lambda m: click.echo(m, err=True)))
    if not lazy:
        engine()
    return ChatService(engine, store, library=library)


def _print_stats(final: Finished, conversation_id: int | None) -> None:
    """One line of usage and speed on stderr, so stdout holds only the answer."""
    parts = [f"{final.completion_tokens} tokens", final.finish_reason]
    if final.ttft_ms is not None:
        parts.append(f"first token {final.ttft_ms:.0f} ms")
    if final.extra.get("cached_tokens"):
        parts.append(f"{final.extra['cached_tokens']} of {final.prompt_tokens} prompt tokens reused")
    if final.decode_tok_s is not None:
        parts.append(f"{final.decode_tok_s:.1f} tok/s")
    if final.dropped_messages:
        parts.append(f"{final.dropped_messages} old messages left out to fit the context")
    if conversation_id is not None:
        parts.append(f"conversation {conversation_id}")
    click.secho("[" + ", ".join(parts) + "]", err=True, dim=True)


@dataclass
class Exchange:
    """How one answer went: its final event, its conversation, and for an answer from the library its sources."""

    final: Finished | None = None
    conversation_id: int | None = None
    sourced: Sourced | None = None
    cited: Cited | None = None

    def note(self, event: Any) -> None:
        if isinstance(event, Saved):
            self.conversation_id = event.conversation_id
        elif isinstance(event, Finished):
            self.final = event
        elif isinstance(event, Sourced):
            self.sourced = event
        elif isinstance(event, Cited):
            self.cited = event


def _run_exchange(service: ChatService, prompt: str, params: GenerationParams, *, as_json: bool = False,
                  **kwargs: Any) -> Exchange:
    """Stream one answer to stdout; Ctrl-C stops the decoder and keeps the partial answer."""
    cancel = threading.Event()
    exchange = Exchange(conversation_id=kwargs.get("conversation_id"))
    events = service.ask(prompt, params, cancel=cancel, **kwargs)
    try:
        for event in events:
            exchange.note(event)
            if isinstance(event, TextDelta) and not as_json:
                click.echo(event.text, nl=False)
    except KeyboardInterrupt:
        cancel.set()
        for event in events:  # drain: the engine notices the flag within one token step
            exchange.note(event)
    if not as_json:
        click.echo()
    return exchange


@main.command()
@click.argument("prompt", required=False)
@sampling_options
@model_options
@backend_options
@click.option("--json", "as_json", is_flag=True, help="Print the final result (text, usage, timing) as JSON.")
@click.option("--no-save", is_flag=True, help="Do not save this exchange to history.")
@click.option("-c", "--continue", "continue_id", type=int, help="Continue conversation ID.")
@click.option("--template", help="Fill a research prompt template (see `chatcore prompts list`).")
@click.option("--var", "variables", multiple=True, metavar="KEY=VALUE", help="A template variable (repeatable).")
@click.option("--docs", "collections", multiple=True, metavar="NAME|all",
              help="Answer from this library collection, citing [n] (repeatable; 'all': the whole library).")
@click.option("--passages", type=click.IntRange(1, 20), help="With --docs: how many passages the answer is given (default 5).")
@click.option("--evidence", is_flag=True,
              help="With --docs: print the best passages, their best sentences highlighted; no model is loaded.")
@click.option("--data", "tables", multiple=True, metavar="NAME",
              help="Answer from this data table: the model writes SQL, which runs in the sandbox (repeatable).")
@click.pass_context
def ask(ctx: click.Context, prompt: str | None, as_json: bool, no_save: bool, continue_id: int | None,
        template: str | None, variables: tuple[str, ...], collections: tuple[str, ...], passages: int | None,
        evidence: bool, tables: tuple[str, ...], **options: Any) -> None:
    """Answer PROMPT (or standard input, or a filled --template), streaming to stdout.

    With --docs, the answer comes from the library's passages and cites them as [n]; a "Sources" list
    follows it, each citation checked (verified, or unverified with the reason).

    With --data, the model sees the tables' schemas and profiles (never their rows) and writes SQL; the
    answer is the query, its result, a chart and a narrative whose numbers are checked against the result.
    """
    if tables:
        given = {"--docs": collections, "--evidence": evidence, "--passages": passages, "--template": template,
                 "--var": variables, "--continue": continue_id is not None,
                 **{_flag(k): options.get(k) for k in _NOT_FOR_DATA}}
        clash = next((flag for flag, value in given.items() if value), None)
        if clash:
            raise click.UsageError(f"{clash} does not apply with --data (the model writes SQL, which answers)")
        _ask_data(ctx, prompt, tables, as_json=as_json, save=not no_save, options=options)
        return
    defaults: dict[str, Any] = {}
    if template is not None:
        prompt, system, defaults = _render_template(ctx.obj, template, variables, prompt)
        options["system"] = options.get("system") or system
    elif variables:
        raise click.UsageError("--var needs --template")
    params = params_from(options, defaults)  # refuse bad values before loading anything
    if prompt is None:
        if sys.stdin.isatty():
            raise click.UsageError("give a PROMPT or pipe text on standard input")
        prompt = sys.stdin.read()
    if no_save and continue_id is not None:
        raise click.UsageError("--continue needs saving; drop --no-save")
    check_user_text(prompt)  # an empty or broken message is refused before the model loads
    if options.get("system"):
        check_user_text(options["system"], "system prompt")
    for flag, value in (("--evidence", evidence), ("--passages", passages)):
        if value and not collections:
            raise click.UsageError(f"{flag} needs --docs NAME (or --docs all)")
    passages = passages or 5
    library = scope = None
    if collections:  # a wrong collection name, or an empty one, fails here, before the model loads
        library, scope = _library_scope(ctx.obj, collections)
        if evidence:
            _print_evidence(library, scope, prompt, passages, as_json)
            return
    service = _service(settings_from(ctx, options), save=not no_save, library=library)
    exchange = _run_exchange(
        service, prompt, params, as_json=as_json, conversation_id=continue_id,
        system=options.get("system"), save=not no_save, source="cli",
        **({"scope": scope, "passages": passages} if scope is not None else {}),
    )
    if exchange.final is None:
        raise click.ClickException("the answer ended without a result")
    if as_json:
        result = {**exchange.final.to_dict(), "conversation_id": exchange.conversation_id}
        result.update(_citations_json(exchange))
        click.echo(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        _print_sources(exchange)
        _print_stats(exchange.final, exchange.conversation_id)


# Flags of `ask` that a question of data does not use: the model writes SQL greedily, with its own prompt.
_NOT_FOR_DATA = ("system", "temperature", "top_p", "top_k", "max_new_tokens", "repetition_penalty", "stop")


def _flag(key: str) -> str:
    return {"max_new_tokens": "--max-tokens"}.get(key, "--" + key.replace("_", "-"))


def _ask_data(ctx: click.Context, prompt: str | None, tables: tuple[str, ...], *, as_json: bool, save: bool,
              options: dict[str, Any]) -> None:
    """``ask --data``: the model's SQL over the tables, run in the sandbox; the answer printed or as JSON."""
    from chatcore.cli.data import SHOWN_ROWS, echo_answer, open_data
    from chatcore.core.settings import model_settings

    seed = params_from({"seed": options.get("seed")}).seed if options.get("seed") is not None else None
    if prompt is None:
        if sys.stdin.isatty():
            raise click.UsageError("give a question or pipe it on standard input")
        prompt = sys.stdin.read()
    check_user_text(prompt, "question")
    settings = settings_from(ctx, options)
    if settings.compile == "auto":  # a one-shot command would spend more time compiling than decoding
        settings = settings.with_overrides(compile="0")

    @functools.cache
    def backend_for(spec: str | None) -> Any:
        from chatcore.engine.loader import load_backend

        return load_backend(model_settings(settings, spec), progress=lambda m: click.echo(m, err=True))

    data = open_data(backend_for=backend_for, hold=contextlib.nullcontext)  # one model, kept for the command
    names = list(dict.fromkeys(tables))
    for name in names:  # a wrong name fails here, before the model loads
        data.table(LOCAL_OWNER, name)
    answer = data.ask(LOCAL_OWNER, prompt, tables=names, model=options.get("model"), seed=seed, save=save,
                      on_step=lambda step: click.secho(step, err=True, dim=True))
    if as_json:
        click.echo(json.dumps(answer.to_dict(), indent=2, ensure_ascii=False))
    else:
        echo_answer(answer, SHOWN_ROWS, sql=True)


def _library_scope(settings: Settings, names: tuple[str, ...]) -> tuple[Any, Scope]:
    """The library and the scope ``--docs`` names, checked: unknown or empty collections are refused."""
    from chatcore.cli.docs import open_library
    from chatcore.services.library.scopes import EmptyScope, check_scope

    scope = ALL if "all" in names else Scope(collections=tuple(dict.fromkeys(names)))
    library = open_library()
    try:
        check_scope(library, LOCAL_OWNER, scope)
    except EmptyScope as exc:
        where = "" if scope is ALL else f" --collection {scope.collections[0]}"
        raise click.ClickException(f"{exc}; add some with: chatcore docs add PATH...{where}") from exc
    return library, scope


def _print_evidence(library: Any, scope: Scope, question: str, k: int, as_json: bool) -> None:
    """Evidence mode: the ranked passages, their best sentences highlighted; nothing is generated or saved."""
    from chatcore.cli.docs import echo_passage

    found = library.evidence(LOCAL_OWNER, question, scope, k=k)
    if as_json:
        click.echo(json.dumps({"question": question, "scope": scope.to_dict(),
                               "evidence": [e.to_dict() for e in found]}, indent=2, ensure_ascii=False))
        return
    if not found:
        click.echo(f"No passages in {scope.describe()} match the question.")
        return
    plain = not sys.stdout.isatty()  # styles vanish off a terminal: mark the sentences as Markdown bold there
    for item in found:
        echo_passage(item.n, item.passage, highlighted(item.passage.text, item.highlights, plain=plain))


def highlighted(text: str, spans: list[tuple[int, int]], *, plain: bool) -> str:
    """``text`` with ``spans`` in bold: terminal styles, or ``**...**`` when ``plain``."""
    out, last = [], 0
    for start, end in spans:
        out.append(text[last:start])
        # Each line on its own, so a sentence across a line break reads as marked on both lines.
        out.append("\n".join((f"**{line}**" if plain else click.style(line, bold=True, underline=True)) if line else line
                             for line in text[start:end].split("\n")))
        last = end
    out.append(text[last:])
    return "".join(out)


def _citation_line(citation: Citation) -> str:
    where = citation.passage.where if citation.passage is not None else "no such source"
    if citation.kind == "matched":  # the model cited nothing; ChatCore found the answer's words in this passage
        return f"[{citation.n}] {where}, matched in the answer (not cited by the model)"
    return f"[{citation.n}] {where}, " + ("verified" if citation.verified else f"unverified ({citation.reason})")


def _print_sources(exchange: Exchange) -> None:
    """After an answer from the library: every passage it was given, each cited one checked."""
    if exchange.sourced is None:
        return
    passages = exchange.cited.passages if exchange.cited is not None else exchange.sourced.passages
    if not passages:
        click.echo(f"\nSources: nothing in {exchange.sourced.scope.describe()} matched the question; "
                   "this answer is the model's alone.")
        return
    by_number = {c.n: c for c in exchange.cited.citations} if exchange.cited is not None else {}
    click.echo("\n" + click.style("Sources", bold=True))
    for n, passage in enumerate(passages, start=1):
        citation = by_number.pop(n, None)
        click.echo("  " + (_citation_line(citation) if citation else f"[{n}] {passage.where}, not cited"))
    for citation in by_number.values():  # numbers the answer made up
        click.echo("  " + _citation_line(citation))


def _citations_json(exchange: Exchange) -> dict[str, Any]:
    """``scope``, ``message_id``, ``citations`` and ``sources`` for ``ask --json``, from the library only."""
    if exchange.sourced is None:
        return {}
    cited = exchange.cited
    passages = cited.passages if cited is not None else exchange.sourced.passages
    return {"scope": exchange.sourced.scope.to_dict(), "message_id": cited.message_id if cited else None,
            "citations": [c.to_dict() for c in cited.citations] if cited is not None else [],
            "sources": [{"n": n, **p.to_dict()} for n, p in enumerate(passages, start=1)]}


def _render_template(settings: Settings, name: str, pairs: tuple[str, ...],
                     extra: str | None) -> tuple[str, str | None, dict[str, Any]]:
    """The template's prompt (with PROMPT appended, if given), its system prompt and its settings."""
    from chatcore.cli.prompts import load_library, parse_var_options

    rendered = load_library(settings).get(name).render(parse_var_options(pairs))
    text = rendered.text if extra is None else f"{rendered.text}\n\n{extra}"
    return text, rendered.system, rendered.settings


@main.command()
@sampling_options
@model_options
@backend_options
@click.option("--no-save", is_flag=True, help="Do not save this chat to history.")
@click.option("-c", "--continue", "continue_id", type=int, help="Continue conversation ID.")
@click.pass_context
def chat(ctx: click.Context, no_save: bool, continue_id: int | None, **options: Any) -> None:
    """A multi-turn chat in the terminal. Ctrl-C stops an answer; Ctrl-D or /exit quits; /new starts over."""
    params = params_from(options)
    service = _service(settings_from(ctx, options), save=not no_save)
    conversation_id = continue_id
    history: list[Message] = []  # kept in memory only when not saving
    click.secho("ChatCore chat — /new starts a new conversation, /exit quits.", err=True, dim=True)
    while True:
        try:
            line = input("you> ")
        except (EOFError, KeyboardInterrupt):
            click.echo()
            return
        if line.strip() in ("/exit", "/quit"):
            return
        if line.strip() == "/new":
            conversation_id, history = None, []
            click.secho("(new conversation)", err=True, dim=True)
            continue
        if not line.strip():
            continue
        click.echo("assistant> ", nl=False)
        exchange = _run_exchange(
            service, line, params, conversation_id=conversation_id, history=history,
            system=options.get("system"), save=not no_save, source="cli",
        )
        conversation_id = exchange.conversation_id
        if exchange.final is not None:
            if no_save:
                history += [Message("user", line), Message("assistant", exchange.final.text)]
            _print_sources(exchange)  # a continued conversation saved with a library scope
            _print_stats(exchange.final, conversation_id)



@main.command()
@click.argument("message_id", type=int)
@model_options
@click.pass_context
def reproduce(ctx: click.Context, message_id: int, **options: Any) -> None:
    """Re-run saved answer MESSAGE_ID with its recorded settings and seed; report whether it matches."""
    service = _service(settings_from(ctx, options), save=True, lazy=True)
    saved = service.store.get_message("local", message_id)  # a wrong id fails here, before the model loads
    final = None
    for event in service.reproduce("local", message_id):
        if isinstance(event, TextDelta):
            click.echo(event.text, nl=False)
        elif isinstance(event, Finished):
            final = event
    click.echo()
    recorded_hash = (saved.get("params") or {}).get("weights_sha256")
    if final is not None and recorded_hash and recorded_hash != final.extra.get("weights_sha256"):
        click.secho("[note: the weights differ from the ones that produced the saved answer]", err=True)
    if final is not None and final.text == saved["content"]:
        click.secho("[identical to the saved answer]", err=True)
    else:
        raise click.ClickException("the re-run differs from the saved answer")
