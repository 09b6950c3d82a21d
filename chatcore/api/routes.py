"""The OpenAI-compatible HTTP API's routes: ``GET /v1/models``, ``POST /v1/chat/completions``, ``/v1/library``,
``/v1/eval``, ``/v1/arena`` and ``/v1/data``.

Routes only map to :class:`OpenAIServing`'s methods. The API is mounted on the web app's server
(:func:`v1_mount` before it starts, :func:`mount_api` on a running one) or served alone
(:func:`create_api_app`, :func:`serve_api`). The official ``openai`` client works against it unmodified.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, Response
from starlette.routing import Mount

from chatcore.api.admission import MAX_WAITING, Admission
from chatcore.api.data import DataServing
from chatcore.api.errors import APIError, api_error_handler, chatcore_error_handler
from chatcore.api.evaluation import EvaluationServing
from chatcore.api.library import LibraryServing
from chatcore.api.serving import OpenAIServing
from chatcore.core.errors import ChatCoreError
from chatcore.core.settings import DEFAULT_CONCURRENCY

API_PREFIX = "/v1"


def create_v1_app(*, manager: Any, store: Any | None, api_key: str | None = None,
                  max_running: int = DEFAULT_CONCURRENCY, max_waiting: int = MAX_WAITING,
                  library: Any | None = None, evaluations: Any | None = None, arena: Any | None = None,
                  data: Any | None = None) -> FastAPI:
    """The API as an application whose routes are relative to ``/v1``; its ``state.admission`` is its line.

    ``library`` is the :class:`~chatcore.services.library.Library` the answers and ``/v1/library`` use; by
    default one over ``store`` with the environment's limits (none without a store). Its ``state.library``.
    """
    if library is None and store is not None:
        from chatcore.core.settings import Settings
        from chatcore.services.library import Library

        library = Library.from_settings(Settings(), store)
    serving = OpenAIServing(manager, store, api_key, Admission(max_running, max_waiting), library=library)
    app = FastAPI(title="ChatCore OpenAI-compatible API", docs_url=None, redoc_url=None, openapi_url=None,
                  exception_handlers={APIError: api_error_handler, ChatCoreError: chatcore_error_handler})
    app.state.admission = serving.admission
    app.state.library = library
    if store is not None and (evaluations is None or arena is None):  # one of each, shared with the page
        from chatcore.services.evaluation import for_server

        built = for_server(manager, store, library)
        evaluations, arena = evaluations or built[0], arena or built[1]
    app.state.evaluations, app.state.arena = evaluations, arena
    if store is not None and data is None:  # an API alone (tests): its own, over the same store
        from chatcore.services.data import for_server as data_for_server

        data = data_for_server(manager, store)
    app.state.data = data
    _library_routes(app, LibraryServing(library, serving.authenticate))
    _evaluation_routes(app, EvaluationServing(evaluations, arena, serving.authenticate))
    _data_routes(app, DataServing(data, serving.authenticate, resolve_model=lambda model: _model_spec(serving, model)))

    @app.get("/models")
    async def list_models(raw_request: Request) -> Response:
        return await serving.show_available_models(raw_request)

    @app.get("/models/{model_id:path}")
    async def get_model(raw_request: Request, model_id: str) -> Response:
        return await serving.show_model(raw_request, model_id)

    @app.post("/chat/completions")
    async def chat_completions(raw_request: Request) -> Response:
        return await serving.create_chat_completion(raw_request)

    return app


def _library_routes(app: FastAPI, library: LibraryServing) -> None:
    """``/library/...``: documents, upload, jobs and search (see :mod:`chatcore.api.library`)."""
    app.add_api_route("/library/collections", library.collections, methods=["GET"])
    app.add_api_route("/library/documents", library.list_documents, methods=["GET"])
    app.add_api_route("/library/documents", library.upload, methods=["POST"])
    app.add_api_route("/library/documents/{document_id}", library.get_document, methods=["GET"])
    app.add_api_route("/library/documents/{document_id}", library.delete_document, methods=["DELETE"])
    app.add_api_route("/library/documents/{document_id}/restore", library.restore_document, methods=["POST"])
    app.add_api_route("/library/jobs/{job_id}", library.get_job, methods=["GET"])
    app.add_api_route("/library/jobs/{job_id}/cancel", library.cancel_job, methods=["POST"])
    app.add_api_route("/library/search", library.search, methods=["GET"])


def _evaluation_routes(app: FastAPI, serving: EvaluationServing) -> None:
    """``/eval/...`` and ``/arena/...``: test sets, runs, reports, battles (see :mod:`chatcore.api.evaluation`)."""
    routes = [
        ("/eval/test_sets", serving.list_test_sets, "GET"), ("/eval/test_sets", serving.add_test_set, "POST"),
        ("/eval/test_sets/example", serving.add_example, "POST"),
        ("/eval/test_sets/{ref}", serving.get_test_set, "GET"), ("/eval/test_sets/{ref}", serving.delete_test_set, "DELETE"),
        ("/eval/test_sets/{test_set_id}/restore", serving.restore_test_set, "POST"),
        ("/eval/runs", serving.list_runs, "GET"), ("/eval/runs", serving.create_run, "POST"),
        ("/eval/runs/{run_id}", serving.get_run, "GET"), ("/eval/runs/{run_id}/cancel", serving.cancel_run, "POST"),
        ("/eval/runs/{run_id}/resume", serving.resume_run, "POST"),
        ("/eval/runs/{run_id}/rescore", serving.rescore_run, "POST"),
        ("/eval/runs/{run_id}/outputs", serving.run_outputs, "GET"), ("/eval/report", serving.report, "GET"),
        ("/arena/battles", serving.list_battles, "GET"), ("/arena/battles", serving.create_battle, "POST"),
        ("/arena/battles/{battle_id}", serving.get_battle, "GET"),
        ("/arena/battles/{battle_id}/vote", serving.vote, "POST"),
        ("/arena/leaderboard", serving.leaderboard, "GET"), ("/arena/votes", serving.votes, "GET"),
    ]
    for path, endpoint, method in routes:
        app.add_api_route(path, endpoint, methods=[method])


def _data_routes(app: FastAPI, serving: DataServing) -> None:
    """``/data/...``: tables, profiles, queries, analyses, questions and answers (see :mod:`chatcore.api.data`)."""
    routes = [
        ("/data/tables", serving.list_tables, "GET"), ("/data/tables", serving.add_table, "POST"),
        ("/data/tables/{ref}", serving.get_table, "GET"), ("/data/tables/{ref}", serving.delete_table, "DELETE"),
        ("/data/tables/{table_id}/restore", serving.restore_table, "POST"),
        ("/data/tables/{ref}/profile", serving.profile, "GET"),
        ("/data/query", serving.query, "POST"), ("/data/analyses", serving.analyze, "POST"),
        ("/data/ask", serving.ask, "POST"),
        ("/data/answers", serving.list_answers, "GET"), ("/data/answers/{answer_id}", serving.get_answer, "GET"),
    ]
    for path, endpoint, method in routes:
        app.add_api_route(path, endpoint, methods=[method])


def _model_spec(serving: OpenAIServing, model: str) -> str | None:
    """The spec a data question loads for a request's ``model``: ``None`` for the default model (asked for by
    its name), else the spec; 404 for a model the server does not have, 503 while it loads (blocking)."""
    backend = serving.backend_for(model)
    return None if backend is serving.manager.peek(None) else model


def v1_mount(**options: Any) -> Mount:
    """The API as a route at ``/v1``, for an app built with it (``FastAPI(routes=[...])``) before it serves.

    ``options`` are :func:`create_v1_app`'s.
    """
    return Mount(API_PREFIX, app=create_v1_app(**options), name="openai-api")


def mount_api(fastapi_app: FastAPI, **options: Any) -> FastAPI:
    """Serve the API under ``/v1`` of ``fastapi_app``, ahead of its other routes; returns the /v1 app.

    ``options`` are :func:`create_v1_app`'s.
    """
    mount = v1_mount(**options)
    # First in the route list, so that a catch-all mount at "/" (Gradio's) never shadows it.
    fastapi_app.router.routes.insert(0, mount)
    return mount.app


def create_api_app(**options: Any) -> FastAPI:
    """A server with the API alone (``chatcore serve --api-only``); ``options`` are :func:`create_v1_app`'s."""
    mount = v1_mount(**options)
    app = FastAPI(title="ChatCore", docs_url=None, redoc_url=None, openapi_url=None, routes=[mount])
    app.state.admission = mount.app.state.admission
    return app


def serve_api(settings: Any, *, host: str = "127.0.0.1", port: int = 7860,
              concurrency: int = DEFAULT_CONCURRENCY) -> None:
    """``chatcore serve --api-only``: load the backend in the background and serve the API until interrupted,
    ``concurrency`` answers at once."""
    import uvicorn

    from chatcore.services.accounts import Accounts
    from chatcore.services.models import ModelManager
    from storage import Store

    store = Store(settings.db_path)
    manager = ModelManager(settings)
    manager.start()
    if host not in ("127.0.0.1", "localhost", "::1") and not settings.api_key and not Accounts(store).enabled:
        print(f"warning: serving on {host} with no API key: anyone who can reach it can use it "
              "(give --api-key or CHATCORE_API_KEY, or issue keys with `chatcore users key`)")
    from chatcore.services.library import Library

    library = Library.from_settings(settings, store)
    library.resume_interrupted()  # ingest jobs a restart cut short go on in the background
    library.reindex_outdated()  # documents cut with older chunk settings are cut again
    from chatcore.services.evaluation import for_server

    evaluations, arena = for_server(manager, store, library)
    evaluations.mark_interrupted()  # runs a restart cut short wait to be resumed
    from chatcore.services.data import for_server as data_for_server

    data = data_for_server(manager, store)
    data.recover()  # loads a crash cut short leave nothing behind
    app = create_api_app(manager=manager, store=store, api_key=settings.api_key, max_running=concurrency,
                         library=library, evaluations=evaluations, arena=arena, data=data)
    uvicorn.run(app, host=host, port=port, log_level="warning")
