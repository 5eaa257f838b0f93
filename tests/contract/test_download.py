"""``Storage.download`` and ``stat`` on every backend: the object streamed with its type,
length and name, or 404 before any byte; ``open`` of a missing key raises ``NotFound``."""

from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from filestore_fastapi import FileData, NotFound, Storage

from .conftest import KEEPS_NOTHING, ContractHarness


def download_app(storage: Storage) -> FastAPI:
    app = FastAPI()

    @app.post("/upload")
    async def upload(files: Annotated[list[FileData], Depends(storage)]) -> list[str]:
        return [f.filename for f in files]

    @app.get("/files/{key:path}")
    async def download(key: str, name: str | None = None) -> Any:
        return await storage.download(key, filename=name)

    return app


def test_download_streams_the_object_with_its_headers(harness: ContractHarness) -> None:
    if harness.name in KEEPS_NOTHING:
        pytest.skip("a memory storage keeps nothing to download (see the next test)")
    storage = harness.make("doc")
    data = b"%PDF-1.7 " + bytes(range(256)) * 40
    with TestClient(download_app(storage)) as client:
        [key] = client.post("/upload", files={"doc": ("résumé.pdf", data, "application/pdf")}).json()
        reply = client.get(f"/files/{key}")
        renamed = client.get(f"/files/{key}", params={"name": "cv.pdf"})
    assert reply.status_code == 200
    assert reply.content == data
    assert reply.headers["content-type"] == "application/pdf"
    assert reply.headers["content-length"] == str(len(data))
    # RFC 6266: an ASCII fallback for old clients, the real name in filename*.
    assert reply.headers["content-disposition"] == (
        "attachment; filename=\"r_sum_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf"
    )
    assert renamed.headers["content-disposition"] == 'attachment; filename="cv.pdf"'


def test_a_missing_key_is_404_before_any_byte(harness: ContractHarness) -> None:
    storage = harness.make("doc")
    with TestClient(download_app(storage)) as client:
        if harness.name in KEEPS_NOTHING:
            [key] = client.post("/upload", files={"doc": ("kept.txt", b"gone")}).json()
        else:
            key = "no/such/file.txt"
        reply = client.get(f"/files/{key}")
    assert reply.status_code == 404
    assert reply.json() == {"detail": "file not found"}


async def test_stat_and_open_of_a_missing_key_raise_not_found(harness: ContractHarness) -> None:
    storage = harness.make("doc")
    with pytest.raises(NotFound):
        await storage.stat("missing.bin")
    with pytest.raises(NotFound):
        async for _ in storage.open("missing.bin"):
            pass
    with pytest.raises(FileNotFoundError):  # what code written before NotFound catches
        await storage.stat("missing.bin")
