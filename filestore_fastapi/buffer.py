"""ChunkBuffer: bytes waiting to be written, bounded by their size *and* their number.

A server hands the body over in whatever pieces the client's TCP segments made: a
hostile client sending one byte per segment turns a 1 MiB batch into a million Python
objects (hundreds of MiB). The buffer copies small pieces into a shared block and keeps
only large views as they are, so it holds at most one object per ``COALESCE_BYTES`` of
data, whatever the chunking.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from .backends.base import Chunk

COALESCE_BYTES = 64 * 1024
"""Pieces smaller than this are copied together; larger ones are kept uncopied."""


def _pins_much_more(view: Chunk) -> bool:
    """Whether keeping ``view`` would keep alive a buffer more than twice its size."""
    if not isinstance(view, memoryview) or view.obj is None:
        return False
    return memoryview(view.obj).nbytes > 2 * view.nbytes


class ChunkBuffer:
    """A FIFO of bytes: ``append`` what arrives, ``take`` batches of the size a writer wants.

    ``size`` counts the bytes held. Held objects number at most ``size / COALESCE_BYTES + 2``,
    so the memory a buffer costs is its bytes plus a bounded overhead.
    """

    def __init__(self) -> None:
        self._pieces: deque[Chunk] = deque()
        self._tail = bytearray()
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def append(self, chunk: Chunk) -> None:
        length = len(chunk)
        if not length:
            return
        self.size += length
        if length >= COALESCE_BYTES and not _pins_much_more(chunk):
            self._seal_tail()
            self._pieces.append(chunk)
            return
        self._tail += chunk
        if len(self._tail) >= COALESCE_BYTES:
            self._seal_tail()

    def _seal_tail(self) -> None:
        if self._tail:
            # Never written to again, so its view is as immutable as a ``bytes``.
            self._pieces.append(memoryview(self._tail))
            self._tail = bytearray()

    def take(self, limit: int | None = None) -> list[Chunk]:
        """The oldest ``limit`` bytes (all of them by default), as pieces in order."""
        self._seal_tail()
        wanted = self.size if limit is None else min(limit, self.size)
        taken: list[Chunk] = []
        remaining = wanted
        while remaining:
            head = self._pieces.popleft()
            if len(head) > remaining:
                view = memoryview(head)
                taken.append(view[:remaining])
                self._pieces.appendleft(view[remaining:])
                remaining = 0
            else:
                taken.append(head)
                remaining -= len(head)
        self.size -= wanted
        return taken

    def clear(self) -> None:
        self._pieces.clear()
        self._tail = bytearray()
        self.size = 0


@runtime_checkable
class BatchWriter(Protocol):
    """A capability of some writers (local disk): take a whole batch in one blocking call,
    made from a worker thread of the storage's ``workers``, one call at a time and never
    together with ``write``. The session then hashes and writes a batch in one thread hop
    instead of awaiting ``write`` per piece."""

    def write_batch_blocking(self, chunks: Sequence[Chunk]) -> None: ...
