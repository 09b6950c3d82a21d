"""The API's bounded line: ``running`` answers decode at once, ``waiting`` more queue, the rest get 429."""

from __future__ import annotations

import asyncio
import threading
from typing import Callable

from chatcore.api.errors import APIError
from chatcore.core.settings import DEFAULT_CONCURRENCY

# Answers allowed to wait for a turn; answers running at once default to DEFAULT_CONCURRENCY.
MAX_WAITING = 32
BUSY_RETRY_AFTER_S = 2


class Admission:
    """A bounded line for answers: ``running`` decode at once, ``waiting`` more queue, the rest get 429.

    Refusing at once is the point: past the line's size a client hears "busy, try again" instead of
    hanging on an ever longer queue. A turn is released when the answer's worker ends, whatever ended it.
    """

    def __init__(self, running: int = DEFAULT_CONCURRENCY, waiting: int = MAX_WAITING) -> None:
        if running < 1 or waiting < 0:
            raise ValueError("running must be at least 1 and waiting at least 0")
        self.running, self.waiting = running, waiting
        self._admitted = 0  # running plus waiting; touched on the event loop only
        self._turns: asyncio.Semaphore | None = None

    @property
    def admitted(self) -> int:
        return self._admitted

    async def enter(self) -> Callable[[], None]:
        """Wait for a turn; returns its release, callable once from any thread. Raises 429 when full."""
        if self._admitted >= self.running + self.waiting:
            raise APIError(429, f"ChatCore is busy: {self.running} answers are running and {self.waiting} "
                                "are waiting; try again in a few seconds",
                           type="server_error", code="server_busy", headers={"Retry-After": str(BUSY_RETRY_AFTER_S)})
        if self._turns is None:
            self._turns = asyncio.Semaphore(self.running)
        self._admitted += 1
        try:
            await self._turns.acquire()
        except BaseException:
            self._admitted -= 1
            raise
        loop, lock, released = asyncio.get_running_loop(), threading.Lock(), [False]

        def free() -> None:
            self._admitted -= 1
            self._turns.release()

        def release() -> None:
            with lock:
                if released[0]:
                    return
                released[0] = True
            try:
                loop.call_soon_threadsafe(free)
            except RuntimeError:  # the loop has closed: the server is gone, and its line with it
                pass

        return release
