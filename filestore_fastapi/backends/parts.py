"""Cutting a file into parts of a fixed size and sending them while the next one fills.

S3 multipart uploads and Azure staged blocks both want the same thing: parts of exactly
``part_size``, each sent by a blocking SDK call while the event loop keeps receiving. One
part is in flight at most, so a file costs about two parts of memory.
"""

from __future__ import annotations

import concurrent.futures
import io
from collections.abc import Callable

import anyio

from .base import Chunk


def join_releasing(pieces: list[Chunk]) -> bytes:
    """The pieces as one ``bytes``, each piece let go as soon as it is copied (``pieces`` ends
    empty), so a part costs its own size once rather than twice while it is joined.
    ``BytesIO`` grows in place and hands over its buffer without a final copy."""
    buffer = io.BytesIO()
    pieces.reverse()
    while pieces:
        buffer.write(pieces.pop())
    return buffer.getvalue()


SendPart = Callable[[list[Chunk], int], None]
"""Blocking: send ``pieces`` (joined, they are the part) as part ``number`` (from 1)."""


class PartPipeline:
    """Feeds full parts to ``send_part`` on a one-thread executor, in order.

    A full part is sent only once more bytes follow, so a file of at most one part never
    starts a multipart upload: the writer sends ``rest()`` in one request instead. anyio has
    no background task that outlives one call, hence the executor; the loop waits for a part
    (through ``anyio.to_thread``) only when the next one is full and the last is still going.
    """

    def __init__(self, part_size: int, send_part: SendPart, thread_name: str) -> None:
        self._part_size = part_size
        self._send_part = send_part
        self._thread_name = thread_name
        self._pending: list[Chunk] = []
        self._pending_size = 0
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._in_flight: concurrent.futures.Future[None] | None = None
        self.parts_sent = 0

    async def write(self, chunk: Chunk) -> None:
        view = memoryview(chunk)
        while self._pending_size + len(view) > self._part_size:
            room = self._part_size - self._pending_size
            if room:
                self._pending.append(view[:room])
                self._pending_size += room
                view = view[room:]
            await self._ship()
        if view:
            self._pending.append(view)
            self._pending_size += len(view)

    async def _ship(self) -> None:
        await self.settle()
        pieces, self._pending, self._pending_size = self._pending, [], 0
        self.parts_sent += 1
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=self._thread_name)
        self._in_flight = self._executor.submit(self._send_part, pieces, self.parts_sent)

    async def settle(self) -> None:
        """Wait for the part in flight; its error, if any, is raised here."""
        future, self._in_flight = self._in_flight, None
        if future is None:
            return
        if not future.done():
            await anyio.to_thread.run_sync(concurrent.futures.wait, [future])
        future.result()

    async def finish(self) -> list[Chunk]:
        """Wait for the last full part and return the bytes after it (the final, short part)."""
        await self.settle()
        self._close()
        rest, self._pending, self._pending_size = self._pending, [], 0
        return rest

    async def cancel(self) -> None:
        """Drop what is pending and wait out the part in flight, whose outcome no longer matters:
        it would otherwise land after the caller's clean-up."""
        self._pending, self._pending_size = [], 0
        future, self._in_flight = self._in_flight, None
        if future is not None:
            await anyio.to_thread.run_sync(concurrent.futures.wait, [future])
        self._close()

    def _close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)
