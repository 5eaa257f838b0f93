"""A local file's batches: hashed and written in the storage's worker threads, past the first
one copied into two reusable blocks. What that must not change: the bytes, their order, and
that an aborted upload never has its file closed while a thread still writes to it."""

# No ``from __future__ import annotations``: FastAPI evaluates the routes' annotations.

import hashlib
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import anyio
import pytest
from fastapi import Depends, FastAPI
from starlette.types import Message

from filestore_fastapi import Config, FileData, LocalStorage
from filestore_fastapi.backends.base import Chunk, Writer, WriteRequest
from filestore_fastapi.backends.local import LocalWriter
from tests.asgi import post_scope

from .test_multipart import CONTENT_TYPE, encode, file_part

KiB = 1024


def upload_app(storage: Any) -> FastAPI:
    app = FastAPI()

    @app.post("/upload")
    async def upload(files: Annotated[list[FileData], Depends(storage)]) -> list[FileData]:
        return files

    return app


def receiver(body: bytes, chunk: int) -> Any:
    pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)]

    async def receive() -> Message:
        if pieces:
            piece = pieces.pop(0)
            return {"type": "http.request", "body": piece, "more_body": bool(pieces)}
        await anyio.sleep_forever()
        raise AssertionError

    return receive


HEADERS = [(b"content-type", CONTENT_TYPE.encode())]


@pytest.mark.parametrize("chunk", [1000, 64 * KiB, 300 * KiB])  # pieces within, across and over a block
async def test_many_batches_arrive_whole_and_in_order(tmp_path: Path, chunk: int) -> None:
    storage = LocalStorage("file", config=Config(destination=tmp_path, chunk_size=128 * KiB))
    data = os.urandom(2 * 1024 * KiB + 12345)  # 16 batches and a partial block
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    body = encode([file_part("file", "a.bin", data)])
    await upload_app(storage)(post_scope("/upload", HEADERS), receiver(body, chunk), send)
    assert sent[0]["status"] == 200
    assert (tmp_path / "a.bin").read_bytes() == data
    assert f'"sha256":"{hashlib.sha256(data).hexdigest()}"'.encode() in sent[1]["body"]


class SlowWriter(LocalWriter):
    """Its second batch's write blocks until released; it records when it ends and aborts."""

    def __init__(self, storage: Any, target: WriteRequest, log: list[str], gate: threading.Event) -> None:
        super().__init__(storage, target)
        self._log, self._gate, self._batches = log, gate, 0

    def write_batch_blocking(self, chunks: Sequence[Chunk]) -> None:
        self._batches += 1
        if self._batches == 2:
            self._log.append("write started")
            self._gate.wait(5)
            time.sleep(0.05)
        super().write_batch_blocking(chunks)
        if self._batches == 2:
            self._log.append("write done")

    async def abort(self) -> None:
        self._log.append("abort")
        await super().abort()


async def test_a_cancelled_upload_aborts_only_after_the_write_in_flight(tmp_path: Path) -> None:
    log: list[str] = []
    gate = threading.Event()

    class SlowStorage(LocalStorage):
        async def open_writer(self, target: WriteRequest) -> Writer:
            return SlowWriter(self, target, log, gate)

    storage = SlowStorage("file", config=Config(destination=tmp_path, chunk_size=64 * KiB))
    body = encode([file_part("file", "a.bin", os.urandom(1024 * KiB))])

    async def send(message: Message) -> None:
        pass

    async with anyio.create_task_group() as group:
        group.start_soon(upload_app(storage), post_scope("/upload", HEADERS), receiver(body, 16 * KiB), send)
        while "write started" not in log:
            await anyio.sleep(0.01)
        group.cancel_scope.cancel()  # the request is cancelled while the loop waits for that write
        threading.Timer(0.1, gate.set).start()
    assert log == ["write started", "write done", "abort"]
    assert list(tmp_path.iterdir()) == [], "nothing left of the cancelled upload"
