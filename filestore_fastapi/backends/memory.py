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
from ..naming import claim_first_free, join_key, join_url, unique_keys
from .base import (
    Backend,
    Chunk,
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

    def claim_key(self, target: WriteRequest, writer: MemoryWriter) -> str:
        """The file's key: the first one no request in progress holds (no await: atomic)."""
        if self.config.overwrite:
            return join_key(target.destination, target.filename)
        key = claim_first_free(
            unique_keys(target.filename, target.destination), lambda k: None if k in self._in_use else k
        )
        self._in_use[key] = writer
        return key

    def let_go(self, key: str, writer: MemoryWriter) -> None:
        """The request of ``writer`` is over: its key is free again."""
        if self._in_use.get(key) is writer:
            del self._in_use[key]

    async def open_writer(self, target: WriteRequest) -> Writer:
        return MemoryWriter(self, target)

    async def delete(self, file: FileData | str) -> None:
        """Nothing to do: a memory file is never stored."""

    async def cleanup(self, older_than: timedelta = timedelta(days=1)) -> int:
        """Nothing to do: an unfinished memory upload is gone with its request."""
        return 0

    async def stat(self, key: str) -> ObjectInfo:
        """Raises ``NotFound``: nothing is stored."""
        raise NotFound(f"memory storage keeps no files: {key!r} is not stored")

    async def open(self, key: str) -> AsyncIterator[bytes]:
        """Raises ``NotFound``, as the other backends do for a key they do not have: the
        bytes were in ``FileData.file`` during the request only."""
        raise NotFound(f"memory storage keeps no files: {key!r} is not stored")
        yield b""  # pragma: no cover - makes this an async generator, like the others

    async def verify(self) -> None:
        """Always usable: there is no store to reach."""
