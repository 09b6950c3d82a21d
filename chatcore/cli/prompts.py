"""``chatcore prompts``: list, show and preview research prompt templates."""

from __future__ import annotations

import json

import click

from chatcore.cli.common import echo_json
from chatcore.cli.group import main
from chatcore.core.settings import Settings
from chatcore.services.templates import PromptLibrary, Template, user_prompts_dir


def load_library(settings: Settings) -> PromptLibrary:
    """Built-in plus ``$CHATCORE_HOME/prompts`` templates; skipped files are reported on stderr."""
    library = PromptLibrary.load(user_prompts_dir(settings.home))
    for warning in library.warnings:
        click.echo(f"warning: {warning}", err=True)
    return library


def parse_var_options(pairs: tuple[str, ...], option: str = "--var") -> dict[str, str]:
    """Turn ``("key=value", ...)`` into a dict; the value is everything after the first '='.

    Raises ``click.BadParameter`` for a pair without '=' or an empty key, and for a key given twice.
    """
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(f"expected NAME=VALUE, got {pair!r}", param_hint=f"'{option}'")
        if key in values:
            raise click.BadParameter(f"variable '{key}' given more than once", param_hint=f"'{option}'")
        values[key] = value
    return values


def template_to_dict(template: Template) -> dict:
    """A template as plain JSON-ready data (the shape of ``prompts list --json``)."""
    return {
        "name": template.name,
        "description": template.description,
        "variables": [
            {"name": name, "description": var.description, "required": var.required, "default": var.default}
            for name, var in template.variables.items()
        ],
        "settings": dict(template.settings),
        "system": template.system,
        "origin": template.origin,
        "source": str(template.source) if template.source else None,
    }


@main.group("prompts")
def prompts_group() -> None:
    """Research prompt templates (built-in, plus your own in $CHATCORE_HOME/prompts)."""


@prompts_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
@click.pass_obj
def list_command(settings: Settings, as_json: bool) -> None:
    """List the available templates."""
    templates = load_library(settings).templates
    if as_json:
        echo_json([template_to_dict(t) for t in templates])
        return
    width = max((len(t.name) for t in templates), default=0)
    for t in templates:
        mark = "  (user)" if t.origin == "user" else ""
        click.echo(f"{t.name:<{width}}  {t.description}{mark}")


@prompts_group.command("show")
@click.argument("name")
@click.pass_obj
def show_command(settings: Settings, name: str) -> None:
    """Show a template's description, variables, recommended settings and text."""
    t = load_library(settings).get(name)
    click.echo(f"{t.name}: {t.description}")
    click.echo(f"source: {t.source} ({t.origin})")
    click.echo("\nvariables:")
    for var_name, var in t.variables.items():
        need = "required" if var.required else f"default: {json.dumps(var.default, ensure_ascii=False)}"
        click.echo(f"  {var_name} ({need})\n      {var.description}")
    if not t.variables:
        click.echo("  (none)")
    click.echo("\nsettings:")
    for key, value in t.settings.items():
        click.echo(f"  {key}: {value}")
    if not t.settings:
        click.echo("  (none)")
    if t.system:
        click.echo("\nsystem:")
        click.echo(_indent(t.system))
    click.echo("\nbody:")
    click.echo(_indent(t.body))


@prompts_group.command("render")
@click.argument("name")
@click.option("--var", "pairs", multiple=True, metavar="NAME=VALUE", help="A variable's value; repeat for each.")
@click.pass_obj
def render_command(settings: Settings, name: str, pairs: tuple[str, ...]) -> None:
    """Print a filled-in template without running a model, to check what it will send."""
    rendered = load_library(settings).get(name).render(parse_var_options(pairs))
    if rendered.system:
        click.echo(f"[system]\n{rendered.system}\n\n[user]")
    click.echo(rendered.text)


def _indent(text: str) -> str:
    return "\n".join(f"  {line}" if line else "" for line in text.rstrip().splitlines())
