"""``cleanup()`` on every backend removes what unfinished uploads left, never a stored file."""

from datetime import timedelta
from typing import Annotated

from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from filestore_fastapi import FileData

from .conftest import ContractHarness


async def test_cleanup_never_removes_a_stored_file(harness: ContractHarness) -> None:
    storage = harness.make("doc")
    app = FastAPI()

    @app.post("/upload")
    async def upload(files: Annotated[list[FileData], Depends(storage)]) -> int:
        return len(files)

    with TestClient(app) as client:
        assert client.post("/upload", files={"doc": ("kept.txt", b"kept")}).status_code == 200
    before = await harness.leftovers(storage)

    removed = await storage.cleanup(older_than=timedelta(0))

    assert removed == 0
    assert await harness.leftovers(storage) == before
