"""MemoryStorage is for payloads processed without persisting: the bytes live in
``FileData.file`` for the request, and the storage keeps nothing afterwards, however many
requests a long-running app serves. Its files are limited to 16 MiB unless the config says
otherwise. A ``destination`` hook cannot steer its keys out of their prefix.

No ``from __future__ import annotations``: FastAPI evaluates the routes' annotations.
"""

import gc
import os
import tracemalloc
import types
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI

from filestore_fastapi import Config, FileData, MemoryStorage, UploadContext

from .routes import upload_app
from .support import asgi_post, file_part, form, text_part

KiB = 1024
MiB = 1024 * KiB


def reachable_bytes(root: object) -> int:
    """Bytes held by ``root`` and what it refers to (not through modules, classes or functions)."""
    seen: set[int] = set()
    pending = [root]
    total = 0
    while pending:
        item = pending.pop()
        if id(item) in seen or isinstance(item, types.ModuleType | type | types.FunctionType):
            continue
        seen.add(id(item))
        if isinstance(item, bytes | bytearray):
            total += len(item)
        pending.extend(gc.get_referents(item))
    return total


async def test_memory_storage_keeps_nothing_after_the_request() -> None:
    storage = MemoryStorage("image", count=3)
    app = FastAPI()

    @app.post("/upload")
    async def upload(files: Annotated[list[FileData], Depends(storage)]) -> int:
        assert all(f.file is not None and len(f.file) == 64 * KiB for f in files)
        return len(files)

    body = form(*(file_part("image", f"{n}.png", os.urandom(64 * KiB), "image/png") for n in range(3)))
    for _ in range(20):  # warm-up: FastAPI's and Pydantic's caches
        assert (await asgi_post(app, body)).status == 200
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(300):  # 56 MiB of files
            reply = await asgi_post(app, body)
            assert reply.status == 200 and reply.json() == 3
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()

    assert grown < 4 * MiB, f"{grown / MiB:.1f} MiB more held after 300 requests"
    assert reachable_bytes(storage) < 64 * KiB
    assert not hasattr(storage, "files")


async def test_after_its_request_a_memory_file_is_gone_and_open_says_so() -> None:
    storage = MemoryStorage("note", count=2)
    app = upload_app(storage)

    first = await asgi_post(app, form(file_part("note", "a.txt", b"1"), file_part("note", "a.txt", b"2")))
    later = await asgi_post(app, form(file_part("note", "a.txt", b"3")))

    assert [f["filename"] for f in first.json()["files"]] == ["a.txt", "a-1.txt"]  # unique within a request
    assert [f["filename"] for f in later.json()["files"]] == ["a.txt"]  # nothing kept: the name is free
    with pytest.raises(FileNotFoundError):
        _ = [chunk async for chunk in storage.open("a.txt")]
    await storage.delete("a.txt")  # nothing to delete: not an error


async def test_memory_files_are_limited_to_16_mib_unless_the_config_says_otherwise() -> None:
    async def status(storage: MemoryStorage, size: int) -> int:
        return (await asgi_post(upload_app(storage), form(file_part("file", "big.bin", b"\0" * size)))).status

    default = MemoryStorage("file")
    assert default.config.max_file_size == 16 * MiB
    assert await status(default, 16 * MiB) == 200
    assert await status(default, 16 * MiB + 1) == 413
    assert await status(MemoryStorage("file", config=Config(destination="x")), 16 * MiB + 1) == 413
    unlimited = MemoryStorage("file", config=Config(max_file_size=None))
    assert unlimited.config.max_file_size is None
    assert await status(unlimited, 17 * MiB) == 200
    assert await status(MemoryStorage("file", config=Config(max_file_size=10)), 11) == 413


def by_user(context: UploadContext) -> str:
    return "users/" + context.form["user"]


@pytest.mark.parametrize("user", ["../../../etc", "..\\..\\etc", "bob/../../x", ".."])
async def test_a_memory_destination_hook_cannot_leave_its_prefix(user: str) -> None:
    app = upload_app(MemoryStorage("file", config=Config(destination=by_user)))

    reply = await asgi_post(app, form(text_part("user", user.encode()), file_part("file", "m.txt", b"m")))

    assert reply.status == 422, reply.body
    [error] = reply.json()["detail"]
    assert error["loc"] == ["body", "file"]
    assert "destination" in error["msg"] and "users" not in error["msg"]
    assert app.state.calls == 0


async def test_a_memory_destination_hook_drops_empty_and_dot_segments() -> None:
    def sloppy(context: UploadContext) -> str:
        return "/users//./" + context.form["user"] + "/"

    app = upload_app(MemoryStorage("file", config=Config(destination=sloppy)))
    names: list[Any] = []
    for user in (b"bob", b"./bob//"):
        reply = await asgi_post(app, form(text_part("user", user), file_part("file", "m.txt", b"m")))
        assert reply.status == 200, reply.body
        names += [f["filename"] for f in reply.json()["files"]]

    assert names == ["users/bob/m.txt", "users/bob/m.txt"]
