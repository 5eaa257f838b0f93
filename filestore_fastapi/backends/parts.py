"""Cutting a file into parts of a fixed size and sending them while the next one fills.

S3 multipart uploads and Azure staged blocks both want the same thing: parts of exactly
``part_size``, each sent by a blocking SDK call in the storage's own threads while the
event loop keeps receiving. One part is in flight at most, so a file costs about two
parts of memory.
"""

from __future__ import annotations

import concurrent.futures
import io
from collections.abc import Callable

from ..buffer import ChunkBuffer
from .base import Chunk
from .threads import WorkerPool, wait, wait_out


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
    """Feeds full parts to ``send_part`` in ``workers``, in order.

    A full part is sent only once more bytes follow, so a file of at most one part never
    starts a multipart upload: the writer sends ``rest()`` in one request instead. The loop
    waits for a part only when the next one is full and the last is still going, and the
    wait holds no thread.
    """

    def __init__(self, part_size: int, send_part: SendPart, workers: WorkerPool) -> None:
        self._part_size = part_size
        self._send_part = send_part
        self._workers = workers
        self._pending = ChunkBuffer()
        self._in_flight: concurrent.futures.Future[None] | None = None
        self.parts_sent = 0

    async def write(self, chunk: Chunk) -> None:
        self._pending.append(chunk)
        while self._pending.size > self._part_size:
            await self._ship()

    async def _ship(self) -> None:
        await self.settle()
        pieces = self._pending.take(self._part_size)
        self.parts_sent += 1
        self._in_flight = self._workers.submit(self._send_part, pieces, self.parts_sent)

    async def settle(self) -> None:
        """Wait for the part in flight; its error, if any, is raised here."""
        future = self._in_flight
        if future is not None:
            await wait(future)  # cancelled here, it stays in flight for ``cancel`` to wait out
            self._in_flight = None

    async def finish(self) -> list[Chunk]:
        """Wait for the last full part and return the bytes after it (the final, short part)."""
        await self.settle()
        return self._pending.take()

    async def cancel(self) -> None:
        """Drop what is pending and wait out the part in flight, whose outcome no longer matters:
        it would otherwise land after the caller's clean-up."""
        self._pending.clear()
        future, self._in_flight = self._in_flight, None
        if future is not None:
            await wait_out(future)
