"""Contract harness for MemoryStorage: each storage is a fresh object with its own key prefix.

A memory storage keeps nothing once its request is over: the bytes are the handler's, in
``FileData.file``, and nothing is ever left behind.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from typing import Any

from filestore_fastapi import Config, FileData, MemoryStorage, Storage


class Harness:
    name = "memory"

    def __init__(self) -> None:
        self._serial = itertools.count()

    def make(self, field: str, *, count: int = 1, required: bool = True, **config: Any) -> Storage:
        prefix = f"uploads/{next(self._serial)}"
        return MemoryStorage(field, count, required, Config(destination=prefix, **config))

    async def read_back(self, storage: Storage, file: FileData) -> bytes:
        assert isinstance(storage, MemoryStorage)
        if file.file is None:  # e.g. a FileData read back from JSON, which leaves the bytes out
            raise FileNotFoundError(f"{file.filename!r}: a memory file lives in FileData.file only")
        return file.file

    async def leftovers(self, storage: Storage) -> list[str]:
        assert isinstance(storage, MemoryStorage)
        return []  # nothing is kept, so nothing can be left over

    async def stored_content_type(self, storage: Storage, file: FileData) -> str | None:
        return None  # MemoryStorage keeps bytes only


@contextlib.contextmanager
def open_harness() -> Iterator[Harness]:
    yield Harness()
