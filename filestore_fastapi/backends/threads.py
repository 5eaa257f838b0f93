"""WorkerPool: a storage's own threads for its blocking SDK and disk calls.

anyio's default thread pool is shared with FastAPI's ``def`` routes and dependencies. A
store that stops answering would hold its threads (and, waiting on them, more threads)
until nothing else in the app could run. Each storage gets a bounded pool of its own
instead, and waiting for a call occupies no thread at all on asyncio.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio

T = TypeVar("T")


class WorkerPool:
    """At most ``max_threads`` threads, made on first use; ``run`` calls a function there."""

    def __init__(self, max_threads: int, name: str) -> None:
        if max_threads < 1:
            raise ValueError(f"max_threads must be at least 1, got {max_threads}")
        self.max_threads = max_threads
        self._name = name
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def submit(self, function: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        """Start ``function(*args)`` in the pool; ``wait`` for its result."""
        with self._lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    self.max_threads, thread_name_prefix=self._name
                )
            return self._executor.submit(function, *args)

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` in the pool; cancelling the caller does not stop a call that
        has started (no thread can be interrupted), it only stops waiting for it."""
        return await wait(self.submit(function, *args))


async def wait(future: concurrent.futures.Future[T]) -> T:
    """The result of ``future``, awaited without holding a thread on asyncio."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # another event loop (trio): a thread of its own waits
        await anyio.to_thread.run_sync(concurrent.futures.wait, [future], abandon_on_cancel=True)
        return future.result()
    return await asyncio.wrap_future(future)


async def wait_out(future: concurrent.futures.Future[Any]) -> None:
    """Wait until ``future`` is done, whatever its outcome: its work must not land after
    the caller's clean-up."""
    if not future.done():
        with contextlib.suppress(Exception):
            await wait(future)
