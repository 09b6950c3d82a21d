"""Helpers shared by the commands over the history database: errors, the store, JSON and times."""

from __future__ import annotations

import functools
import json
from datetime import datetime
from typing import Any, Callable

import click

from chatcore.core.settings import Settings
from storage import ImportValidationError, StorageError, Store, render_snippet


def storage_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn storage and file errors into ``click.ClickException`` (stderr, exit status 1)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ImportValidationError as exc:
            raise click.ClickException(f"Import refused, nothing was written. {exc}") from exc
        except StorageError as exc:
            raise click.ClickException(str(exc)) from exc
        except OSError as exc:
            raise click.ClickException(f"{exc.filename or 'file'}: {exc.strerror or exc}") from exc

    return wrapper


def open_store() -> Store:
    """The store at the settings' database path, closed when the command ends."""
    ctx = click.get_current_context()
    settings = ctx.find_object(Settings) or Settings()
    store = Store(settings.db_path)
    ctx.call_on_close(store.close)
    return store


def echo_json(value: Any) -> None:
    """Pretty JSON on stdout, non-ASCII text kept as is."""
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def local_time(timestamp: str) -> str:
    """A stored UTC timestamp in the user's time zone, to the minute."""
    return datetime.fromisoformat(timestamp).astimezone().strftime("%Y-%m-%d %H:%M")


def snippet_line(snippet: str) -> str:
    """A search hit's snippet on one line, its matches in bold."""
    return " ".join(render_snippet(snippet, click.style("", bold=True, reset=False), "\x1b[0m").split())


def echo_next_page(page: int, limit: int, shown: int, total: int) -> None:
    """Under a page of a listing: how far it got, and the flag for the next page, if there is one."""
    shown_to = (page - 1) * limit + shown
    if shown_to < total:
        click.echo(f"({shown_to} of {total}; next: --page {page + 1})")


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for programs.")
