"""The ``progress`` hook in multipart uploads: every ``progress_interval`` bytes of a file and
once at its end, sync or async, never once per chunk."""

# No ``from __future__ import annotations``: FastAPI evaluates the routes' annotations.

import os
from pathlib import Path
from typing import Annotated, Any

import anyio
import pytest
from fastapi import Depends, FastAPI
from starlette.types import Message

from filestore_fastapi import Config, FileData, LocalStorage, MemoryStorage, UploadContext
from tests.asgi import post_scope

from .test_multipart import CONTENT_TYPE, encode, file_part

KiB = 1024


def upload_app(storage: Any) -> FastAPI:
    app = FastAPI()

    @app.post("/upload")
    async def upload(files: Annotated[list[FileData], Depends(storage)]) -> list[FileData]:
        return files

    return app


async def post_in_chunks(app: FastAPI, body: bytes, chunk: int) -> int:
    """POST ``body`` in ASGI messages of ``chunk`` bytes; the response status."""
    pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)]
    sent: list[Message] = []

    async def receive() -> Message:
        if pieces:
            piece = pieces.pop(0)
            return {"type": "http.request", "body": piece, "more_body": bool(pieces)}
        await anyio.sleep_forever()
        raise AssertionError

    async def send(message: Message) -> None:
        sent.append(message)

    headers = [(b"content-type", CONTENT_TYPE.encode()), (b"content-length", str(len(body)).encode())]
    await app(post_scope("/upload", headers), receive, send)
    return int(sent[0]["status"])


def check_paced(calls: list[int], size: int, interval: int, chunk: int) -> None:
    """A call at the first chunk that reaches each whole multiple of ``interval`` (at most a
    chunk past it), and one with the whole size at the end (the same call when the last
    mark and the end coincide)."""
    assert calls[-1] == size, "a last call with the whole size"
    assert calls == sorted(set(calls)), "totals only grow, none repeated"
    for mark, total in enumerate(calls[:-1], start=1):
        assert mark * interval <= total < mark * interval + chunk
    assert len(calls) in (size // interval, size // interval + 1)


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_calls_at_the_interval_and_at_the_end(tmp_path: Path, kind: str) -> None:
    calls: list[tuple[str, str, int]] = []

    def sync_hook(context: UploadContext, received: int) -> None:
        calls.append((context.field_name, context.filename, received))

    async def async_hook(context: UploadContext, received: int) -> None:
        await anyio.sleep(0)
        calls.append((context.field_name, context.filename, received))

    interval, chunk = 100 * KiB, 4 * KiB
    storage = LocalStorage(
        "file",
        config=Config(
            destination=tmp_path,
            progress=sync_hook if kind == "sync" else async_hook,
            progress_interval=interval,
            chunk_size=256 * KiB,
        ),
    )
    data = os.urandom(1000 * KiB + 123)
    status = await post_in_chunks(upload_app(storage), encode([file_part("file", "a.bin", data)]), chunk)
    assert status == 200
    assert {(field, name) for field, name, _ in calls} == {("file", "a.bin")}
    received = [total for _, _, total in calls]
    check_paced(received, len(data), interval, chunk)
    assert len(received) in (10, 11), "ten marks and the end, not one call per chunk (250 chunks)"


async def test_each_file_counts_its_own_bytes_and_a_small_file_gets_one_call() -> None:
    calls: list[tuple[str, int]] = []
    storage = MemoryStorage(
        "file",
        count=2,
        config=Config(
            progress=lambda context, received: calls.append((context.filename, received)),
            progress_interval=64 * KiB,
        ),
    )
    big, small = os.urandom(200 * KiB), os.urandom(10 * KiB)
    body = encode([file_part("file", "big.bin", big), file_part("file", "small.bin", small)])
    assert await post_in_chunks(upload_app(storage), body, 8 * KiB) == 200
    assert [total for name, total in calls if name == "small.bin"] == [len(small)]
    check_paced([total for name, total in calls if name == "big.bin"], len(big), 64 * KiB, 8 * KiB)


async def test_a_mark_reached_by_the_end_is_one_call() -> None:
    calls: list[int] = []
    storage = MemoryStorage(
        "file", config=Config(progress=lambda _, received: calls.append(received), progress_interval=64 * KiB)
    )
    data = os.urandom(128 * KiB)
    assert (
        await post_in_chunks(upload_app(storage), encode([file_part("file", "a.bin", data)]), 16 * KiB) == 200
    )
    assert len(calls) == 2 and 64 * KiB <= calls[0] < 80 * KiB + 16 * KiB and calls[1] == len(data)


async def test_no_hook_no_calls_and_a_failing_hook_fails_the_upload(tmp_path: Path) -> None:
    def broken(context: UploadContext, received: int) -> None:
        raise RuntimeError("the hook broke")

    storage = LocalStorage(
        "file", config=Config(destination=tmp_path, progress=broken, progress_interval=KiB)
    )
    data = os.urandom(10 * KiB)
    status = await post_in_chunks(upload_app(storage), encode([file_part("file", "a.bin", data)]), KiB)
    assert status == 500
    assert list(tmp_path.iterdir()) == [], "nothing kept of the failed upload"
