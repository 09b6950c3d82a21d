"""Serving the page and the API on one port: ``python app.py`` and ``chatcore serve`` start here.

    python app.py --host 127.0.0.1 --port 7860 [--model M] [--device D] [--dtype T] [--open]

The model loads in the background at start-up; history and search work while it loads.
"""

from __future__ import annotations

import argparse
from typing import Any

import gradio as gr

from chatcore.core.settings import DEFAULT_CONCURRENCY
from chatcore.web.app import CSS, HEAD, MAX_QUEUE, build_app
from chatcore.web.workspace import Workspace


def launch(demo: gr.Blocks, *, host: str = "127.0.0.1", port: int = 7860, open_browser: bool = False,
           concurrency_limit: int = DEFAULT_CONCURRENCY, **kwargs: Any) -> Any:
    """Queue the expensive events and serve the page."""
    demo.queue(default_concurrency_limit=concurrency_limit, max_size=MAX_QUEUE)
    # System fonts only: the page makes no request to any other host (the default theme fetches Google Fonts).
    theme = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"],
                           font_mono=["ui-monospace", "SFMono-Regular", "monospace"])
    return demo.launch(server_name=host, server_port=port, inbrowser=open_browser, css=CSS, head=HEAD,
                       theme=theme, footer_links=["api", "settings"], **kwargs)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="app.py", description="ChatCore's web app, with the OpenAI API under /v1.")
    parser.add_argument("--host", default="127.0.0.1", help="Address to listen on (default 127.0.0.1).")
    parser.add_argument("--port", type=int, default=7860, help="Port (default 7860).")
    parser.add_argument("--model", help="Model: smollm2-135m-instruct (default), a Hugging Face id, a directory or a .gguf file.")
    parser.add_argument("--device", help="auto (default), cpu, cuda, cuda:N or mps.")
    parser.add_argument("--dtype", help="auto (default), float32, bfloat16 or float16.")
    parser.add_argument("--quant", choices=["auto", "none", "int8", "int4"],
                        help="Weight quantization for Llama-family models: auto (default: fastest within 2%% "
                             "perplexity), none, int8 or int4.")
    parser.add_argument("--kv-cache", choices=["int8", "bfloat16"],
                        help="How the CPU decoder keeps keys and values: int8 (default: half the memory) or bfloat16.")
    parser.add_argument("--backend", choices=["local", "openai"],
                        help="local (default): decode here; openai: use the server at --base-url.")
    parser.add_argument("--base-url", help="An OpenAI-compatible server, e.g. http://gpu-host:8000/v1 "
                                           "(vLLM, TGI, Ollama, llama.cpp, ChatCore).")
    parser.add_argument("--backend-api-key", help="The key that server expects (or CHATCORE_BACKEND_API_KEY).")
    parser.add_argument("--api-key", help="Require this key on the OpenAI API at /v1 (or CHATCORE_API_KEY).")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY,
                        help=f"Answers generated at once (default {DEFAULT_CONCURRENCY}).")
    parser.add_argument("--open", action="store_true", help="Open the page in a browser.")
    return parser.parse_args(argv)


def serve(*, host: str = "127.0.0.1", port: int = 7860, model: str | None = None, device: str | None = None,
          dtype: str | None = None, quant: str | None = None, kv_cache: str | None = None, backend: str | None = None,
          base_url: str | None = None, backend_api_key: str | None = None, api_key: str | None = None,
          open_browser: bool = False, concurrency: int = DEFAULT_CONCURRENCY, settings: Any = None) -> None:
    """Start loading the model in the background, then serve the page and the API until interrupted.

    ``settings`` (default: from the environment) is the base the other arguments override.

    Once an account exists (``chatcore users add NAME``) the page asks for a login and each account sees
    only its own history; an API key alone (``--api-key``) guards the API and leaves the page open.
    """
    from chatcore.core.settings import Settings

    settings = (settings or Settings()).with_overrides(model=model, device=device, dtype=dtype, quant=quant,
                                                       kv_cache=kv_cache, backend=backend, base_url=base_url,
                                                       backend_api_key=backend_api_key, api_key=api_key)
    demo = start(settings, host=host, port=port, open_browser=open_browser, concurrency=concurrency)
    print(f"OpenAI-compatible API at http://{host}:{port}/v1")
    demo.block_thread()


def start(settings: Any, *, host: str = "127.0.0.1", port: int = 7860, open_browser: bool = False,
          concurrency: int = DEFAULT_CONCURRENCY, quiet: bool = False) -> gr.Blocks:
    """Load the backend ``settings`` name in the background and serve the page with the API at /v1;
    returns the launched app without blocking (``demo.close()`` stops it).

    The server accepts its first connection with /v1 already mounted: a client polling the API at
    start-up hears 503 "the model is still loading", never 404.
    """
    from chatcore.api.routes import v1_mount
    from chatcore.services.accounts import Accounts
    from chatcore.services.data import for_server as data_for_server
    from chatcore.services.evaluation import for_server
    from chatcore.services.library import Library
    from chatcore.services.models import ModelManager
    from storage import Store

    settings.home.mkdir(parents=True, exist_ok=True)
    manager = ModelManager(settings)
    manager.start()
    store = Store(settings.db_path)
    accounts = Accounts(store)
    # One library for the page and the API, so a job started in one is cancelled from the other in-process.
    library = Library.from_settings(settings, store)
    # Ingest cut short by a restart goes on, and documents cut with older chunk settings are cut again.
    library.resume_interrupted()
    library.reindex_outdated()
    # One evaluation service and one arena for the page and the API; runs a restart cut short wait to be resumed.
    evaluations, arena = for_server(manager, store, library)
    evaluations.mark_interrupted()
    # One data service for the page and the API: one process opens each owner's DuckDB file through one lock.
    data = data_for_server(manager, store)
    data.recover()  # loads a crash cut short leave nothing behind
    demo = build_app(Workspace(manager, store, library=library, evaluations=evaluations, arena=arena, data=data),
                     concurrency_limit=concurrency)
    api = v1_mount(manager=manager, store=store, api_key=settings.api_key, max_running=concurrency, library=library,
                   evaluations=evaluations, arena=arena, data=data)
    # list(), not .enabled: an API key alone must not force logins on the page.
    launch(demo, host=host, port=port, open_browser=open_browser, concurrency_limit=concurrency,
           prevent_thread_lock=True, quiet=quiet, auth=accounts.authenticate if accounts.list() else None,
           app_kwargs={"routes": [api]})  # Gradio builds its app on these: /v1 is there, and first, from the start
    return demo


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    serve(host=args.host, port=args.port, model=args.model, device=args.device, dtype=args.dtype, quant=args.quant,
          kv_cache=args.kv_cache, backend=args.backend, base_url=args.base_url, backend_api_key=args.backend_api_key, api_key=args.api_key,
          open_browser=args.open, concurrency=args.concurrency)


if __name__ == "__main__":
    main()
