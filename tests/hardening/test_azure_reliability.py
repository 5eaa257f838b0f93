"""AzureStorage when things go wrong after all, on the real Azurite (one per session).

- **overwrite** (item 4): a request with ``overwrite=True`` that fails after its commit (the
  handler raises, a later file fails, the form is invalid, the handler is cancelled) leaves
  the blob it replaced exactly as it was, and no hidden backup behind;
- **a stalled store** (item 6): uploads to an endpoint that accepts and never answers fail
  with a clean 500 within the configured timeouts, under a real uvicorn, while a plain
  ``def`` route of the same app keeps answering;
- **an outage** (item 7): blocks an aborted upload could not discard while the store was
  unreachable are discarded once it is back, and ``cleanup()`` removes what unfinished
  uploads left under the destination.

No ``from __future__ import annotations``: FastAPI must evaluate the routes' ``Depends``
annotations, which name storages local to the tests.
"""

import asyncio
import contextlib
import os
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Annotated, Any

import anyio
import pytest
import uvicorn
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import ContainerClient, ContentSettings
from fastapi import Depends, FastAPI

from filestore_fastapi import AzureStorage, Config, FileData
from tests.contract.harness_azure import Harness, everything_in
from tests.e2e.server import free_port
from tests.emulators import AZURITE_ACCOUNT_KEY, AZURITE_ACCOUNT_NAME
from tests.httpclient import httpx

from .failing_routes import HOWS, fail_after_commit, in_process
from .proxy import DeadStore, FaultyProxy
from .support import BOUNDARY, content_type, file_part, wait_until

KiB = 1024
MiB = 1024 * KiB
PART = 5 * MiB
GENERIC = "the file could not be stored"

OLD = b"the version that was there first\n" * 300
OLD_TYPE = "text/plain"
OLD_METADATA = {"owner": "alice"}
SIZES = pytest.mark.parametrize("size", [1000, PART + 1000], ids=["put-blob", "blocks"])


def azure_storage(harness: Harness, **config: Any) -> AzureStorage:
    storage = harness.make("file", part_size=PART, **config)
    assert isinstance(storage, AzureStorage)
    return storage


def container_of(harness: Harness, storage: AzureStorage) -> ContainerClient:
    return harness.service.get_container_client(storage.container_name)


def blob_bytes(container: ContainerClient, name: str) -> bytes | None:
    try:
        data: bytes = container.get_blob_client(name).download_blob().readall()
    except ResourceNotFoundError:
        return None
    return data


def blob_state(container: ContainerClient, name: str) -> tuple[bytes, str | None, dict[str, str]]:
    """A blob's bytes, content type and metadata."""
    blob = container.get_blob_client(name)
    properties = blob.get_blob_properties()
    content_type: str | None = properties.content_settings.content_type
    return blob.download_blob().readall(), content_type, dict(properties.metadata)


# -- item 4: overwrite=True and a request that fails after its commit --------------------------


@SIZES
@pytest.mark.parametrize("how", HOWS)
async def test_a_failed_overwrite_leaves_the_old_blob_as_it_was(
    hardening_azure: Harness, how: str, size: int
) -> None:
    storage = azure_storage(hardening_azure, overwrite=True)
    container = container_of(hardening_azure, storage)
    settings = ContentSettings(content_type=OLD_TYPE)
    container.upload_blob("doc.bin", OLD, content_settings=settings, metadata=OLD_METADATA)

    broken = AzureStorage(
        "other", config=storage.config.model_copy(update={"AZURE_STORAGE_CONTAINER": "no-such-container"})
    )
    await fail_after_commit(storage, broken, how, "doc.bin", os.urandom(size))

    assert blob_state(container, "doc.bin") == (OLD, OLD_TYPE, OLD_METADATA)
    assert everything_in(container) == ["doc.bin"]  # no backup, no staged block left

    # And a request that succeeds replaces it, leaving nothing hidden either.
    app = FastAPI()

    @app.post("/upload")
    async def upload(files: Annotated[list[FileData], Depends(storage)]) -> list[FileData]:
        return files

    new = os.urandom(size)
    async with in_process(app) as client:
        reply = await client.post("/upload", files={"file": ("doc.bin", new, "image/png")})
    assert reply.status_code == 200, reply.text
    assert blob_state(container, "doc.bin") == (new, "image/png", {})
    assert everything_in(container) == ["doc.bin"]


@pytest.mark.parametrize("existing", [True, False], ids=["replacing", "creating"])
async def test_a_failed_overwrite_never_undoes_a_later_upload(
    hardening_azure: Harness, existing: bool
) -> None:
    """A fails after its commit, but B replaced A's blob in the meantime: B's file stays."""
    storage = azure_storage(hardening_azure, overwrite=True)
    container = container_of(hardening_azure, storage)
    if existing:
        container.upload_blob("doc.bin", OLD, content_settings=ContentSettings(content_type=OLD_TYPE))
    go_on = asyncio.Event()
    app = FastAPI()

    @app.post("/slow")
    async def slow(files: Annotated[list[FileData], Depends(storage)]) -> None:
        await go_on.wait()
        raise RuntimeError("A fails after B succeeded")

    @app.post("/upload")
    async def upload(files: Annotated[list[FileData], Depends(storage)]) -> list[FileData]:
        return files

    first, second = b"A" * 1000, b"B" * 1000
    async with in_process(app) as client:
        a = asyncio.ensure_future(client.post("/slow", files={"file": ("doc.bin", first, "text/a")}))

        def a_committed() -> bool:
            return blob_bytes(container, "doc.bin") == first

        assert await asyncio.to_thread(wait_until, a_committed, 10.0), "A never committed"
        b = await client.post("/upload", files={"file": ("doc.bin", second, "text/b")})
        assert b.status_code == 200, b.text
        go_on.set()
        assert (await a).status_code == 500

    assert blob_state(container, "doc.bin") == (second, "text/b", {})
    assert everything_in(container) == ["doc.bin"]


# -- item 6: a store that accepts and never answers --------------------------------------------


def connection_string(port: int) -> str:
    """Azurite's account, its blob endpoint on ``port``."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT_NAME};"
        f"AccountKey={AZURITE_ACCOUNT_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT_NAME};"
    )


@contextlib.contextmanager
def uvicorn_serving(app: FastAPI) -> Iterator[str]:
    """``app`` under a real uvicorn, in a thread of this process, on a free loopback port."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert wait_until(lambda: server.started, timeout=10), "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = server.force_exit = True
        thread.join(10)


#: Generous on top of connect (1 s) + read (2 s): the point is seconds, not the SDK's minutes.
STALL_BUDGET = 8.0


async def test_a_stalled_store_fails_uploads_in_time_and_the_app_keeps_answering() -> None:
    store = DeadStore(reset=False)
    storage = AzureStorage(
        "file",
        config=Config(
            AZURE_STORAGE_CONTAINER="stalled",
            AZURE_STORAGE_CONNECTION_STRING=connection_string(store.port),
            part_size=PART,
            connect_timeout=1,
            read_timeout=2,
            max_retries=0,
        ),
    )

    @contextlib.asynccontextmanager
    async def busy_app(app: FastAPI) -> AsyncIterator[None]:
        # anyio's pool (40 threads) serves every ``def`` route; four stand for forty here, so
        # that four stalled uploads would take what forty take in a real app.
        anyio.to_thread.current_default_thread_limiter().total_tokens = 4
        yield

    app = FastAPI(lifespan=busy_app)

    @app.post("/upload")
    async def upload(files: Annotated[list[FileData], Depends(storage)]) -> list[FileData]:
        return files

    @app.get("/ping")
    def ping() -> str:  # a plain def route: it runs in anyio's thread pool
        return "pong"

    sizes = [1000] * 4 + [PART + MiB]  # four single Put Blobs, one upload of blocks
    pings: list[float] = []
    try:
        with uvicorn_serving(app) as url:
            async with httpx.AsyncClient(base_url=url, timeout=15) as client:

                async def timed_upload(size: int) -> tuple[httpx.Response, float]:
                    started = time.monotonic()
                    reply = await client.post("/upload", files={"file": ("doc.bin", b"s" * size)})
                    return reply, time.monotonic() - started

                async def keep_pinging() -> None:
                    await asyncio.sleep(0.5)  # the uploads are waiting on the store by now
                    while True:
                        started = time.monotonic()
                        assert (await client.get("/ping", timeout=5)).json() == "pong"
                        pings.append(time.monotonic() - started)
                        await asyncio.sleep(0.1)

                pinging = asyncio.ensure_future(keep_pinging())
                try:
                    results = await asyncio.gather(*(timed_upload(size) for size in sizes))
                finally:
                    pinging.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await pinging
    finally:
        store.close()

    for reply, seconds in results:
        assert reply.status_code == 500, reply.text
        assert [d["msg"] for d in reply.json()["detail"]] == [GENERIC]
        assert seconds < STALL_BUDGET, f"a 500 after {seconds:.1f} s"
    assert len(pings) >= 5, pings
    assert max(pings) < 1.0, f"the def route took {max(pings):.1f} s to answer"


# -- item 7: an outage mid-upload, and cleanup() ------------------------------------------------


def blob_endpoint_port(storage: AzureStorage) -> int:
    connection = storage.config.AZURE_STORAGE_CONNECTION_STRING or ""
    endpoint = dict(item.split("=", 1) for item in connection.split(";") if "=" in item)["BlobEndpoint"]
    port = urllib.parse.urlsplit(endpoint).port
    assert port is not None
    return port


async def test_blocks_an_outage_left_are_discarded_once_the_store_is_back(hardening_azure: Harness) -> None:
    storage = azure_storage(hardening_azure)
    container = container_of(hardening_azure, storage)
    upstream = blob_endpoint_port(storage)
    with FaultyProxy(("127.0.0.1", upstream)) as proxy:
        connection = storage.config.AZURE_STORAGE_CONNECTION_STRING or ""
        faulty = AzureStorage(
            "file",
            config=storage.config.model_copy(
                update={
                    "AZURE_STORAGE_CONNECTION_STRING": connection.replace(f":{upstream}/", f":{proxy.port}/"),
                    "connect_timeout": 1.0,
                    "read_timeout": 2.0,
                    "max_retries": 1,
                }
            ),
        )
        app = FastAPI()

        @app.post("/upload")
        async def upload(files: Annotated[list[FileData], Depends(faulty)]) -> list[FileData]:
            return files

        def staged_blocks() -> int:
            try:
                _, uncommitted = container.get_blob_client("doc.bin").get_block_list("uncommitted")
            except Exception:
                return 0
            return len(uncommitted)

        async def body() -> AsyncIterator[bytes]:
            """Four blocks' worth; the store goes away once the claim and a block are staged."""
            yield b"--" + BOUNDARY.encode() + b"\r\n" + file_part("file", "doc.bin", b"")
            for sent in range(4 * PART // MiB):
                if sent == PART // MiB + 2:
                    for _ in range(200):
                        if await asyncio.to_thread(staged_blocks) >= 2:
                            break
                        await asyncio.sleep(0.025)
                    proxy.cut_after = 0  # every connection is reset at its first byte from now on
                yield b"\x5a" * MiB
            yield b"\r\n--" + BOUNDARY.encode() + b"--\r\n"

        async with in_process(app) as client:
            post = client.post("/upload", content=body(), headers={"content-type": content_type()})
            task = asyncio.ensure_future(post)
            done, _ = await asyncio.wait({task}, timeout=20)
            if not done:
                proxy.cut_after = None  # let the SDK's own retries end the request
                await task
                pytest.fail("the upload did not fail within 20 s of the store going away")
            reply = task.result()

        assert proxy.cuts >= 1
        assert reply.status_code == 500, reply.text
        # The abort could not reach the store: the blocks are still there.
        assert everything_in(container) == ["uncommitted:doc.bin"]
        proxy.cut_after = None  # the store is back

        assert await asyncio.to_thread(wait_until, lambda: everything_in(container) == [], 10.0), (
            everything_in(container)
        )
        assert faulty.janitor.pending == 0


async def test_cleanup_removes_what_unfinished_uploads_left_under_the_destination(
    hardening_azure: Harness,
) -> None:
    storage = azure_storage(hardening_azure, destination="in/box")
    container = container_of(hardening_azure, storage)

    def leave_blocks(name: str) -> None:
        container.get_blob_client(name).stage_block("left-behind-000001", b"staged, never committed")

    def leave_backup(name: str) -> None:
        container.upload_blob(name, b"a replaced version kept to revert")

    leave_blocks("in/box/stale.bin")
    leave_backup("in/box/.upload-0a1b2c.bak")
    container.upload_blob("in/box/kept.bin", b"a stored file")
    leave_blocks("in/box/kept.bin")  # a committed blob's name: its blocks are not a leftover
    leave_blocks("elsewhere/stale.bin")  # outside the destination
    leave_backup("elsewhere/.upload-3d4e5f.bak")
    assert await storage.cleanup() == 0  # nothing is a day old

    await asyncio.sleep(3)
    leave_blocks("in/box/fresh.bin")  # may be an upload still under way
    leave_backup("in/box/.upload-6a7b8c.bak")

    assert await storage.cleanup(older_than=timedelta(seconds=2)) == 2

    assert everything_in(container) == [
        "elsewhere/.upload-3d4e5f.bak",
        "in/box/.upload-6a7b8c.bak",
        "in/box/kept.bin",
        "uncommitted:elsewhere/stale.bin",
        "uncommitted:in/box/fresh.bin",
        "uncommitted:in/box/kept.bin",
    ]
