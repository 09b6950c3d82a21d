"""``chatcore eval``: measure the current model."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from chatcore.cli.group import main
from chatcore.cli.options import model_options, settings_from


@main.group("eval")
def eval_group() -> None:
    """Measure the model: perplexity on your own texts."""


@eval_group.command("perplexity")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--window", default=1024, show_default=True, help="Tokens per window.")
@click.option("--stride", type=int, help="Tokens between window starts (default: half a window).")
@model_options
@click.pass_context
def perplexity_command(ctx: click.Context, file: Path, window: int, stride: int | None, **options: Any) -> None:
    """Print the model's perplexity on FILE (UTF-8 text), e.g. `perplexity: 23.41`."""
    from chatcore.engine.loader import load_engine
    from chatcore.engine.perplexity import perplexity

    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise click.ClickException(f"{file} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    settings = settings_from(ctx, options).with_overrides(compile="0")  # scoring never runs the decode step
    engine = load_engine(settings, progress=lambda m: click.echo(m, err=True))
    bar = tqdm(total=None, unit="window", desc="scoring", file=sys.stderr)

    def advance(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    result = perplexity(engine.model, engine.tokenizer, text, window=window, stride=stride, progress=advance)
    bar.close()
    click.echo(f"perplexity: {result.perplexity:.2f}")
    click.echo(f"[{result.tokens} tokens scored, mean NLL {result.mean_nll:.4f}]", err=True)
