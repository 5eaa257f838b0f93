"""(a) The limit: a bare ASGI app writing the raw request body to a file, no parsing.

Writes straight from the event loop (no thread hop) because nothing else is waiting;
``/limited`` answers 413 as soon as the body passes the limit, like a streaming parser
at its best could.
"""

from __future__ import annotations

import os
import uuid

from starlette.types import Message, Receive, Scope, Send

from .settings import DESTINATION, LIMIT


async def _respond(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    if scope["method"] != "POST":
        await _respond(send, 200, b"ok")
        return
    limit = LIMIT if scope["path"] == "/limited" else None
    DESTINATION.mkdir(parents=True, exist_ok=True)
    path = DESTINATION / f"raw-{uuid.uuid4().hex}.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    received, status = 0, 200
    try:
        message: Message = {"more_body": True}
        while message.get("more_body", False):
            message = await receive()
            if message["type"] == "http.disconnect":
                status = 499
                break
            body = message.get("body", b"")
            received += len(body)
            if limit is not None and received > limit:
                status = 413
                break
            _write_all(fd, body)
    finally:
        os.close(fd)
    if status != 200:
        path.unlink()
    await _respond(send, status, str(received).encode())
