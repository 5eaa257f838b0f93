"""The writer contract every backend implements: write, commit, abort.

A backend needs one ``Storage`` subclass (``open_writer``, ``delete``, ``open``) and
one ``Writer``. The session feeds the writer each chunk as it arrives, then either
commits it (the object becomes visible under its final name) or aborts it (nothing of
it remains). Once every file of the request is committed and the handler has run, each
writer is told to ``release`` (success) or ``revert`` (the request failed after all).
Hashing, limits and naming happen before the writer sees a byte.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Chunk = bytes | memoryview


@dataclass(frozen=True)
class WriteRequest:
    """What a backend needs to know to open a writer for one file."""

    field_name: str
    filename: str
    """The safe name the file should get (backends add a suffix on collision)."""
    content_type: str
    destination: str
    """Directory (local) or key prefix (memory, clouds), already resolved from the config."""


@dataclass
class StoredFile:
    """Where a committed file went; the session turns it into ``FileData``."""

    filename: str
    path: Path | None = None
    url: str | None = None
    file: bytes | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


class Writer(ABC):
    """Receives one file's bytes in order. ``commit`` or ``abort`` is called exactly once."""

    @abstractmethod
    async def write(self, chunk: Chunk) -> None:
        """Accept the next bytes. Chunks view immutable bytes: a writer may keep them uncopied."""

    @abstractmethod
    async def commit(self) -> StoredFile:
        """Make the object visible under its final name and say where it is."""

    @abstractmethod
    async def abort(self) -> None:
        """Remove everything written so far. Must not raise for an already-clean state."""

    async def revert(self) -> None:
        """After ``commit``, the request failed after all (a later file, the handler, a
        cancellation): remove the committed object and put back what it replaced, so the
        store is exactly as the request found it.

        A writer without it has its object removed with ``Storage.delete`` instead.
        """
        raise NotImplementedError

    async def release(self) -> None:
        """After ``commit``, the request succeeded: drop whatever was kept to ``revert``."""
        return  # most writers keep nothing


class NotFound(FileNotFoundError):
    """No object under this key. Every backend raises this one type (a ``FileNotFoundError``,
    so code written for a file system keeps working)."""


class StorageUnavailable(RuntimeError):
    """``verify()`` found the store unusable: the message says what is wrong (a missing
    bucket, container or directory, credentials refused, no permission to write)."""


@dataclass(frozen=True)
class ObjectInfo:
    """What ``stat`` tells of a stored object."""

    key: str
    size: int
    content_type: str | None
    """None where the store keeps none (a file system)."""


@dataclass(frozen=True)
class PresignedRequest:
    """A request a client can make without credentials: method, URL and headers to send."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
