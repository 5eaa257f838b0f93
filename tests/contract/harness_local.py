"""Contract harness for LocalStorage: each storage gets its own directory under one temp root."""

from __future__ import annotations

import contextlib
import itertools
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio

from filestore_fastapi import Config, FileData, LocalStorage, Storage


class Harness:
    name = "local"

    def __init__(self, root: Path) -> None:
        self._root = root
        self._serial = itertools.count()

    def make(self, field: str, *, count: int = 1, required: bool = True, **config: Any) -> Storage:
        destination = self._root / f"dest-{next(self._serial)}"
        return LocalStorage(field, count, required, Config(destination=destination, **config))

    async def read_back(self, storage: Storage, file: FileData) -> bytes:
        return await anyio.Path(self._directory(storage) / file.filename).read_bytes()

    async def leftovers(self, storage: Storage) -> list[str]:
        directory = self._directory(storage)
        return await anyio.to_thread.run_sync(_walk_relative, directory)

    async def stored_content_type(self, storage: Storage, file: FileData) -> str | None:
        return None  # a file system keeps no content type

    @staticmethod
    def _directory(storage: Storage) -> Path:
        destination = storage.config.destination
        assert isinstance(destination, Path)
        return destination


def _walk_relative(directory: Path) -> list[str]:
    """Every entry below ``directory``, hidden temp files and empty subdirectories included."""
    if not directory.exists():
        return []
    return sorted(path.relative_to(directory).as_posix() for path in directory.rglob("*"))


@contextlib.contextmanager
def open_harness() -> Iterator[Harness]:
    with tempfile.TemporaryDirectory(prefix="contract-local-") as root:
        yield Harness(Path(root))
