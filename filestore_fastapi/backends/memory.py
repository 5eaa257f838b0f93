"""MemoryStorage: files kept as bytes in the storage object, for tests and small uploads."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

from ..config import Config
from ..dependency import Storage
from ..filedata import FileData
from ..naming import join_key, join_url, unique_keys
from .base import Chunk, StoredFile, Writer, WriteRequest


class MemoryWriter(Writer):
    """Appends to a ``BytesIO``: it grows in place and ``getvalue`` hands over its buffer
    without a copy, so a file costs about its own size once."""

    def __init__(self, storage: MemoryStorage, target: WriteRequest) -> None:
        self._storage = storage
        self._target = target
        self._buffer: io.BytesIO | None = io.BytesIO()
        self._key: str | None = None

    async def write(self, chunk: Chunk) -> None:
        assert self._buffer is not None
        self._buffer.write(chunk)

    async def commit(self) -> StoredFile:
        assert self._buffer is not None
        data, self._buffer = self._buffer.getvalue(), None
        key = self._key = self._storage.claim_key(self._target, data)
        return StoredFile(filename=key, url=join_url(self._storage.config.base_url, key), file=data)

    async def abort(self) -> None:
        self._buffer = None

    async def revert(self) -> None:
        key, self._key = self._key, None
        if key is not None:
            self._storage.files.pop(key, None)


class MemoryStorage(Storage):
    """Keeps files in ``self.files`` (key -> bytes) for the life of the storage object."""

    storage_name = "memory"

    def __init__(
        self, name: str, count: int = 1, required: bool = True, config: Config | None = None
    ) -> None:
        super().__init__(name, count, required, config)
        self.files: dict[str, bytes] = {}

    def claim_key(self, target: WriteRequest, data: bytes) -> str:
        """Store ``data`` under the first free key (no await: the claim is atomic)."""
        if self.config.overwrite:
            key = join_key(target.destination, target.filename)
        else:
            key = next(k for k in unique_keys(target.filename, target.destination) if k not in self.files)
        self.files[key] = data
        return key

    async def open_writer(self, target: WriteRequest) -> Writer:
        return MemoryWriter(self, target)

    async def delete(self, file: FileData | str) -> None:
        self.files.pop(file.filename if isinstance(file, FileData) else file, None)

    async def open(self, key: str) -> AsyncIterator[bytes]:
        data = self.files[key]
        view = memoryview(data)
        for start in range(0, len(data), self.config.chunk_size):
            yield bytes(view[start : start + self.config.chunk_size])
