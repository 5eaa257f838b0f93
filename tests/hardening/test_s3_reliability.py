"""S3Storage when a request fails after its file is in place, or while S3 is unreachable.

- ``overwrite=True``: a request that fails after all (the handler refuses it, a later file
  cannot be stored, a timeout cancels it) leaves the object it would have replaced exactly
  as it was (bytes, content type, metadata), and no hidden backup behind; a request that
  succeeds leaves its own object and no backup either.
- Clean-ups that fail during an outage (abort of an unfinished multipart upload, putting
  back a replaced object, deleting a backup) are retried by the storage's janitor and done
  once S3 answers again: a ``FaultyProxy`` between the SDK and moto refuses everything,
  then heals.
- ``cleanup(older_than)`` removes what uploads left under the destination prefix.

All of it through a FastAPI app and ``Depends(storage)``, against the session's moto server.
No ``from __future__ import annotations``: FastAPI evaluates the routes' annotations, which
name storages local to the tests.
"""

import asyncio
import os
import urllib.parse
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any

import anyio
import pytest
from fastapi import Depends, FastAPI, HTTPException

from filestore_fastapi import FileData, S3Storage
from filestore_fastapi.backends import s3 as s3_backend
from tests.asgi import post_scope

from .proxy import FaultyProxy
from .support import Message, Reply, content_type, file_part, form, wait_until

MiB = 1024 * 1024
PART = 5 * MiB
OLD = b"the previous version " * 500
OLD_TYPE = "text/csv"
OLD_META = {"owner": "alice", "revision": "7"}
OLD_CACHE = "max-age=3600"
NAME = "report.bin"

Handler = Callable[[list[FileData]], Awaitable[Any]]


# -- helpers -----------------------------------------------------------------------------------


def make(harness: Any, **config: Any) -> S3Storage:
    storage = harness.make("file", **config)
    assert isinstance(storage, S3Storage)
    return storage


def key_of(storage: S3Storage, name: str = NAME) -> str:
    return f"{storage.config.destination}/{name}"


def seed(storage: S3Storage, key: str, body: bytes = OLD) -> None:
    storage.client().put_object(
        Bucket=storage.bucket,
        Key=key,
        Body=body,
        ContentType=OLD_TYPE,
        Metadata=OLD_META,
        CacheControl=OLD_CACHE,
    )


def state(storage: S3Storage, key: str) -> tuple[bytes, str, dict[str, str], str | None]:
    """The object's bytes, content type, user metadata and cache control."""
    got = storage.client().get_object(Bucket=storage.bucket, Key=key)
    return got["Body"].read(), got["ContentType"], got["Metadata"], got.get("CacheControl")


def everything(storage: S3Storage) -> list[str]:
    """Every object and unfinished multipart upload in the storage's bucket."""
    client = storage.client()
    found = [o["Key"] for o in client.list_objects_v2(Bucket=storage.bucket).get("Contents", [])]
    uploads = client.list_multipart_uploads(Bucket=storage.bucket).get("Uploads", [])
    return sorted(found + [f"multipart:{u['Key']}" for u in uploads])


def backups(storage: S3Storage) -> list[str]:
    return [key for key in everything(storage) if "/.upload-" in key]


def assert_untouched(storage: S3Storage, key: str, body: bytes = OLD) -> None:
    assert state(storage, key) == (body, OLD_TYPE, OLD_META, OLD_CACHE)
    assert everything(storage) == [key], "a backup or an unfinished upload was left behind"


def app_of(*storages: S3Storage, handler: Handler | None = None) -> FastAPI:
    """``POST /upload`` depending on one or two storages (fields ``file`` and ``extra``)."""
    app = FastAPI()
    first, *rest = storages

    async def run(files: list[FileData]) -> Any:
        return await handler(files) if handler is not None else [f.filename for f in files]

    if rest:
        (second,) = rest

        @app.post("/upload")
        async def upload_two(
            files: Annotated[list[FileData], Depends(first)],
            extra: Annotated[list[FileData], Depends(second)],
        ) -> Any:
            return await run(files + extra)

    else:

        @app.post("/upload")
        async def upload_one(files: Annotated[list[FileData], Depends(first)]) -> Any:
            return await run(files)

    return app


async def post(
    app: FastAPI, body: bytes, before_piece: Callable[[int], Awaitable[None]] | None = None
) -> Reply:
    """POST ``body`` in-process in 1 MiB pieces; ``before_piece(n)`` runs before piece ``n``."""
    pieces = [body[i : i + MiB] for i in range(0, len(body), MiB)]
    scope = post_scope("/upload", [(b"host", b"test"), (b"content-type", content_type().encode())])
    status, answer, sent = 0, bytearray(), 0

    async def receive() -> Message:
        nonlocal sent
        if sent < len(pieces):
            if before_piece is not None:
                await before_piece(sent)
            sent += 1
            return {"type": "http.request", "body": pieces[sent - 1], "more_body": sent < len(pieces)}
        await anyio.sleep_forever()  # a client waiting for its answer
        raise AssertionError

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            answer.extend(message.get("body", b""))

    await app(scope, receive, send)
    return Reply(status, {}, bytes(answer))


def new_file(size: int, field: str = "file", name: str = NAME) -> bytes:
    return file_part(field, name, os.urandom(size), "video/mp4")


# -- item 4: overwrite + a failed request leaves the previous object as it was ------------------

SIZES = [pytest.param(1000, id="small"), pytest.param(PART + 1000, id="multipart")]


async def refuse(files: list[FileData]) -> Any:
    raise HTTPException(409, "the handler refused the upload")


@pytest.mark.parametrize("size", SIZES)
async def test_the_handler_refusing_puts_the_replaced_object_back(hardening_s3: Any, size: int) -> None:
    storage = make(hardening_s3, overwrite=True, part_size=PART)
    key = key_of(storage)
    seed(storage, key)

    reply = await post(app_of(storage, handler=refuse), form(new_file(size)))

    assert reply.status == 409, reply.body
    assert_untouched(storage, key)


@pytest.mark.parametrize("size", SIZES)
async def test_a_later_file_that_cannot_be_stored_puts_the_replaced_object_back(
    hardening_s3: Any, size: int
) -> None:
    storage = make(hardening_s3, overwrite=True, part_size=PART)
    key = key_of(storage)
    seed(storage, key)
    broken = S3Storage(
        "extra", config=storage.config.model_copy(update={"AWS_BUCKET_NAME": "no-such-bucket"})
    )

    reply = await post(app_of(storage, broken), form(new_file(size), new_file(100, "extra", "b.txt")))

    assert reply.status == 500, reply.body
    assert_untouched(storage, key)


@pytest.mark.parametrize("size", SIZES)
async def test_a_timeout_cancelling_the_request_puts_the_replaced_object_back(
    hardening_s3: Any, size: int
) -> None:
    storage = make(hardening_s3, overwrite=True, part_size=PART)
    key = key_of(storage)
    seed(storage, key)
    reached = asyncio.Event()

    async def slow(files: list[FileData]) -> Any:
        reached.set()
        await asyncio.sleep(60)

    request = asyncio.ensure_future(post(app_of(storage, handler=slow), form(new_file(size))))
    await asyncio.wait_for(reached.wait(), 30)  # the file is committed, the handler runs

    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(request, 0.2)

    assert_untouched(storage, key)


@pytest.mark.parametrize(
    ("limits", "second", "status"),
    [
        pytest.param({"count": 1}, new_file(10, name="second.bin"), 422, id="count"),
        pytest.param({"count": 2, "max_file_size": PART + 1000}, new_file(PART + 1001), 413, id="size"),
    ],
)
@pytest.mark.parametrize("size", SIZES)
async def test_a_second_file_refused_leaves_the_object_the_first_would_replace(
    hardening_s3: Any, size: int, limits: dict[str, Any], second: bytes, status: int
) -> None:
    """Refusals come before any commit (guarding that order; this passed before, too)."""
    storage = make(hardening_s3, overwrite=True, part_size=PART, **limits)
    key = key_of(storage)
    seed(storage, key)

    reply = await post(app_of(storage), form(new_file(size), second))

    assert reply.status == status, reply.body
    assert_untouched(storage, key)


async def test_an_object_too_large_for_one_copy_request_is_kept_by_a_multipart_copy(
    hardening_s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above 5 GiB CopyObject refuses: the backup and the restore go through boto3's managed
    (multipart) copy. The limit is lowered so a 6 MiB object takes that path here."""
    monkeypatch.setattr(s3_backend, "COPY_LIMIT", 5 * MiB)
    storage = make(hardening_s3, overwrite=True, part_size=PART)
    key = key_of(storage)
    large_old = os.urandom(6 * MiB)
    seed(storage, key, large_old)

    reply = await post(app_of(storage, handler=refuse), form(new_file(1000)))

    assert reply.status == 409, reply.body
    assert_untouched(storage, key, large_old)


@pytest.mark.parametrize("size", SIZES)
async def test_a_successful_overwrite_keeps_a_backup_only_while_the_request_runs(
    hardening_s3: Any, size: int
) -> None:
    storage = make(hardening_s3, overwrite=True, part_size=PART)
    key = key_of(storage)
    seed(storage, key)
    data = os.urandom(size)

    async def look(files: list[FileData]) -> Any:
        kept = await anyio.to_thread.run_sync(backups, storage)
        return [
            (k, (await anyio.to_thread.run_sync(state, storage, k))[:3] == (OLD, OLD_TYPE, OLD_META))
            for k in kept
        ]

    reply = await post(app_of(storage, handler=look), form(file_part("file", NAME, data, "video/mp4")))

    assert reply.status == 200, reply.body
    [(backup, holds_old)] = reply.json()  # while the handler ran, the old version was kept
    assert backup.startswith(f"{storage.config.destination}/.upload-") and backup.endswith(".bak")
    assert holds_old
    assert state(storage, key)[:2] == (data, "video/mp4")
    assert everything(storage) == [key]


# -- item 7: clean-ups that fail while S3 is unreachable are retried once it is back ------------


def proxied(storage: S3Storage, proxy: FaultyProxy, **config: Any) -> S3Storage:
    """The same bucket and prefix, the SDK talking to moto through ``proxy``, no SDK retries."""
    update = {"endpoint_url": proxy.url, "max_retries": 0, **config}
    return S3Storage(storage.name, storage.count, config=storage.config.model_copy(update=update))


def proxy_for(storage: S3Storage) -> FaultyProxy:
    port = urllib.parse.urlsplit(storage.config.endpoint_url or "").port
    assert port is not None
    return FaultyProxy(("127.0.0.1", port))


REFUSE_ALL = 0  # ``cut_after``: a connection is reset as soon as it carries a byte


async def test_an_abort_that_fails_during_an_outage_is_retried_once_s3_is_back(hardening_s3: Any) -> None:
    storage = make(hardening_s3)
    with proxy_for(storage) as proxy:
        faulty = proxied(storage, proxy, part_size=PART)

        async def outage_once_started(piece: int) -> None:
            if piece == 7 and proxy.cut_after is None:  # part 1 went off after 5 MiB
                started = await anyio.to_thread.run_sync(
                    wait_until, lambda: any(k.startswith("multipart:") for k in everything(storage))
                )
                assert started, "the multipart upload never started"
                proxy.cut_after = REFUSE_ALL

        reply = await post(app_of(faulty), form(new_file(24 * MiB)), outage_once_started)

        assert reply.status == 500, reply.body
        assert proxy.cuts >= 2, "the abort was not refused too"
        assert [k for k in everything(storage) if k.startswith("multipart:")], "nothing left to retry"
        assert faulty.janitor.pending == 1
        proxy.cut_after = None  # S3 is back
        assert await anyio.to_thread.run_sync(wait_until, lambda: everything(storage) == [], 10.0), (
            everything(storage)
        )
        assert faulty.janitor.pending == 0


async def test_putting_back_a_replaced_object_during_an_outage_is_retried(hardening_s3: Any) -> None:
    storage = make(hardening_s3, overwrite=True)
    key = key_of(storage)
    seed(storage, key)
    with proxy_for(storage) as proxy:
        faulty = proxied(storage, proxy)

        async def outage_then_refuse(files: list[FileData]) -> Any:
            proxy.cut_after = REFUSE_ALL  # the revert will find S3 unreachable
            raise HTTPException(409, "refused")

        reply = await post(app_of(faulty, handler=outage_then_refuse), form(new_file(1000)))

        assert reply.status == 409, reply.body
        assert faulty.janitor.pending == 1
        proxy.cut_after = None
        assert await anyio.to_thread.run_sync(wait_until, lambda: everything(storage) == [key], 10.0)
        assert_untouched(storage, key)


async def test_deleting_a_backup_during_an_outage_is_retried(hardening_s3: Any) -> None:
    storage = make(hardening_s3, overwrite=True)
    key = key_of(storage)
    seed(storage, key)
    data = os.urandom(1000)
    with proxy_for(storage) as proxy:
        faulty = proxied(storage, proxy)

        async def outage_then_succeed(files: list[FileData]) -> Any:
            proxy.cut_after = REFUSE_ALL  # the release will find S3 unreachable
            return [f.filename for f in files]

        reply = await post(
            app_of(faulty, handler=outage_then_succeed), form(file_part("file", NAME, data, "video/mp4"))
        )

        assert reply.status == 200, reply.body
        assert faulty.janitor.pending == 1
        assert len(backups(storage)) == 1
        proxy.cut_after = None
        assert await anyio.to_thread.run_sync(wait_until, lambda: everything(storage) == [key], 10.0)
        assert state(storage, key)[:2] == (data, "video/mp4")


# -- item 7: cleanup(older_than) --------------------------------------------------------------


def start_upload(storage: S3Storage, key: str) -> None:
    storage.client().create_multipart_upload(Bucket=storage.bucket, Key=key)


async def test_cleanup_removes_unfinished_uploads_and_backups_under_the_prefix(hardening_s3: Any) -> None:
    storage = make(hardening_s3)
    prefix = str(storage.config.destination)
    client = storage.client()
    for key in (f"{prefix}/big.bin", f"{prefix}/sub/other.bin", "elsewhere/big.bin", f"{prefix}-not/x.bin"):
        start_upload(storage, key)
    for key in (f"{prefix}/.upload-0123abcd.bak", f"{prefix}/sub/.upload-4567ef01.bak", f"{prefix}/kept.txt"):
        client.put_object(Bucket=storage.bucket, Key=key, Body=b"x")
    client.put_object(Bucket=storage.bucket, Key="elsewhere/.upload-89abcdef.bak", Body=b"x")
    before = everything(storage)

    # moto reports every upload as initiated on 2010-11-10 (a fixed date in its responses),
    # so "too young to remove" needs an older_than of more than that.
    assert await storage.cleanup(timedelta(days=365 * 100)) == 0
    assert everything(storage) == before
    assert await storage.cleanup(timedelta(0)) == 4

    assert everything(storage) == sorted(
        [
            "elsewhere/.upload-89abcdef.bak",
            f"{prefix}/kept.txt",
            "multipart:elsewhere/big.bin",
            f"multipart:{prefix}-not/x.bin",
        ]
    )
    assert await storage.cleanup(timedelta(0)) == 0


async def test_cleanup_with_a_destination_hook_needs_a_prefix(hardening_s3: Any) -> None:
    storage = make(hardening_s3)
    hooked = S3Storage("file", config=storage.config.model_copy(update={"destination": lambda c: "x"}))
    start_upload(storage, "x/a.bin")

    with pytest.raises(ValueError, match="prefix"):
        await hooked.cleanup(timedelta(0))
    assert await hooked.cleanup(timedelta(0), prefix="x/") == 1
    assert everything(storage) == []
