"""A real uvicorn server in a thread on a free 127.0.0.1 port, for tests that speak HTTP."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any, Iterator

import uvicorn


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run ``app`` until the block ends; yields its base URL (``http://127.0.0.1:PORT``)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def manager_for(backend: Any) -> Any:
    """A ``ModelManager`` that has finished loading ``backend``."""
    from chatcore.core.settings import Settings
    from chatcore.services.models import ModelManager

    manager = ModelManager(Settings(), loader=lambda settings, progress: backend)
    manager.start()
    manager.wait()
    return manager


def two_accounts(store: Any) -> dict[str, str]:
    """Accounts ``ada`` and ``bob`` in ``store``, and an API key of each: what isolation tests compare."""
    from chatcore.services.accounts import Accounts

    accounts = Accounts(store)
    for name in ("ada", "bob"):
        accounts.add(name, f"{name}-password-1")
    return {name: accounts.issue_key(name) for name in ("ada", "bob")}
