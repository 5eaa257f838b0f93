"""The backend contract: a ``Backend`` opens ``Writer``s (write, commit, abort, then
revert or release), and deletes, opens, stats, verifies and cleans up objects.

It knows nothing of HTTP, FastAPI or forms: a backend stores bytes under keys and raises
domain errors (``NotFound``, ``KeyTaken``, ``StorageUnavailable``, anything else for a
failure of the store), which the session maps to HTTP answers in one place. What only
some stores can do is a capability protocol of its own (``Presigning``, ``Composing``).

The session feeds a writer each chunk as it arrives, then either commits it (the object
becomes visible under its final name) or aborts it (nothing of it remains). Once every
file of the request is committed and the handler has run, each writer is told to
``release`` (success) or ``revert`` (the request failed after all). Hashing, limits and
naming happen before the writer sees a byte.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from ..config import Config
from .janitor import Janitor
from .threads import WorkerPool

if TYPE_CHECKING:
    from ..filedata import FileData

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
    exact: bool = False
    """Store under exactly ``filename``: never another name, never over an existing object
    (``KeyTaken`` instead), whatever ``overwrite`` says. For objects whose key is their
    identity, such as the pieces and state of a resumable upload."""

    def replaces(self, config: Config) -> bool:
        """Whether the commit may replace an object already under the name."""
        return config.overwrite and not self.exact


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


class KeyTaken(Exception):
    """No key could be claimed: the name is taken (an object, a symlink, an upload that
    finished first) and the backend may not replace it. The session answers 409."""


class WriterClosed(RuntimeError):
    """``write`` or ``commit`` on a writer already aborted: it stores nothing more."""


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


class Backend(ABC):
    """Stores objects under keys: what every backend implements.

    Built from a ``Config`` (keys of other backends raise), with a pool of threads of its
    own for blocking calls (``workers``) and a ``janitor`` for clean-ups that must be
    retried after their request ended. The seed's ``*Storage`` classes are a form field
    (``Storage``) bound to one of these.
    """

    storage_name: ClassVar[str]
    """Short name of the backend (``"s3"``), in ``FileData.storage``."""

    def __init__(self, config: Config | None = None) -> None:
        if config is not None and not isinstance(config, Config):
            raise TypeError(f"config must be a Config, not {type(config).__name__}: Config(**keys)")
        self.config = config if config is not None else Config()
        self.config.check_applies_to(getattr(self, "storage_name", ""), type(self).__name__)
        name = getattr(self, "storage_name", "backend")
        self.workers = WorkerPool(self.config.max_threads, f"filestore-{name}")
        """This backend's own threads for its blocking calls (``max_threads`` of them)."""
        self.janitor = Janitor(f"filestore-{name}-janitor")
        """Retries the clean-ups that failed, after their request ended."""

    @abstractmethod
    async def open_writer(self, target: WriteRequest) -> Writer:
        """Start storing one file; nothing is visible until the writer commits."""

    @abstractmethod
    async def delete(self, file: FileData | str) -> None:
        """Remove a stored object, given its ``FileData`` or its key; a missing one is no error."""

    @abstractmethod
    def open(self, key: str) -> AsyncIterator[bytes]:
        """Stream a stored object's bytes; ``NotFound`` if there is none."""

    async def stat(self, key: str) -> ObjectInfo:
        """Size and content type of a stored object; ``NotFound`` if there is none."""
        raise NotImplementedError(f"{type(self).__name__} has no stat()")

    async def list_objects(self, prefix: str) -> list[ObjectInfo]:
        """The objects whose key starts with ``prefix``, sorted by key; hidden temp files
        and unfinished uploads are no objects. Resumable uploads find their pieces with it."""
        raise NotImplementedError(f"{type(self).__name__} has no list_objects()")

    def key_of(self, destination: str, name: str) -> str:
        """The key that ``open``, ``stat``, ``delete`` and ``list_objects`` know an object by
        once a writer stored it as ``name`` under ``destination`` (a ``WriteRequest``'s).
        Object stores join the two; a file system counts from its configured destination."""
        from ..naming import join_key  # naming builds on this module's errors

        return join_key(destination, name)

    async def verify(self) -> None:
        """Prove the store is usable (it exists, the credentials work, a hidden probe can
        be written and deleted), else raise ``StorageUnavailable`` saying what is wrong."""
        raise NotImplementedError(f"{type(self).__name__} has no verify()")

    async def cleanup(self, older_than: timedelta = timedelta(days=1)) -> int:
        """Remove what uploads that never finished left under the destination (temp files,
        unfinished multipart uploads, uncommitted blocks, hidden ``.upload-*`` objects)
        and that is older than ``older_than``; returns how many were removed.

        Run it from a scheduled job, with ``older_than`` above the longest an upload may
        take: some stores date an unfinished upload from its start, not its last byte.
        """
        raise NotImplementedError(f"{type(self).__name__} has no cleanup()")


@runtime_checkable
class Presigning(Protocol):
    """A backend that can sign requests a client makes to the store without credentials."""

    async def presign_upload(
        self, key: str, *, expires_in: int = 3600, content_type: str | None = None
    ) -> PresignedRequest: ...

    async def presign_download(self, key: str, *, expires_in: int = 3600) -> PresignedRequest: ...


@runtime_checkable
class Composing(Protocol):
    """A backend that joins stored objects into a new one without their bytes passing
    through this process (local: a hard link or ``copy_file_range``; S3: ``UploadPartCopy``;
    GCS: ``compose``); resumable uploads complete so."""

    async def open_composed(self, target: WriteRequest, sources: Sequence[ObjectInfo]) -> Writer:
        """A writer that already holds the objects ``sources``, in order: commit it, abort
        it, then release or revert it, as any writer. ``NotImplementedError`` when the store
        cannot join these (S3: parts under 5 MiB): the caller streams them instead."""
        ...
