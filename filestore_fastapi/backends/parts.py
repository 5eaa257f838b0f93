"""Cutting a file into parts of a fixed size and sending them while the next one fills.

S3 multipart uploads and Azure staged blocks both want the same thing: parts of exactly
``part_size``, each sent by a blocking SDK call in the storage's own threads while the
event loop keeps receiving. Up to ``in_flight`` parts go up at once (``parts_in_flight``),
so a file costs about ``in_flight + 1`` parts of memory: the one filling and those going up.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import io
from collections.abc import Callable, Collection
from typing import Any

import anyio

from ..buffer import ChunkBuffer
from .base import Chunk
from .threads import WorkerPool, wait_out


def join_releasing(pieces: list[Chunk]) -> bytes:
    """The pieces as one ``bytes``, each piece let go as soon as it is copied (``pieces`` ends
    empty), so a part costs its own size once rather than twice while it is joined.
    ``BytesIO`` grows in place and hands over its buffer without a final copy."""
    buffer = io.BytesIO()
    pieces.reverse()
    while pieces:
        buffer.write(pieces.pop())
    return buffer.getvalue()


class PartReader(io.RawIOBase):
    """The pieces of a part read as one seekable stream, without joining them: a part then
    costs only the chunks it arrived in, allocated once by the server's own thread (no
    copy of it in each worker thread's malloc arena, which glibc keeps long after). A
    stream SDK can rewind it for a retry; the pieces are views of immutable bytes."""

    def __init__(self, pieces: list[Chunk]) -> None:
        super().__init__()
        self._pieces = [memoryview(piece).cast("B") for piece in pieces]
        self._size = sum(len(piece) for piece in self._pieces)
        self._position = 0
        self._index = 0  # the piece ``_position`` is in, and where that piece starts
        self._start = 0

    def __len__(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = min(max(base + offset, 0), self._size)
        self._index = self._start = 0
        while (
            self._index < len(self._pieces) and self._start + len(self._pieces[self._index]) <= self._position
        ):
            self._start += len(self._pieces[self._index])
            self._index += 1
        return self._position

    def read(self, size: int = -1) -> Any:
        """Up to ``size`` bytes from the current piece, as a view of it: no copy. An SDK reads
        a part in blocks to hash it or send it (botocore hashes every part again over plain
        HTTP, in 1 MiB reads); ``RawIOBase.read`` would allocate two copies of every block,
        in each sending thread's malloc arena, which glibc keeps (3.5 MiB a thread with 10
        parts in flight). A short read is allowed of a raw stream; ``b""`` is its end."""
        if size is None or size < 0:
            rest = bytearray(self._size - self._position)
            return bytes(memoryview(rest)[: self.readinto(rest)])
        if self._index >= len(self._pieces) or size == 0:
            return b""
        piece = self._pieces[self._index]
        offset = self._position - self._start
        count = min(len(piece) - offset, size)
        self._position += count
        if offset + count == len(piece):
            self._start += len(piece)
            self._index += 1
        return piece[offset : offset + count]

    def readinto(self, buffer: Any) -> int:
        target = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(target) and self._index < len(self._pieces):
            piece = self._pieces[self._index]
            offset = self._position - self._start
            count = min(len(piece) - offset, len(target) - filled)
            target[filled : filled + count] = piece[offset : offset + count]
            filled += count
            self._position += count
            if self._position - self._start == len(piece):
                self._start += len(piece)
                self._index += 1
        return filled

    def close(self) -> None:
        self._pieces = []
        super().close()


SendPart = Callable[[list[Chunk], int], None]
"""Blocking: send ``pieces`` (joined, they are the part) as part ``number`` (from 1).
Called from several threads at once, for different parts, once ``start`` is done."""


async def wait_any(futures: Collection[concurrent.futures.Future[Any]]) -> None:
    """Until at least one of ``futures`` is done, holding no thread on asyncio. Their
    outcomes are left for the caller to read; cancelled, it leaves them running."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # another event loop (trio): a thread of its own waits
        first = functools.partial(
            concurrent.futures.wait, futures, return_when=concurrent.futures.FIRST_COMPLETED
        )
        await anyio.to_thread.run_sync(first, abandon_on_cancel=True)
        return
    woken = loop.create_future()

    def wake_up() -> None:
        if not woken.done():
            woken.set_result(None)

    def done(_: concurrent.futures.Future[Any]) -> None:  # in the thread that finished it
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(wake_up)

    for future in futures:
        future.add_done_callback(done)
    await woken


class PartPipeline:
    """Feeds full parts to ``send_part`` in ``workers``, up to ``in_flight`` at once.

    A full part is sent only once more bytes follow, so a file of at most one part never
    starts a multipart upload: ``finish`` hands it back for one request instead. ``start``,
    if given, runs once before any part (the writer claims its key or blob name there): the
    first parts wait for it, held in memory, and then go up together, finishing in any
    order (the writer orders them by number). ``write`` waits (holding no thread) only when
    the next part is full and ``in_flight`` parts are held or going up, so no more than that
    is ever queued. An error (of ``start`` or of a part) is raised by the next ``write``,
    ``settle`` or ``finish``.
    """

    def __init__(
        self,
        part_size: int,
        send_part: SendPart,
        workers: WorkerPool,
        in_flight: int = 1,
        start: Callable[[], None] | None = None,
    ) -> None:
        if in_flight < 1:
            raise ValueError(f"in_flight must be at least 1, got {in_flight}")
        self._part_size = part_size
        self._send_part = send_part
        self._workers = workers
        self._limit = in_flight
        self._start = start
        self._starting: concurrent.futures.Future[None] | None = None
        """``start`` running, until it has succeeded."""
        self._held: list[tuple[list[Chunk], int]] = []
        """Parts waiting for ``start``."""
        self._pending = ChunkBuffer()
        self._in_flight: dict[int, concurrent.futures.Future[None]] = {}
        """The parts sent and not yet found done, by number."""
        self.parts_sent = 0

    async def write(self, chunk: Chunk) -> None:
        self._reap()
        self._pending.append(chunk)
        while self._pending.size > self._part_size:
            await self._ship()

    def _reap(self) -> None:
        """Send the held parts once ``start`` is done and forget the parts that are done; the
        first error found is raised (and stays there, raised again by the next call)."""
        if self._starting is not None and self._starting.done():
            self._starting.result()  # raises its error, or CancelledError if it never ran
            self._starting = None
            for pieces, number in self._held:
                self._in_flight[number] = self._workers.submit(self._send_part, pieces, number)
            self._held.clear()
        for number, future in list(self._in_flight.items()):
            if future.done():
                future.result()
                del self._in_flight[number]

    async def _wait_for_room(self, limit: int) -> None:
        """Until fewer than ``limit`` parts are held or in flight; an error of any is raised here."""
        self._reap()
        while len(self._held) + len(self._in_flight) >= limit:
            waiting = list(self._in_flight.values())
            if self._starting is not None:
                waiting.append(self._starting)
            # Cancelled here, they stay in flight for ``cancel`` to wait out.
            await wait_any(waiting)
            self._reap()

    async def _ship(self) -> None:
        await self._wait_for_room(self._limit)
        pieces = self._pending.take(self._part_size)
        self.parts_sent += 1
        if self.parts_sent == 1 and self._start is not None:
            self._starting = self._workers.submit(self._start)
        if self._starting is not None:
            self._held.append((pieces, self.parts_sent))
        else:
            self._in_flight[self.parts_sent] = self._workers.submit(self._send_part, pieces, self.parts_sent)

    async def settle(self) -> None:
        """Wait for every part; the first error among them is raised here."""
        await self._wait_for_room(1)

    async def finish(self) -> list[Chunk]:
        """The end of the file: once a part has been sent, the bytes after the full parts go as
        the last part, in flight with the others, and every part is waited for (an empty list
        is returned). A file that never filled a part is returned whole, for one request."""
        if self.parts_sent and self._pending.size:
            await self._ship()
        await self.settle()
        return self._pending.take()

    async def cancel(self) -> None:
        """Drop what is pending or held and wait out ``start`` and every part in flight, whose
        outcome no longer matters: they would otherwise land after the caller's clean-up. What
        is still queued for a thread is cancelled instead."""
        self._pending.clear()
        self._held.clear()
        if self._starting is not None:
            self._starting.cancel()  # only if it has not started: a running call cannot stop
            await wait_out(self._starting)
            self._starting = None
        for future in self._in_flight.values():
            future.cancel()
        while self._in_flight:
            number = next(iter(self._in_flight))
            await wait_out(self._in_flight[number])
            del self._in_flight[number]  # cancelled while waiting, the rest stay for a retry
