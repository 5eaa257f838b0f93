"""Contract harness for MemoryStorage: each storage is a fresh object with its own key prefix."""

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
        return _files(storage)[file.filename]

    async def leftovers(self, storage: Storage) -> list[str]:
        # The whole dict, not only the prefix: a key written outside it is a leftover too.
        return sorted(_files(storage))

    async def stored_content_type(self, storage: Storage, file: FileData) -> str | None:
        return None  # MemoryStorage keeps bytes only


def _files(storage: Storage) -> dict[str, bytes]:
    assert isinstance(storage, MemoryStorage)
    return storage.files


@contextlib.contextmanager
def open_harness() -> Iterator[Harness]:
    yield Harness()
