"""``chatcore serve``: the web app, the same one ``python app.py`` and ``make run`` start."""

from __future__ import annotations

import click

from chatcore.cli import main


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=7860, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on.")
@click.option("--model", "-m", help="Model: smollm2-135m-instruct (default), a Hugging Face id, a directory or a .gguf file.")
@click.option("--device", help="auto (default), cpu, cuda, cuda:N or mps.")
@click.option("--dtype", help="auto (default), float32, bfloat16 or float16.")
@click.option("--concurrency", default=2, show_default=True, type=click.IntRange(1, 64),
              help="Answers generated at once.")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in a browser.")
def serve(host: str, port: int, model: str | None, device: str | None, dtype: str | None, concurrency: int,
          open_browser: bool) -> None:
    """Start the web app at http://HOST:PORT; the model loads in the background."""
    import app  # the page lives at the top level, next to the packages it composes

    app.serve(host=host, port=port, model=model, device=device, dtype=dtype, open_browser=open_browser,
              concurrency=concurrency)
