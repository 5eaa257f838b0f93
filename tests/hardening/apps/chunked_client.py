"""Upload one file into a storage in-process, the body cut into chunks of a chosen size, and
print the status and how much the peak RSS grew, as JSON.

Run in a subprocess of its own (``python -m tests.hardening.apps.chunked_client LocalStorage 7
3145728``), so that the peak belongs to this upload alone. ``CHUNKED_CONFIG`` holds the
storage's ``Config`` keys as JSON. The chunks are what a server hands over when a client
sends that many bytes per TCP segment.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import filestore_fastapi
from filestore_fastapi import Config, Storage
from tests.asgi import post_scope
from tests.hardening.routes import upload_app
from tests.hardening.support import BOUNDARY, content_type, file_part, form


def vm_kib(key: str) -> int:
    """``VmRSS``, ``VmHWM``, ... of this process, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        label, _, value = line.partition(":")
        if label == key:
            return int(value.split()[0])
    raise KeyError(key)


def body_pieces(size: int, chunk: int) -> Iterator[bytes]:
    """A one-file body of ``size`` bytes in ``chunk``-byte messages, each a new ``bytes`` (as
    a server reads them), made as it is sent: the body costs only what the app keeps of it."""
    marker = b"\0MARKER\0"
    head, tail = form(file_part("file", "data.bin", marker)).split(marker)
    block = bytes(range(256)) * (max(chunk, 256) // 256 + 1)
    yield from (head[i : i + chunk] for i in range(0, len(head), chunk))
    sent = 0
    while sent < size:
        piece = bytes(memoryview(block)[: min(chunk, size - sent)])
        sent += len(piece)
        yield piece
    yield from (tail[i : i + chunk] for i in range(0, len(tail), chunk))


async def post_in_chunks(app: Any, size: int, chunk: int) -> int:
    """POST a ``size``-byte file to ``app`` in-process, ``chunk`` bytes a message; the status."""
    pieces = body_pieces(size, chunk)
    headers = [(b"host", b"test"), (b"content-type", content_type(BOUNDARY).encode())]
    status = 0
    pending = next(pieces, b"")

    async def receive() -> dict[str, Any]:
        nonlocal pending
        current = pending
        pending = next(pieces, b"")
        return {"type": "http.request", "body": current, "more_body": bool(pending)}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(post_scope("/upload", headers), receive, send)
    return status


async def _run(storage: Storage, chunk: int, size: int) -> dict[str, int]:
    app = upload_app(storage)
    await post_in_chunks(app, 64 * 1024, 64 * 1024)  # warm-up: imports, clients, first thread pool
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM starts again from VmRSS
    before = vm_kib("VmRSS")
    status = await post_in_chunks(app, size, chunk)
    return {"status": status, "growth": (vm_kib("VmHWM") - before) * 1024}


def main() -> None:
    storage_class, chunk, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    config = Config(**json.loads(os.environ.get("CHUNKED_CONFIG", "{}")))
    storage: Storage = getattr(filestore_fastapi, storage_class)("file", config=config)
    print(json.dumps(asyncio.run(_run(storage, chunk, size))))


if __name__ == "__main__":
    main()
