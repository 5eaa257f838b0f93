"""tuspy, a tus client no one here wrote, against ``tus_router`` under real uvicorn, on
local disk, S3 (moto), GCS (fake-gcs-server) and Azure (Azurite).

The client talks to the app through a loopback proxy (``tus_support.Proxy``), its one
address whichever server process is behind it. Each store: a clean upload in chunks; an
upload whose connection is reset mid-chunk, resumed by a new ``Uploader`` that finds the
URL in tuspy's own URL storage; and one whose server is SIGKILLed mid-chunk and started
again (a new process over the same store), then resumed. Every time the stored object,
read with the store's own SDK, has the source's sha256, and no upload state is left.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tusclient.client import TusClient
from tusclient.exceptions import TusCommunicationError
from tusclient.storage.filestorage import FileStorage
from tusclient.uploader.uploader import Uploader

from tests.e2e.tus_support import (
    STORES,
    Pair,
    Proxy,
    head_offset,
    result,
    shared_pair,
    wait_until,
    write_source,
)

MiB = 1024 * 1024
CHUNK = MiB
SIZE = 6 * MiB + 12_345  # seven PATCHes, the last one short; above S3's 5 MiB part
LEASE_WAIT = 10  # retries a second apart: the app's lease is 2 s


class Deployment:
    """The first app process over one store (``shared_pair``), behind a proxy."""

    def __init__(self, pair: Pair) -> None:
        self.pair = pair
        self.store = pair.store
        self.instance = pair.instances[0]
        self.proxy = Proxy("")
        self.ready()

    def ready(self) -> Deployment:
        """The process up (started anew if a test killed it), the proxy in front of it."""
        self.pair.running()
        self.proxy.upstream = self.instance.url.removesuffix("/files")
        return self

    def restart(self) -> None:
        """A new process over the same store, at the address the client knows."""
        self.instance.start()
        self.proxy.upstream = self.instance.url.removesuffix("/files")


@pytest.fixture(scope="module")
def deployments() -> Iterator[dict[str, Deployment]]:
    opened: dict[str, Deployment] = {}
    yield opened
    for deployment in opened.values():
        deployment.proxy.close()


@pytest.fixture(params=STORES)
def deployment(request: pytest.FixtureRequest, deployments: dict[str, Deployment]) -> Deployment:
    kind: str = request.param
    if kind not in deployments:
        deployments[kind] = Deployment(shared_pair(kind))
    return deployments[kind].ready()


@pytest.fixture
def urls(tmp_path: Path) -> Iterator[FileStorage]:
    """tuspy's own URL storage (a file), where an uploader finds the upload to resume."""
    storage = FileStorage(str(tmp_path / "urls.json"))
    yield storage
    storage.close()


def uploader(
    deployment: Deployment,
    source: Path,
    urls: FileStorage | None = None,
    chunk_size: int = CHUNK,
    **options: Any,
) -> Uploader:
    """A tuspy uploader of ``source``; with ``urls``, it resumes the upload stored there."""
    client = TusClient(deployment.proxy.url)
    resumable: dict[str, Any] = {"store_url": True, "url_storage": urls} if urls is not None else {}
    return client.uploader(
        file_path=str(source),
        chunk_size=chunk_size,
        metadata={"filename": source.name, "filetype": "application/octet-stream"},
        **resumable,
        **options,
    )


def check_stored(deployment: Deployment, url: str, digest: str) -> dict[str, Any]:
    """The upload's FileData; the object read back from the store has ``digest``; nothing
    of the upload's pieces or leases is left."""
    file = result(url)
    assert (file["size"], file["sha256"]) == (SIZE, digest)
    assert deployment.store.stored_sha256(file) == digest
    upload_id = url.rsplit("/", 1)[1]
    assert [name for name in deployment.store.state(upload_id) if name.startswith("data-")] == []
    assert not deployment.store.live_lease(upload_id)
    return file


def test_tuspy_uploads_in_chunks(deployment: Deployment, tmp_path: Path) -> None:
    path = tmp_path / f"clean-{deployment.store.kind}.bin"
    digest = write_source(path, SIZE)
    upload = uploader(deployment, path)
    offsets = []
    while upload.offset < SIZE:  # the first one creates the upload
        upload.upload_chunk()
        offsets.append(upload.offset)
    assert offsets == [*range(CHUNK, SIZE, CHUNK), SIZE]
    assert upload.url is not None
    file = check_stored(deployment, upload.url, digest)
    assert file["original_filename"] == path.name


def test_tuspy_uploads_in_whole_part_chunks(deployment: Deployment, tmp_path: Path) -> None:
    """5 MiB chunks: pieces a store can join by itself (S3's UploadPartCopy, GCS's compose)."""
    path = tmp_path / f"parts-{deployment.store.kind}.bin"
    digest = write_source(path, SIZE)
    upload = uploader(deployment, path, chunk_size=5 * MiB)
    upload.upload()
    assert upload.offset == SIZE and upload.url is not None
    check_stored(deployment, upload.url, digest)


def test_tuspy_resumes_after_a_connection_reset(
    deployment: Deployment, tmp_path: Path, urls: FileStorage
) -> None:
    path = tmp_path / f"reset-{deployment.store.kind}.bin"
    digest = write_source(path, SIZE)
    first = uploader(deployment, path, urls)
    first.upload_chunk()  # creates the upload, then sends a chunk
    first.upload_chunk()
    assert first.url is not None
    url = first.url

    deployment.proxy.cut_after = CHUNK // 2  # the next PATCH dies half-way through its body
    try:
        with pytest.raises(TusCommunicationError):
            first.upload_chunk()
    finally:
        deployment.proxy.cut_after = None
    assert deployment.proxy.cuts >= 1

    # The bytes that arrived before the reset are kept: the offset moves past the 2 chunks,
    # once the server has seen the reset and stored them.
    wait_until(lambda: head_offset(url) > 2 * CHUNK, what="the reset chunk's first bytes stored")
    assert head_offset(url) < 3 * CHUNK

    resumed = uploader(deployment, path, urls, retries=LEASE_WAIT, retry_delay=1)
    assert resumed.url == url  # found by tuspy's fingerprint of the file
    assert 2 * CHUNK < resumed.offset < 3 * CHUNK
    resumed.upload()
    assert resumed.offset == SIZE
    check_stored(deployment, url, digest)


def test_tuspy_resumes_after_the_server_is_killed_mid_chunk(
    deployment: Deployment, tmp_path: Path, urls: FileStorage
) -> None:
    path = tmp_path / f"killed-{deployment.store.kind}.bin"
    digest = write_source(path, SIZE)
    first = uploader(deployment, path, urls)
    first.upload_chunk()  # creates the upload, then sends a chunk
    first.upload_chunk()
    assert first.url is not None
    url, upload_id = first.url, first.url.rsplit("/", 1)[1]

    proxy = deployment.proxy
    proxy.holding.clear()
    proxy.hold_after = CHUNK // 2  # the server gets half the next chunk, then waits for more
    failed: list[BaseException] = []

    def send_chunk() -> None:
        try:
            first.upload_chunk()
        except TusCommunicationError as exc:
            failed.append(exc)

    sender = threading.Thread(target=send_chunk)
    sender.start()
    try:
        assert proxy.holding.wait(10), "the chunk never reached the hold"
        wait_until(
            lambda: deployment.store.live_lease(upload_id), what="the server holding the upload's lease"
        )
        deployment.instance.kill()
    finally:
        proxy.release()
        sender.join(20)
    assert not sender.is_alive()
    assert failed, "the client did not notice the server's death"

    started = time.monotonic()
    deployment.restart()
    resumed = uploader(deployment, path, urls, retries=LEASE_WAIT, retry_delay=1)
    assert resumed.url == url
    assert resumed.offset == 2 * CHUNK  # what the killed process was writing never counted
    resumed.upload()  # 423 until the dead process's lease runs out: tuspy retries
    assert resumed.offset == SIZE
    assert time.monotonic() - started < 30
    check_stored(deployment, url, digest)
