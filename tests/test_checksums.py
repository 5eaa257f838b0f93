"""The ``checksum`` config key: which algorithm hashes a stored file, and how FileData says so."""

# No ``from __future__ import annotations``: FastAPI evaluates the routes' annotations.

import builtins
import hashlib
import os
from pathlib import Path
from typing import Annotated, Any

import google_crc32c
import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from filestore_fastapi import Config, FileData, LocalStorage, MemoryStorage
from filestore_fastapi.checksums import ALGORITHMS, checksum_fields, new_hasher


def upload(storage: Any, data: bytes) -> dict[str, Any]:
    app = FastAPI()

    @app.post("/upload")
    async def route(files: Annotated[list[FileData], Depends(storage)]) -> list[FileData]:
        return files

    response = TestClient(app).post("/upload", files={"file": ("a.bin", data, "application/octet-stream")})
    assert response.status_code == 200, response.text
    [stored] = response.json()
    assert isinstance(stored, dict)
    return stored


def expected(algorithm: str, data: bytes) -> str:
    if algorithm == "crc32c":
        return google_crc32c.Checksum(data).digest().hex()
    return hashlib.new(algorithm, data).hexdigest()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("size", [0, 1000, 3 * 1024 * 1024 + 5])  # no bytes, the loop's tail, batches
def test_each_algorithm_on_local_disk(tmp_path: Path, algorithm: str, size: int) -> None:
    data = os.urandom(size)
    storage = LocalStorage(
        "file", config=Config(destination=tmp_path, checksum=algorithm, chunk_size=256 * 1024)
    )
    stored = upload(storage, data)
    assert stored["checksum_algorithm"] == algorithm
    assert stored["checksum"] == expected(algorithm, data)
    assert stored["sha256"] == (hashlib.sha256(data).hexdigest() if algorithm == "sha256" else None)
    assert (tmp_path / "a.bin").read_bytes() == data


def test_sha256_is_the_default_and_none_hashes_nothing() -> None:
    data = os.urandom(70_000)
    default = upload(MemoryStorage("file"), data)
    assert (default["checksum_algorithm"], default["checksum"]) == (
        "sha256",
        hashlib.sha256(data).hexdigest(),
    )
    assert default["sha256"] == default["checksum"]
    plain = upload(MemoryStorage("file", config=Config(checksum=None)), data)
    assert (plain["checksum_algorithm"], plain["checksum"], plain["sha256"]) == (None, None, None)
    assert plain["size"] == len(data)


def test_an_unknown_algorithm_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="checksum"):
        Config(checksum="sha512")


def test_crc32c_without_its_extra_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_crc32c(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "google_crc32c":
            raise ImportError("No module named 'google_crc32c'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(__import__("sys").modules, "google_crc32c", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_crc32c)
    with pytest.raises(ImportError, match=r"filestore-fastapi\[gcp\]"):
        Config(checksum="crc32c")


def test_the_api_another_engine_uses() -> None:
    """``new_hasher`` and ``checksum_fields``: what a resumable upload needs to report alike."""
    assert new_hasher(Config(checksum=None)) is None
    assert checksum_fields(None) == {"checksum_algorithm": None, "checksum": None, "sha256": None}
    for algorithm in ALGORITHMS:
        hasher = new_hasher(algorithm)
        assert hasher is not None and hasher.name == algorithm
        hasher.update(b"abc")
        hasher.update(memoryview(b"def"))
        fields = checksum_fields(hasher)
        assert fields["checksum"] == expected(algorithm, b"abcdef")
        assert fields["checksum_algorithm"] == algorithm
