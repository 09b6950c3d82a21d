"""``chatcore users``: accounts for the web app's login, and API keys for the HTTP API.

Glue only: open the store, call :class:`chatcore.services.accounts.Accounts`, print. Adding the first account
turns logins on; from then on every request needs a password (web) or a key (API).
"""

from __future__ import annotations

import json

import click

from chatcore.cli.common import json_option, open_store
from chatcore.cli.group import main
from chatcore.services.accounts import AccountError, Accounts, check_name
from storage import LOCAL_OWNER


def _accounts() -> Accounts:
    return Accounts(open_store())


@main.group()
def users() -> None:
    """Add user accounts (web login) and issue API keys."""


def _valid_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return check_name(value)
    except AccountError as exc:
        raise click.BadParameter(str(exc)) from exc


@users.command("add")
@click.argument("name", callback=_valid_name, is_eager=True)
@click.password_option(help="The password (prompted, hidden, asked twice, when not given).")
def add(name: str, password: str) -> None:
    """Add account NAME; its conversations are its own. Prompts for a password."""
    _accounts().add(name, password)
    click.echo(f"Added user {name}. The web app now asks for a login; issue an API key with: chatcore users key {name}")


@users.command("list")
@json_option
def list_(as_json: bool) -> None:
    """Accounts, with how many API keys each has."""
    rows = _accounts().list()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("No user accounts: ChatCore is in single-user mode.")
        return
    click.echo(f"{'NAME':24}  {'KEYS':>4}  CREATED")
    for row in rows:
        click.echo(f"{row['name']:24}  {row['api_keys']:>4}  {row['created'][:16].replace('T', ' ')}")


@users.command("key")
@click.argument("name")
@click.option("--revoke", is_flag=True, help="Delete every key NAME has instead of issuing one.")
def key(name: str, revoke: bool) -> None:
    """Issue an API key for NAME (or 'local', the single-user owner). It is shown once; only its hash is kept."""
    accounts = _accounts()
    if revoke:
        count = accounts.revoke_keys(name)
        click.echo(f"Revoked {count} key{'s' if count != 1 else ''} of {name}.")
        return
    if name != LOCAL_OWNER:
        check_name(name)
    issued = accounts.issue_key(name)
    click.echo(issued)
    click.secho(f"API key for {name}; it will not be shown again. Use it as: Authorization: Bearer <key>",
                err=True, dim=True)
