"""``idle_timeout``: how long a request body may keep the server waiting for its next chunk.

uvicorn and most servers have no body timeout: a client that stops sending would keep its
temp file and descriptor for as long as it keeps the socket open. Only the wait for the
client counts (a slow store is not the client's fault), and one timer per request watches,
rather than one per chunk that a client sending bytes one at a time would multiply. Used
by the multipart session and by resumable uploads' PATCH bodies alike.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from time import monotonic

import anyio
from anyio.abc import TaskGroup


class IdleWatch:
    """Times the waits for a body's chunks (``receive``) and cancels a scope once one has
    lasted ``timeout`` seconds (``watching``); ``timeout=None`` watches nothing."""

    __slots__ = ("_since", "timeout")

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        self._since: float | None = None

    async def receive(self, chunks: AsyncIterator[bytes]) -> bytes:
        """The next chunk of ``chunks``, its wait timed (``StopAsyncIteration`` at the end)."""
        self._since = monotonic()  # per chunk: anyio.current_time() costs 5x more
        try:
            return await chunks.__anext__()
        finally:
            self._since = None

    @contextmanager
    def watching(self, reading: anyio.CancelScope, group: TaskGroup) -> Iterator[None]:
        """Cancel ``reading`` once a wait in ``receive`` reaches the timeout, until the
        block ends."""
        stop = self._start(reading, group)
        try:
            yield
        finally:
            stop()

    def _start(self, reading: anyio.CancelScope, group: TaskGroup) -> Callable[[], None]:
        """Start watching; returns the function that stops it.

        On asyncio it is a loop timer, re-armed for what is left when it fires early (a task
        and its cancel scopes cost a small upload ~10 % of its CPU); elsewhere a task of
        ``group``.
        """
        timeout = self.timeout
        if timeout is None:
            return _nothing
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # another event loop (trio)
            watchdog = anyio.CancelScope()
            group.start_soon(self._watch, reading, watchdog, timeout)
            return watchdog.cancel
        timer: asyncio.TimerHandle | None = None

        def check() -> None:
            nonlocal timer
            waited = self._waited()
            if waited >= timeout:
                reading.cancel()
            else:
                timer = loop.call_later(timeout - waited, check)

        timer = loop.call_later(timeout, check)
        return lambda: timer.cancel() if timer is not None else None

    def _waited(self) -> float:
        since = self._since
        return 0.0 if since is None else monotonic() - since

    async def _watch(self, reading: anyio.CancelScope, watchdog: anyio.CancelScope, timeout: float) -> None:
        with watchdog:
            while (waited := self._waited()) < timeout:
                await anyio.sleep(timeout - waited)
            reading.cancel()


def _nothing() -> None:
    pass
