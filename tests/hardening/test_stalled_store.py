"""An S3 store that stops answering must not freeze the rest of the app, and a store that
fails fast must fail the request fast.

- **Hung store**: a listener on 127.0.0.1 that accepts connections and never answers. An
  app under a real uvicorn has an S3 route pointed at it (connect 1 s, read 2 s, no
  retries), a plain ``def`` route and a local upload route. While 48 uploads hang on the
  store, the other two routes answer at once; then every S3 upload gets its 500 within
  the configured timeout (plus the queue of the storage's own threads).
- **Resetting store**: a listener that resets every connection. With the default config a
  request is a 500 after one attempt and ``max_retries`` retries of one call, in seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from filestore_fastapi import Config, S3Storage
from tests.e2e.server import run_uvicorn
from tests.httpclient import httpx

from .proxy import DeadStore
from .routes import upload_app
from .support import asgi_post, content_type, file_part, form

T = TypeVar("T")
MiB = 1024 * 1024
APP = "tests.hardening.apps.stalled_app:app"
GENERIC = "the file could not be stored"
SMALL_UPLOADS, LARGE_UPLOADS = 42, 6  # 42 small ones alone would hold all 40 threads anyio shares
READ_TIMEOUT = 2.0  # as in the app
EXPECT_WAIT = 1.0  # botocore waits this long for "100 Continue" before sending a body
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


async def timed(call: Awaitable[T], limit: float) -> tuple[float, T | None]:
    """How long ``call`` took, and its result (None if it took longer than ``limit``)."""
    started = time.monotonic()
    try:
        result = await asyncio.wait_for(call, limit)
    except (asyncio.TimeoutError, httpx.TimeoutException):
        return time.monotonic() - started, None
    return time.monotonic() - started, result


async def until(check: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


@contextlib.contextmanager
def stalled_app(store: DeadStore, local_dir: Path) -> Iterator[str]:
    env = {"STALLED_ENDPOINT": store.url, "STALLED_LOCAL_DIR": str(local_dir), **CREDENTIALS}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    with run_uvicorn(APP, env) as server:
        yield server.url


async def test_a_hung_s3_store_leaves_def_routes_and_local_uploads_answering(tmp_path: Path) -> None:
    headers = {"content-type": content_type()}
    small = form(file_part("file", "small.txt", b"s" * 4096))
    large = form(file_part("file", "large.bin", b"L" * (6 * MiB)))  # more than one 5 MiB part
    local_file = b"l" * (256 * 1024)  # large enough for LocalStorage to write it in a thread
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=0)

    with DeadStore(reset=False) as store, stalled_app(store, tmp_path) as url:
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:

            async def to_s3(body: bytes) -> tuple[float, httpx.Response]:
                started = time.monotonic()
                response = await client.post("/s3", content=body, headers=headers)
                return time.monotonic() - started, response

            bodies = [small] * SMALL_UPLOADS + [large] * LARGE_UPLOADS
            uploads = [asyncio.ensure_future(to_s3(body)) for body in bodies]
            try:
                # The storage's 16 threads are all waiting on the store: the hang is on.
                assert await until(lambda: store.accepted >= Config().max_threads, 10), store.accepted
                ping_took, ping = await timed(client.get("/ping"), 5)
                local_took, local = await timed(
                    client.post(
                        "/local", content=form(file_part("file", "l.bin", local_file)), headers=headers
                    ),
                    5,
                )
                assert ping is not None and ping.json() == "pong", (
                    f"GET /ping: no answer in {ping_took:.1f} s"
                )
                assert local is not None and local.status_code == 200, (
                    f"POST /local: no answer in {local_took:.1f} s"
                )
                assert ping_took < 2 and local_took < 2, (ping_took, local_took)
                assert not any(upload.done() for upload in uploads), "the store did not hold the uploads"
                results = await asyncio.wait_for(asyncio.gather(*uploads), 60)
            finally:
                for upload in uploads:
                    upload.cancel()

    assert (tmp_path / "l.bin").read_bytes() == local_file
    for _, response in results:
        assert response.status_code == 500, response.text
        assert [d["msg"] for d in response.json()["detail"]] == [GENERIC]
    # One call each (a PutObject, or the HEAD that claims a multipart key), 16 at a time.
    waves = math.ceil(len(bodies) / Config().max_threads)
    bound = waves * (READ_TIMEOUT + EXPECT_WAIT) + 5
    slowest = max(took for took, _ in results)
    assert slowest < bound, f"the slowest S3 upload took {slowest:.1f} s (bound {bound:.0f} s)"


@pytest.mark.parametrize("retries", [0, 1, None], ids=["no-retries", "one-retry", "default"])
@pytest.mark.parametrize("size", [pytest.param(1000, id="small"), pytest.param(9 * MiB, id="multipart")])
async def test_an_s3_store_that_resets_every_connection_is_a_500_after_max_retries(
    size: int, retries: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The storage's ``max_retries`` decides, not the environment (nor a profile's ``max_attempts``)."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "10")
    settings: dict[str, Any] = {"AWS_BUCKET_NAME": "reset", "AWS_DEFAULT_REGION": "us-east-1"}
    if retries is not None:
        settings["max_retries"] = retries
    config = Config(**settings)
    body = form(file_part("file", "a.bin", b"r" * size))
    with DeadStore(reset=True) as store:
        storage = S3Storage("file", config=config.model_copy(update={"endpoint_url": store.url}))
        took, reply = await timed(asgi_post(upload_app(storage), body), 30)

    assert reply is not None, f"no answer in {took:.0f} s"
    assert reply.status == 500, reply.body
    assert [d["msg"] for d in reply.json()["detail"]] == [GENERIC]
    # One call fails (the first of the upload): 1 attempt + max_retries retries.
    assert store.accepted == 1 + config.max_retries
    assert took < 5, f"{took:.1f} s"
