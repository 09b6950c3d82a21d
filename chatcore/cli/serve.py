"""``chatcore serve``: the web app with the OpenAI API under /v1 (what ``python app.py`` starts), or the API alone."""

from __future__ import annotations

import click

from chatcore.cli.group import main
from chatcore.cli.options import backend_options, model_options, settings_from
from chatcore.core.settings import DEFAULT_CONCURRENCY


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=7860, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on.")
@model_options
@backend_options
@click.option("--api-key", envvar="CHATCORE_API_KEY", show_envvar=True,
              help="Require this key (Authorization: Bearer KEY) on the OpenAI API at /v1.")
@click.option("--api-only", is_flag=True, help="Serve only the OpenAI API at /v1, without the web page.")
@click.option("--concurrency", default=DEFAULT_CONCURRENCY, show_default=True, type=click.IntRange(1, 64),
              help="Answers generated at once, by the web page and by the API each.")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in a browser.")
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, api_key: str | None, api_only: bool, concurrency: int,
          open_browser: bool, **options: object) -> None:
    """Start the web app at http://HOST:PORT (and its API at /v1); the model loads in the background."""
    settings = settings_from(ctx, options).with_overrides(api_key=api_key)
    if api_only:
        from chatcore.api.routes import serve_api

        serve_api(settings, host=host, port=port, concurrency=concurrency)
        return
    from chatcore.web import server

    server.serve(host=host, port=port, settings=settings, open_browser=open_browser, concurrency=concurrency)
