"""``verify()`` and ``verify_storages(app)``: a missing bucket, container or directory is
found at start-up, with a message that names it, not at the first upload."""

from pathlib import Path
from typing import Annotated

import pytest
from fastapi import Depends, FastAPI

from filestore_fastapi import FileData, LocalStorage, Storage, StorageUnavailable, verify_storages

from .conftest import ContractHarness

#: The key that names where each backend stores, and a value that does not exist.
MISSING = {
    "s3": ("AWS_BUCKET_NAME", "no-such-bucket"),
    "gcs": ("GCP_BUCKET_NAME", "no-such-bucket"),
    "azure": ("AZURE_STORAGE_CONTAINER", "no-such-container"),
}


def unusable(harness: ContractHarness, tmp_path: Path) -> tuple[Storage, str]:
    """A storage of this backend that cannot store, and the words its error must contain."""
    if harness.name == "local":
        blocker = tmp_path / "a-file"
        blocker.write_text("not a directory")
        return LocalStorage(
            "doc", config=harness.make("doc").config.model_copy(update={"destination": blocker / "uploads"})
        ), str(blocker / "uploads")
    key, value = MISSING[harness.name]
    good = harness.make("doc")
    return type(good)("doc", config=good.config.model_copy(update={key: value})), value


async def test_a_usable_store_verifies_and_leaves_nothing(harness: ContractHarness) -> None:
    storage = harness.make("doc")
    await storage.verify()
    assert await harness.leftovers(storage) == [], "the probe is deleted"


async def test_an_unusable_store_is_named(harness: ContractHarness, tmp_path: Path) -> None:
    if harness.name == "memory":
        pytest.skip("memory is always usable")
    storage, words = unusable(harness, tmp_path)
    with pytest.raises(StorageUnavailable) as caught:
        await storage.verify()
    assert words in str(caught.value)
    assert "doc" in str(caught.value), "the storage's field names which storage it is"


async def test_verify_storages_checks_every_storage_of_the_app(
    harness: ContractHarness, tmp_path: Path
) -> None:
    if harness.name == "memory":
        pytest.skip("memory is always usable")
    good = harness.make("good")
    bad, words = unusable(harness, tmp_path)
    app = FastAPI()

    @app.post("/good")
    async def upload_good(files: Annotated[list[FileData], Depends(good)]) -> int:
        return len(files)

    @app.post("/bad")
    async def upload_bad(files: Annotated[list[FileData], Depends(bad)]) -> int:
        return len(files)

    with pytest.raises(StorageUnavailable) as caught:
        await verify_storages(app)
    assert words in str(caught.value)

    app.router.routes = [r for r in app.router.routes if getattr(r, "path", "") != "/bad"]
    await verify_storages(app)  # the good one alone passes
