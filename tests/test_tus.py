"""The tus protocol of ``tus_router``, request by request, on local disk (TestClient).

Every backend runs the same uploads in ``tests/contract/test_resumable.py``; real clients,
real servers and two instances over one store are in ``tests/e2e/test_tus_*.py``.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import Depends, FastAPI, HTTPException, Request
from starlette.testclient import TestClient

from filestore_fastapi import Config, FileData, LocalStorage, MemoryStorage, tus_router

TUS = {"Tus-Resumable": "1.0.0"}
CHUNK = {**TUS, "Content-Type": "application/offset+octet-stream"}


def metadata(**values: str) -> str:
    return ",".join(f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in values.items())


class App:
    """An app with one tus router on a LocalStorage, and what ``on_complete`` was given."""

    def __init__(self, root: Path, *, owner: Any = None, **config: Any) -> None:
        self.root = root
        self.completed: list[FileData] = []
        self.storage = LocalStorage("video", config=Config(destination=root / "videos", **config))
        self.app = FastAPI()

        async def stored(file: FileData) -> None:
            self.completed.append(file)

        extra: dict[str, Any] = {"owner": owner} if owner else {}
        self.app.include_router(tus_router(self.storage, prefix="/uploads", on_complete=stored, **extra))
        self.client = TestClient(self.app)

    def create(self, length: int | None, name: str = "clip.mp4", **headers: str) -> str:
        sent = {**TUS, "Upload-Metadata": metadata(filename=name, filetype="video/mp4"), **headers}
        if length is not None:
            sent["Upload-Length"] = str(length)
        else:
            sent.setdefault("Upload-Defer-Length", "1")
        response = self.client.post("/uploads", headers=sent)
        assert response.status_code == 201, response.text
        return response.headers["Location"]

    def patch(self, url: str, offset: int, data: bytes, **headers: str) -> Any:
        return self.client.patch(url, content=data, headers={**CHUNK, "Upload-Offset": str(offset), **headers})

    def files(self) -> list[str]:
        """Everything under the destination, hidden state included."""
        base = self.root / "videos"
        return sorted(p.relative_to(base).as_posix() for p in base.rglob("*")) if base.exists() else []


@pytest.fixture
def tus(tmp_path: Path) -> Iterator[App]:
    app = App(tmp_path)
    with app.client:
        yield app


def test_options_advertises_version_extensions_checksums_and_max_size(tmp_path: Path) -> None:
    app = App(tmp_path, max_file_size=1000)
    response = app.client.options("/uploads")
    assert response.status_code == 204
    assert response.headers["Tus-Version"] == "1.0.0"
    assert response.headers["Tus-Max-Size"] == "1000"
    assert set(response.headers["Tus-Extension"].split(",")) == {
        "creation",
        "creation-with-upload",
        "creation-defer-length",
        "termination",
        "checksum",
        "expiration",
        "concatenation",
    }
    assert set(response.headers["Tus-Checksum-Algorithm"].split(",")) == {"sha1", "md5", "sha256"}


def test_an_upload_in_three_patches_is_stored_once_complete(tus: App) -> None:
    data = os.urandom(300_000)
    url = tus.create(len(data))
    assert url.startswith("/uploads/") and len(url.rsplit("/", 1)[1]) == 32
    offset = 0
    for piece in (data[:100_000], data[100_000:250_000], data[250_000:]):
        response = tus.patch(url, offset, piece)
        assert response.status_code == 204, response.text
        offset += len(piece)
        assert response.headers["Upload-Offset"] == str(offset)
        head = tus.client.head(url, headers=TUS)
        assert head.headers["Upload-Offset"] == str(offset)
        assert head.headers["Upload-Length"] == str(len(data))
        assert head.headers["Cache-Control"] == "no-store"
    [file] = tus.completed
    assert (tus.root / "videos" / "clip.mp4").read_bytes() == data
    assert file.filename == "clip.mp4" and file.size == len(data)
    assert file.sha256 == hashlib.sha256(data).hexdigest()
    assert file.content_type == "video/mp4" and file.original_filename == "clip.mp4"
    result = tus.client.get(url)
    assert result.status_code == 200
    assert result.json()["sha256"] == file.sha256 and result.json()["filename"] == "clip.mp4"
    assert "path" not in result.json()
    # No piece left: the state of a completed upload is its info, its result and its lease.
    hidden = [name for name in tus.files() if name.startswith(".tus/") and "/data-" in name]
    assert hidden == []
