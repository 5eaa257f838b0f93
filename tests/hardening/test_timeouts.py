"""Reliability items 5 and 12: time limits end a request like any other failure.

A handler cancelled by a timeout (middleware, ``asyncio.wait_for``, ``anyio``) or by a
shutdown rolls back its files. A client that stops sending the body is answered 408 after
``idle_timeout`` and leaves nothing, on a real uvicorn (which has no body timeout itself).

No ``from __future__ import annotations``: FastAPI must evaluate the routes' annotations.
"""

import asyncio
import http.client
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import anyio
import pytest
from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from filestore_fastapi import Config, FileData, LocalStorage
from tests.e2e.server import run_uvicorn
from tests.httpclient import httpx

from .support import BOUNDARY, content_type, file_part, form, raw_exchange, request_head, wait_until

MiB = 1024 * 1024


def entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def slow_app(storage: LocalStorage, started: asyncio.Event) -> FastAPI:
    """A handler that runs long after its files are stored."""
    app = FastAPI()

    @app.post("/upload")
    async def upload(files: Annotated[list[FileData], Depends(storage)]) -> int:
        started.set()
        await asyncio.sleep(30)
        return len(files)

    return app


class WaitForTimeout:
    """A pure ASGI middleware that cancels the app with ``asyncio.wait_for`` after ``seconds``."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app, self.seconds = app, seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await asyncio.wait_for(self.app(scope, receive, send), self.seconds)
        except asyncio.TimeoutError:
            await JSONResponse({"detail": "timed out"}, status_code=504)(scope, receive, send)


class AnyioTimeout:
    """A pure ASGI middleware that gives up on the app after ``seconds``, as many do."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app, self.seconds = app, seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with anyio.move_on_after(self.seconds) as scope_:
            await self.app(scope, receive, send)
        if scope_.cancelled_caught:
            await JSONResponse({"detail": "timed out"}, status_code=504)(scope, receive, send)


def body(*names: str) -> bytes:
    return form(*(file_part("file", name, b"x" * 200_000) for name in names))


@pytest.mark.parametrize("wrap", ["wait_for", "anyio"])
async def test_a_handler_cancelled_by_a_timeout_keeps_no_file(tmp_path: Path, wrap: str) -> None:
    storage = LocalStorage("file", count=2, config=Config(destination=str(tmp_path)))
    started = asyncio.Event()
    app = slow_app(storage, started)
    timed: Any = WaitForTimeout(app, 0.5) if wrap == "wait_for" else AnyioTimeout(app, 0.5)
    transport = httpx.ASGITransport(app=timed)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        reply = await client.post(
            "/upload", content=body("a.bin", "b.bin"), headers={"content-type": content_type()}
        )
    assert started.is_set(), "the handler ran, so the files had been stored"
    assert reply.status_code == 504
    assert entries(tmp_path) == [], "a cancelled request keeps nothing"


async def test_a_request_cancelled_at_shutdown_keeps_no_file(tmp_path: Path) -> None:
    storage = LocalStorage("file", config=Config(destination=str(tmp_path)))
    started = asyncio.Event()
    transport = httpx.ASGITransport(app=slow_app(storage, started))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        request = asyncio.ensure_future(
            client.post("/upload", content=body("a.bin"), headers={"content-type": content_type()})
        )
        await asyncio.wait_for(started.wait(), 10)
        assert entries(tmp_path) == ["a.bin"]
        request.cancel()  # what a server's shutdown does to the tasks of open requests
        with pytest.raises(asyncio.CancelledError):
            await request
    assert entries(tmp_path) == []


@pytest.fixture(scope="module")
def idle_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    destination = tmp_path_factory.mktemp("idle") / "uploads"
    config = {"destination": str(destination), "chunk_size": 64 * 1024, "idle_timeout": 1.0}
    env = {"HARDENING_BACKEND": "local", "HARDENING_CONFIG": json.dumps(config)}
    with run_uvicorn("tests.hardening.apps.upload_app:app", env) as server:
        yield server.url, destination


def test_a_stalled_body_is_answered_408_and_leaves_nothing(idle_server: tuple[str, Path]) -> None:
    url, destination = idle_server
    opening = b"--" + BOUNDARY.encode() + b"\r\n" + file_part("file", "big.bin", b"\xab" * 300_000)
    head = request_head("/upload", {"Content-Type": content_type(), "Content-Length": str(10 * MiB)})
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5.0) as sock:
        sock.sendall(head + opening)
        started = time.monotonic()
        # ... and then the client sends nothing more, keeping the connection open.
        response = http.client.HTTPResponse(sock)
        response.begin()
        waited = time.monotonic() - started
        reply = response.read()
    assert response.status == 408
    assert response.getheader("connection") == "close"
    assert "idle_timeout=1" in json.loads(reply)["detail"][0]["msg"]
    assert waited < 4.0, f"answered after {waited:.1f} s"
    assert wait_until(lambda: entries(destination) == []), entries(destination)


def test_a_slow_but_steady_body_is_not_cut(idle_server: tuple[str, Path]) -> None:
    url, destination = idle_server
    data = body("steady.bin")

    def steady() -> Iterator[bytes]:
        for start in range(0, len(data), 50_000):
            time.sleep(0.4)  # under idle_timeout each time, 2 s in all
            yield data[start : start + 50_000]

    head = request_head("/upload", {"Content-Type": content_type(), "Content-Length": str(len(data))})
    reply = raw_exchange(url, head, steady(), timeout=10.0)
    assert reply.status == 200, reply.body
    assert [f["filename"] for f in reply.json()["files"]] == ["steady.bin"]
    (destination / "steady.bin").unlink()
