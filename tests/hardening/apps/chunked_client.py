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


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        label, _, value = line.partition(":")
        if label == key:
            return int(value.split()[0])
    raise KeyError(key)


def _body(size: int) -> bytes:
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    return form(file_part("file", "data.bin", data))


async def _post(app: Any, body: bytes, chunk: int) -> int:
    pieces: Iterator[bytes] = (body[i : i + chunk] for i in range(0, len(body), chunk))
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
    await _post(app, _body(64 * 1024), 64 * 1024)  # warm-up: imports, clients, first thread pool
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM starts again from VmRSS
    before = _status_kib("VmRSS")
    status = await _post(app, _body(size), chunk)
    return {"status": status, "growth": (_status_kib("VmHWM") - before) * 1024}


def main() -> None:
    storage_class, chunk, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    config = Config(**json.loads(os.environ.get("CHUNKED_CONFIG", "{}")))
    storage: Storage = getattr(filestore_fastapi, storage_class)("file", config=config)
    print(json.dumps(asyncio.run(_run(storage, chunk, size))))


if __name__ == "__main__":
    main()
