"""GCSStorage when things go wrong after all, on the real fake-gcs-server (one per session).

- **overwrite** (item 4): a request with ``overwrite=True`` that fails after its commit (the
  handler raises, a later file fails, the form is invalid, the handler is cancelled) leaves
  the object it replaced as it was (bytes, content type, metadata) and nothing hidden;
- **a stalled store** (item 6): uploads to an endpoint that accepts and never answers fail
  with a clean 500 within the configured timeouts while a plain ``def`` route of the same
  app keeps answering; a store that resets every connection fails an upload in seconds
  with the default config, not after the SDK's two minutes;
- **an outage** (item 7): what a failed request could not clean up while the store was
  unreachable (its upload session, its hidden temp object, the object it replaced) is
  cleaned up once the store is back, and ``cleanup()`` removes hidden objects that are old.

fake-gcs-server ignores preconditions on deletes and copies, so these tests show that the
right thing is restored and removed, not how a race with another writer ends.

No ``from __future__ import annotations``: FastAPI must evaluate the routes' ``Depends``
annotations, which name storages local to the tests.
"""

import asyncio
import contextlib
import datetime
import os
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import anyio
import pytest
from fastapi import Depends, FastAPI
from google.auth.credentials import AnonymousCredentials
from google.auth.transport.requests import AuthorizedSession
from google.cloud import storage as gcs

from filestore_fastapi import Config, FileData, GCSStorage
from tests.contract.harness_gcs import Harness
from tests.httpclient import httpx

from .failing_routes import HOWS, fail_after_commit, in_process
from .proxy import DeadStore, FaultyProxy
from .support import wait_until

KiB = 1024
MiB = 1024 * KiB
PART = 5 * MiB
GENERIC = "the file could not be stored"

OLD = b"the version that was there first\n" * 300
OLD_TYPE = "text/csv"
OLD_METADATA = {"owner": "alice"}
SIZES = pytest.mark.parametrize("size", [1000, PART + 1000], ids=["one-request", "resumable"])

_DENIED = b'{"error": {"code": 403, "message": "the store is down for this test"}}'
FORBIDDEN = (
    b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nConnection: close\r\n"
    + f"Content-Length: {len(_DENIED)}\r\n\r\n".encode()
    + _DENIED
)


def gcs_storage(harness: Harness, **config: Any) -> GCSStorage:
    storage = harness.make("file", part_size=PART, **config)
    assert isinstance(storage, GCSStorage)
    return storage


def bucket_of(storage: GCSStorage) -> Any:
    client = gcs.Client(
        project=storage.config.GCP_PROJECT,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": storage.config.endpoint_url},
    )
    return client.bucket(storage.bucket_name)


def key_of(storage: GCSStorage, name: str) -> str:
    return f"{storage.config.destination}/{name}"


def everything_in(bucket: Any) -> list[str]:
    return sorted(blob.name for blob in bucket.client.list_blobs(bucket.name))


def hidden_in(bucket: Any) -> list[str]:
    return [name for name in everything_in(bucket) if name.rsplit("/", 1)[-1].startswith(".upload-")]


def object_state(bucket: Any, key: str) -> tuple[bytes, str | None, dict[str, str] | None]:
    """An object's bytes, content type and custom metadata."""
    blob = bucket.get_blob(key)
    assert blob is not None, f"no object {key!r}"
    return blob.download_as_bytes(), blob.content_type, blob.metadata


def put_old(bucket: Any, key: str) -> None:
    blob = bucket.blob(key)
    blob.metadata = OLD_METADATA
    blob.upload_from_string(OLD, content_type=OLD_TYPE)


def upload_route(storage: GCSStorage) -> FastAPI:
    app = FastAPI()

    @app.post("/upload")
    async def upload(files: Annotated[list[FileData], Depends(storage)]) -> list[FileData]:
        return files

    return app


# -- item 4: overwrite=True and a request that fails after its commit --------------------------


@SIZES
@pytest.mark.parametrize("how", HOWS)
async def test_a_failed_overwrite_leaves_the_old_object_as_it_was(
    hardening_gcs: Harness, how: str, size: int
) -> None:
    storage = gcs_storage(hardening_gcs, overwrite=True)
    bucket = bucket_of(storage)
    key = key_of(storage, "doc.csv")
    put_old(bucket, key)

    broken = GCSStorage(
        "other", config=storage.config.model_copy(update={"GCP_BUCKET_NAME": "no-such-bucket-4c1d"})
    )
    await fail_after_commit(storage, broken, how, "doc.csv", os.urandom(size))

    assert object_state(bucket, key) == (OLD, OLD_TYPE, OLD_METADATA)
    assert everything_in(bucket) == [key]  # no backup, no temp object left

    # And a request that succeeds replaces it, leaving nothing hidden either.
    new = os.urandom(size)
    async with in_process(upload_route(storage)) as client:
        reply = await client.post("/upload", files={"file": ("doc.csv", new, "image/png")})
    assert reply.status_code == 200, reply.text
    assert [file["filename"] for file in reply.json()] == [key]
    assert object_state(bucket, key) == (new, "image/png", None)
    assert everything_in(bucket) == [key]


# -- item 6: a store that accepts and never answers, or resets every connection ------------------


def app_with_ping(storage: GCSStorage) -> FastAPI:
    app = upload_route(storage)

    @app.get("/ping")
    def ping() -> str:  # a plain def route: it runs in anyio's thread pool
        return "pong"

    return app


async def timed_post(client: httpx.AsyncClient, size: int) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    reply = await client.post("/upload", files={"file": ("doc.bin", b"s" * size)})
    return reply, time.monotonic() - started


async def within(seconds: float, *uploads: Any) -> list[tuple[httpx.Response, float]]:
    """The uploads' results, or a failure (not a hang) when they take longer than ``seconds``."""
    tasks = [asyncio.ensure_future(upload) for upload in uploads]
    done, pending = await asyncio.wait(tasks, timeout=seconds)
    if pending:
        pytest.fail(f"{len(pending)} of {len(tasks)} uploads still running after {seconds} s")
    return [task.result() for task in done]


def assert_generic_500(reply: httpx.Response) -> None:
    assert reply.status_code == 500, reply.text
    assert [d["msg"] for d in reply.json()["detail"]] == [GENERIC]


#: Generous on top of connect (1 s) + read (2 s): the point is seconds, not the SDK's minutes.
STALL_BUDGET = 8.0


async def test_a_stalled_store_fails_uploads_in_time_and_the_app_keeps_answering() -> None:
    # anyio's pool (40 threads) serves every ``def`` route; four stand for forty here, so that
    # four stalled uploads would take what forty take in a real app.
    anyio.to_thread.current_default_thread_limiter().total_tokens = 4
    with DeadStore(reset=False) as store:
        storage = GCSStorage(
            "file",
            config=Config(
                GCP_BUCKET_NAME="stalled",
                endpoint_url=store.url,
                part_size=PART,
                connect_timeout=1,
                read_timeout=2,
                max_retries=0,
            ),
        )
        sizes = [1000] * 4 + [PART + MiB]  # four single-request uploads, one resumable
        pings: list[float] = []
        async with in_process(app_with_ping(storage)) as client:

            async def keep_pinging() -> None:
                await asyncio.sleep(0.5)  # the uploads are waiting on the store by now
                while True:
                    started = time.monotonic()
                    reply = await asyncio.wait_for(client.get("/ping"), timeout=5)
                    assert reply.json() == "pong"
                    pings.append(time.monotonic() - started)
                    await asyncio.sleep(0.1)

            pinging = asyncio.ensure_future(keep_pinging())
            try:
                results = await within(20, *(timed_post(client, size) for size in sizes))
            finally:
                pinging.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pinging

    for reply, seconds in results:
        assert_generic_500(reply)
        assert seconds < STALL_BUDGET, f"a 500 after {seconds:.1f} s"
    assert len(pings) >= 5, pings
    assert max(pings) < 1.0, f"the def route took {max(pings):.1f} s to answer"


async def test_a_store_that_resets_every_connection_fails_an_upload_in_seconds() -> None:
    """The default config: one attempt and ``max_retries`` (2) retries of the failing call,
    about 1 + 2 seconds of back-off, then a 500 (the SDK alone keeps trying for 120 s)."""
    with DeadStore(reset=True) as store:
        storage = GCSStorage("file", config=Config(GCP_BUCKET_NAME="resetting", endpoint_url=store.url))
        async with in_process(upload_route(storage)) as client:
            results = await within(
                20, timed_post(client, 1000), timed_post(client, storage.config.part_size + 1)
            )
    for reply, seconds in results:
        assert_generic_500(reply)
        assert seconds < 10, f"a 500 after {seconds:.1f} s"


# -- item 7: an outage, and cleanup() -------------------------------------------------------------


@contextlib.contextmanager
def behind_proxy(storage: GCSStorage) -> Iterator[tuple[GCSStorage, FaultyProxy]]:
    """The same storage, its SDK talking to the emulator through a FaultyProxy."""
    upstream = urllib.parse.urlsplit(storage.config.endpoint_url or "").port
    assert upstream is not None
    with FaultyProxy(("127.0.0.1", upstream)) as proxy:
        # fake-gcs-server names itself in resumable-upload Locations: keep those chunks on the proxy.
        proxy.rewrite = (f"127.0.0.1:{upstream}".encode(), f"127.0.0.1:{proxy.port}".encode())
        faulty = GCSStorage(
            "file",
            config=storage.config.model_copy(
                update={"endpoint_url": proxy.url, "connect_timeout": 1.0, "read_timeout": 2.0}
            ),
        )
        yield faulty, proxy


def go_down(proxy: FaultyProxy) -> None:
    """Every request from now on is refused (403, which no SDK retries)."""
    proxy.answer, proxy.cut_after = FORBIDDEN, 0


def come_back(proxy: FaultyProxy) -> None:
    proxy.cut_after = None


Seen = Callable[[str, str, dict[str, list[str]], int], None]


@pytest.fixture
def watch(monkeypatch: pytest.MonkeyPatch) -> Callable[[Seen], list[tuple[str, str, int]]]:
    """``watch(seen)``: calls ``seen(method, url, query, status)`` after each request the SDK
    makes (every thread's), and returns the list of (method, url, status) it fills."""

    def start(seen: Seen) -> list[tuple[str, str, int]]:
        log: list[tuple[str, str, int]] = []
        original = AuthorizedSession.request

        def watched(self: AuthorizedSession, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            response = original(self, method, url, *args, **kwargs)  # type: ignore[no-untyped-call]
            log.append((method, url, response.status_code))
            seen(method, url, urllib.parse.parse_qs(urllib.parse.urlsplit(url).query), response.status_code)
            return response

        monkeypatch.setattr(AuthorizedSession, "request", watched)
        return log

    return start


async def test_a_session_an_outage_kept_open_is_cancelled_once_the_store_is_back(
    hardening_gcs: Harness, watch: Callable[[Seen], list[tuple[str, str, int]]]
) -> None:
    storage = gcs_storage(hardening_gcs)
    with behind_proxy(storage) as (faulty, proxy):

        def seen(method: str, url: str, query: dict[str, list[str]], status: int) -> None:
            if method == "PUT" and "upload_id" in query and status == 308:
                go_down(proxy)  # the first chunk is stored; the store goes away

        log = watch(seen)
        async with in_process(upload_route(faulty)) as client:
            reply = await client.post("/upload", files={"file": ("big.bin", b"\x5a" * (2 * PART + MiB))})

        assert_generic_500(reply)
        [session] = {url for method, url, status in log if method == "PUT" and status == 308}
        cancels = [status for method, url, status in log if method == "DELETE" and url == session]
        # The cancel could not reach the store: refused (403), or its pooled connection was reset
        # by the proxy going down (no answer at all); either way it waits for the janitor.
        assert cancels in ([], [403]), cancels
        come_back(proxy)

        def cancelled() -> bool:
            return (("DELETE", session, 499) in log) and faulty.janitor.pending == 0

        assert await asyncio.to_thread(wait_until, cancelled, 10.0), log[-3:]
    assert hidden_in(bucket_of(storage)) == []


async def test_a_temp_object_an_outage_left_is_deleted_once_the_store_is_back(
    hardening_gcs: Harness, watch: Callable[[Seen], list[tuple[str, str, int]]]
) -> None:
    storage = gcs_storage(hardening_gcs)
    bucket = bucket_of(storage)
    with behind_proxy(storage) as (faulty, proxy):

        def seen(method: str, url: str, query: dict[str, list[str]], status: int) -> None:
            if method == "PUT" and "upload_id" in query and status in (200, 201):
                go_down(proxy)  # the temp object is complete; the store goes before the copy

        watch(seen)
        async with in_process(upload_route(faulty)) as client:
            reply = await client.post("/upload", files={"file": ("big.bin", b"\x5a" * (PART + MiB))})

        assert_generic_500(reply)
        [temp] = everything_in(bucket)
        assert temp.startswith(key_of(storage, ".upload-")) and temp.endswith(".part")
        come_back(proxy)

        assert await asyncio.to_thread(wait_until, lambda: everything_in(bucket) == [], 10.0)
        assert faulty.janitor.pending == 0


@SIZES
async def test_an_overwrite_an_outage_could_not_revert_is_reverted_once_the_store_is_back(
    hardening_gcs: Harness, size: int
) -> None:
    storage = gcs_storage(hardening_gcs, overwrite=True)
    bucket = bucket_of(storage)
    key = key_of(storage, "doc.csv")
    put_old(bucket, key)
    with behind_proxy(storage) as (faulty, proxy):
        app = FastAPI()

        @app.post("/upload")
        async def upload(files: Annotated[list[FileData], Depends(faulty)]) -> None:
            go_down(proxy)
            raise RuntimeError("the handler failed, and the store is gone too")

        async with in_process(app) as client:
            reply = await client.post("/upload", files={"file": ("doc.csv", os.urandom(size), "image/png")})

        assert reply.status_code == 500
        assert object_state(bucket, key)[0] != OLD  # the revert could not reach the store
        assert faulty.janitor.pending >= 1
        come_back(proxy)

        def reverted() -> bool:
            return everything_in(bucket) == [key] and faulty.janitor.pending == 0

        assert await asyncio.to_thread(wait_until, reverted, 10.0), everything_in(bucket)
    assert object_state(bucket, key) == (OLD, OLD_TYPE, OLD_METADATA)


async def test_a_backup_an_outage_kept_is_deleted_once_the_store_is_back(hardening_gcs: Harness) -> None:
    storage = gcs_storage(hardening_gcs, overwrite=True)
    bucket = bucket_of(storage)
    key = key_of(storage, "doc.csv")
    put_old(bucket, key)
    new = os.urandom(1000)
    with behind_proxy(storage) as (faulty, proxy):
        app = FastAPI()

        @app.post("/upload")
        async def upload(files: Annotated[list[FileData], Depends(faulty)]) -> int:
            go_down(proxy)  # the request succeeds, but the backup cannot be released
            return len(files)

        async with in_process(app) as client:
            reply = await client.post("/upload", files={"file": ("doc.csv", new, "image/png")})

        assert reply.status_code == 200, reply.text
        assert faulty.janitor.pending == 1
        come_back(proxy)

        def released() -> bool:
            return everything_in(bucket) == [key] and faulty.janitor.pending == 0

        assert await asyncio.to_thread(wait_until, released, 10.0), everything_in(bucket)
    assert object_state(bucket, key) == (new, "image/png", None)


async def test_cleanup_removes_old_hidden_objects_under_the_destination(hardening_gcs: Harness) -> None:
    storage = gcs_storage(hardening_gcs)
    bucket = bucket_of(storage)
    prefix = str(storage.config.destination)
    leftovers = [f"{prefix}/.upload-0a1b2c.part", f"{prefix}/.upload-3d4e5f.bak"]
    kept = [
        f"{prefix}/report.part",  # a user's file, not one of ours
        f"{prefix}/.upload-notes.txt",
        "elsewhere/.upload-6a7b8c.part",  # outside the destination
    ]
    for name in leftovers + kept:
        bucket.blob(name).upload_from_string(b"left behind")
    async with in_process(upload_route(storage)) as client:
        reply = await client.post("/upload", files={"file": ("fresh.bin", os.urandom(PART + 1))})
        assert reply.status_code == 200, reply.text
    stored = key_of(storage, "fresh.bin")

    assert await storage.cleanup() == 0  # nothing is a day old
    assert everything_in(bucket) == sorted([*leftovers, *kept, stored])
    await asyncio.sleep(0.05)
    assert await storage.cleanup(older_than=datetime.timedelta(0)) == 2
    assert everything_in(bucket) == sorted([*kept, stored])
