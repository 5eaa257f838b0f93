"""Contract harness for AzureStorage: Azurite on loopback, a fresh container per storage."""

from __future__ import annotations

import contextlib
import itertools
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import anyio

from filestore_fastapi import AzureStorage, Config, FileData, Storage
from tests.emulators import Azurite

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient, ContainerClient


def everything_in(container: ContainerClient, prefix: str = "") -> list[str]:
    """Every blob name under ``prefix``, plus ``uncommitted:<name>`` where staged blocks wait.

    Staged blocks are invisible to an ordinary listing, yet they cost storage and pin the
    name, so an aborted upload must not leave them either.
    """
    from azure.core.exceptions import ResourceNotFoundError

    found: list[str] = []
    for item in container.list_blobs(name_starts_with=prefix or None, include=["uncommittedblobs"]):
        blob = container.get_blob_client(item.name)
        try:
            _, uncommitted = blob.get_block_list("uncommitted")
        except ResourceNotFoundError:
            continue  # deleted between the listing and now
        try:
            blob.get_blob_properties()
            found.append(item.name)
        except ResourceNotFoundError:
            pass
        if uncommitted:
            found.append(f"uncommitted:{item.name}")
    return sorted(found)


class Harness:
    name = "azure"

    def __init__(self, azurite: Azurite) -> None:
        self._azurite = azurite
        self._serial = itertools.count()
        self._service: BlobServiceClient | None = None

    @property
    def service(self) -> BlobServiceClient:
        # The sync SDK client holds no event loop, so one serves every test's loop.
        from azure.storage.blob import BlobServiceClient

        if self._service is None:
            self._service = BlobServiceClient.from_connection_string(self._azurite.connection_string)
        return self._service

    def make(self, field: str, *, count: int = 1, required: bool = True, **config: Any) -> Storage:
        container = f"contract-{next(self._serial)}-{uuid.uuid4().hex[:8]}"
        self.service.create_container(container)
        config.setdefault("AZURE_STORAGE_CONTAINER", container)
        config.setdefault("AZURE_STORAGE_CONNECTION_STRING", self._azurite.connection_string)
        return AzureStorage(field, count, required, Config(**config))

    async def read_back(self, storage: Storage, file: FileData) -> bytes:
        blob = self._container(storage).get_blob_client(file.filename)
        data: bytes = await anyio.to_thread.run_sync(lambda: blob.download_blob().readall())
        return data

    async def leftovers(self, storage: Storage) -> list[str]:
        # The whole container, not only the destination: a blob written outside it is a leftover too.
        return await anyio.to_thread.run_sync(everything_in, self._container(storage))

    async def stored_content_type(self, storage: Storage, file: FileData) -> str | None:
        blob = self._container(storage).get_blob_client(file.filename)
        properties = await anyio.to_thread.run_sync(blob.get_blob_properties)
        content_type: str | None = properties.content_settings.content_type
        return content_type

    def _container(self, storage: Storage) -> ContainerClient:
        assert isinstance(storage, AzureStorage)
        return self.service.get_container_client(storage.container_name)


@contextlib.contextmanager
def open_harness() -> Iterator[Harness]:
    with Azurite() as azurite:
        yield Harness(azurite)
