"""A 512 MiB upload through a real uvicorn to Azure Blob Storage (Azurite), in bounded memory.

The app server's peak RSS is measured around the upload, and as many bytes are then sent
with the plain SDK (``upload_blob`` from a temp file) to the same emulator, so the two wall
times can be compared. Both rows are printed: ``pytest tests/e2e/test_large_upload_azure.py -q``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient

from tests.contract.harness_azure import everything_in
from tests.e2e.server import Server, measure_upload, post_file, run_uvicorn, write_file_of
from tests.emulators import Azurite
from tests.httpclient import httpx

MiB = 1024 * 1024
LARGE = 512 * MiB
PART_SIZE = 8 * MiB
RSS_BUDGET = 100 * MiB
CONTAINER = "e2e-large"


@pytest.fixture(scope="module")
def azurite() -> Iterator[Azurite]:
    with Azurite() as emulator:
        yield emulator


@pytest.fixture(scope="module")
def container(azurite: Azurite) -> ContainerClient:
    return BlobServiceClient.from_connection_string(azurite.connection_string).create_container(CONTAINER)


@pytest.fixture(scope="module")
def server(azurite: Azurite, container: ContainerClient) -> Iterator[Server]:
    env = {
        "AZURE_STORAGE_CONTAINER": CONTAINER,
        "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string,
        "AZURE_PART_SIZE": str(PART_SIZE),
    }
    with run_uvicorn("tests.e2e.apps.azure_app:app", env=env) as running:
        yield running


def post_stream(server: Server, size: int, filename: str) -> tuple[httpx.Response, str]:
    return post_file(f"{server.url}/azure", size, filename)


def stored_sha256(container: ContainerClient, name: str) -> str:
    digest = hashlib.sha256()
    for block in container.get_blob_client(name).download_blob().chunks():
        digest.update(block)
    return digest.hexdigest()


def empty_container(container: ContainerClient) -> None:
    for blob in container.list_blobs():
        container.delete_blob(blob.name)


def test_large_upload_streams_to_azure_in_bounded_memory(
    server: Server, container: ContainerClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for size in (MiB, 3 * PART_SIZE):  # warm-up: imports, client, thread pools, connection pool
        response, _ = post_stream(server, size, "warm.bin")
        assert response.status_code == 200, response.text
    empty_container(container)

    upload = measure_upload(server, "/azure", LARGE, "large.bin")
    response, digest, seconds, growth = upload.response, upload.sha256, upload.seconds, upload.peak_rss_growth

    assert response.status_code == 200, response.text
    [stored] = response.json()
    assert (stored["size"], stored["sha256"]) == (LARGE, digest)
    committed, _ = container.get_blob_client(stored["filename"]).get_block_list("committed")
    assert len(committed) == LARGE // PART_SIZE  # went up as staged blocks
    assert stored_sha256(container, stored["filename"]) == digest
    assert everything_in(container) == [stored["filename"]]  # no staged block left over
    empty_container(container)  # Azurite keeps blobs in memory

    plain_file = tmp_path / "plain.bin"
    write_file_of(LARGE, plain_file)
    started = time.perf_counter()
    with plain_file.open("rb") as handle:
        container.upload_blob("plain/large.bin", handle, length=LARGE)
    sdk_seconds = time.perf_counter() - started
    assert container.get_blob_client("plain/large.bin").get_blob_properties().size == LARGE
    empty_container(container)

    with capsys.disabled():
        print(
            f"\nUpload of {LARGE // MiB} MiB to Azurite:\n"
            f"  AzureStorage via uvicorn  peak RSS +{growth / MiB:6.1f} MiB   {seconds:6.2f} s"
            f"   ({LARGE / MiB / seconds:5.1f} MiB/s)\n"
            f"  SDK upload_blob           from a temp file            {sdk_seconds:6.2f} s"
            f"   ({LARGE / MiB / sdk_seconds:5.1f} MiB/s)"
        )
    assert growth < RSS_BUDGET, f"peak RSS grew by {growth / MiB:.1f} MiB"
