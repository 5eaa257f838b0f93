"""MemoryBackend: each file's bytes handed to the route in ``FileData.file``, kept nowhere.

For payloads the handler processes without persisting them (thumbnails, parsing, passing
them on). The storage object retains nothing once the request is over, so a long-running
app's memory stays flat; files are limited to ``DEFAULT_MAX_FILE_SIZE`` unless the config
sets ``max_file_size`` (``None`` for no limit).
"""

from __future__ import annotations

import io
import weakref
from collections.abc import AsyncIterator
from datetime import timedelta

from ..config import Config
from ..filedata import FileData
from ..naming import claim_first_free, join_key, join_url, target_keys
from .base import (
    Backend,
    Chunk,
    KeyTaken,
    NotFound,
    ObjectInfo,
    StoredFile,
    Writer,
    WriterClosed,
    WriteRequest,
)

DEFAULT_MAX_FILE_SIZE = 16 * 1024 * 1024


class MemoryWriter(Writer):
    """Appends to a ``BytesIO``: it grows in place and ``getvalue`` hands over its buffer
    without a copy, so a file costs about its own size once, for as long as the request."""

    def __init__(self, storage: MemoryBackend, target: WriteRequest) -> None:
        self._storage = storage
        self._target = target
        self._buffer: io.BytesIO | None = io.BytesIO()
        self._key: str | None = None

    async def write(self, chunk: Chunk) -> None:
        if self._buffer is None:
            raise WriterClosed("write() after abort() or commit()")
        self._buffer.write(chunk)

    async def commit(self) -> StoredFile:
        if self._buffer is None:
            raise WriterClosed("commit() after abort() or commit()")
        data, self._buffer = self._buffer.getvalue(), None
        if self._target.exact:
            return self._storage.keep(self._target, data)
        key = self._key = self._storage.claim_key(self._target, self)
        return StoredFile(filename=key, url=join_url(self._storage.config.base_url, key), file=data)

    async def abort(self) -> None:
        self._buffer = None

    async def revert(self) -> None:
        self._let_go()

    async def release(self) -> None:
        self._let_go()

    def _let_go(self) -> None:
        key, self._key = self._key, None
        if key is not None:
            self._storage.let_go(key, self)


class MemoryBackend(Backend):
    """Hands each file's bytes to the route in ``FileData.file`` and keeps nothing.

    Keys are unique among the files of the requests in progress (``a.txt``, ``a-1.txt`` in
    one request); once a request is over its keys are free again. ``open`` and ``stat``
    raise ``NotFound`` (a ``FileNotFoundError``) and ``delete`` does nothing: there is never
    a stored file.
    """

    storage_name = "memory"

    def __init__(self, config: Config | None = None) -> None:
        config = config if config is not None else Config()
        if isinstance(config, Config) and "max_file_size" not in config.model_fields_set:
            # Every byte of a file is held in memory: unlimited only when asked for.
            config = config.model_copy(update={"max_file_size": DEFAULT_MAX_FILE_SIZE})
        super().__init__(config)
        # The keys of committed files whose request is not over; a writer lost without
        # release or revert drops out with it.
        self._in_use: weakref.WeakValueDictionary[str, MemoryWriter] = weakref.WeakValueDictionary()
        self._kept: dict[str, bytes] = {}

    def keep(self, target: WriteRequest, data: bytes) -> StoredFile:
        """Keep ``data`` under exactly the target's key (no await: atomic), or ``KeyTaken``."""
        key = join_key(target.destination, target.filename)
        if key in self._kept:
            raise KeyTaken(f"{key!r} exists")
        self._kept[key] = data
        return StoredFile(filename=key, url=join_url(self.config.base_url, key))

    def claim_key(self, target: WriteRequest, writer: MemoryWriter) -> str:
        """The file's key: the first one no request in progress holds (no await: atomic)."""
        if target.replaces(self.config):
            return join_key(target.destination, target.filename)
        key = claim_first_free(target_keys(target), lambda k: None if k in self._in_use else k)
        self._in_use[key] = writer
        return key

    def let_go(self, key: str, writer: MemoryWriter) -> None:
        """The request of ``writer`` is over: its key is free again."""
        if self._in_use.get(key) is writer:
            del self._in_use[key]

    async def open_writer(self, target: WriteRequest) -> Writer:
        return MemoryWriter(self, target)

    async def delete(self, file: FileData | str) -> None:
        """Nothing to do for a file (it is never stored); removes a kept ``exact`` object."""
        self._kept.pop(file if isinstance(file, str) else file.filename, None)

    async def cleanup(self, older_than: timedelta = timedelta(days=1)) -> int:
        """Nothing to do: an unfinished memory upload is gone with its request."""
        return 0

    async def stat(self, key: str) -> ObjectInfo:
        """A kept ``exact`` object's size; ``NotFound`` for anything else (no file is stored)."""
        return ObjectInfo(key=key, size=len(self._kept_bytes(key)), content_type=None)

    async def list_objects(self, prefix: str) -> list[ObjectInfo]:
        """The kept ``exact`` objects under ``prefix``: files are never stored."""
        return [
            ObjectInfo(key=key, size=len(data), content_type=None)
            for key, data in sorted(self._kept.items())
            if key.startswith(prefix)
        ]

    async def open(self, key: str) -> AsyncIterator[bytes]:
        """A kept ``exact`` object's bytes; ``NotFound`` for a file, as the other backends
        answer for a key they do not have: its bytes were in ``FileData.file`` during the
        request only."""
        data = self._kept_bytes(key)
        for start in range(0, len(data), self.config.chunk_size):
            yield data[start : start + self.config.chunk_size]

    def _kept_bytes(self, key: str) -> bytes:
        try:
            return self._kept[key]
        except KeyError:
            raise NotFound(f"memory storage keeps no files: {key!r} is not stored") from None

    async def verify(self) -> None:
        """Always usable: there is no store to reach."""
