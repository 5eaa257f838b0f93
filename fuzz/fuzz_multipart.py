"""libFuzzer target (atheris): hostile bodies through the whole streaming upload path.

Each input is split into a boundary choice, chunk cut points and a body. The body goes
through a FastAPI app whose route depends on a ``MemoryStorage`` and ``form_fields``,
delivered by an in-process ASGI ``receive()`` in those chunks. Invariants checked:

* the answer is 200 or a 4xx the library raises, never a 500 or an escaped exception;
* a refused request never reaches the handler (a ``MemoryStorage`` keeps nothing, so no
  file of it can have escaped);
* an accepted request stored exactly what Starlette's own ``MultiPartParser`` reads from
  the same body, when Starlette accepts it too (same files, same text fields).

Run: see ``fuzz/README.md``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any

import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports():
    import python_multipart.multipart  # noqa: F401  (instrumented: the scanner is the hot path)

    from filestore_fastapi import Config, FileData, MemoryStorage, form_fields

from fastapi import Depends, FastAPI
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

BOUNDARIES = (b"b", b"fuzz-boundary", b"----WebKitFormBoundary7MA4YWxkTrZu0gW", b"--", b"a'b c")
ACCEPTED = {200, 400, 413, 415, 422}
Message = MutableMapping[str, Any]

storage = MemoryStorage(
    "file",
    count=3,
    required=False,
    config=Config(max_parts=64, max_fields=32, max_field_size=4096, max_file_size=1 << 16),
)
# A second field with content sniffing: held-back first bytes must not change what is stored.
images = MemoryStorage(
    "image",
    count=2,
    required=False,
    config=Config(
        verify_content=True, allowed_content_types=("image/png", "text/plain"), max_file_size=1 << 16
    ),
)
app = FastAPI()
observed: dict[str, Any] = {}


@app.post("/")
async def upload(
    files: Annotated[list[FileData], Depends(storage)],
    image_files: Annotated[list[FileData], Depends(images)],
    fields: Annotated[Any, Depends(form_fields)],
) -> dict[str, int]:
    observed["files"] = [(f.original_filename, f.file) for f in files]
    observed["images"] = [(f.original_filename, f.file) for f in image_files]
    observed["fields"] = list(fields.multi_items())
    return {"files": len(files), "fields": len(fields)}


async def call(body_chunks: list[bytes], content_type: bytes) -> int:
    """POST the chunks to ``app`` as a server would; returns the status code."""
    pending = list(body_chunks)
    status = 0
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"fuzz"), (b"content-type", content_type)],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }

    async def receive() -> Message:
        if pending:
            return {"type": "http.request", "body": pending.pop(0), "more_body": bool(pending)}
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def starlette_reads(body: bytes, content_type: bytes) -> tuple[list[Any], list[Any], list[Any]] | None:
    """What Starlette's own parser reads from ``body``, or None if it refuses it."""

    async def stream() -> Any:
        yield body

    parser = MultiPartParser(Headers(raw=[(b"content-type", content_type)]), stream())
    try:
        form = await parser.parse()
    except MultiPartException:
        return None
    fields: list[Any] = []
    files: list[Any] = []
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            if name in ("file", "image") and value.filename:
                files.append((name, value.filename, await value.read()))
            await value.close()
        else:
            fields.append((name, value))
    by_field = {name: [(f, data) for n, f, data in files if n == name] for name in ("file", "image")}
    return fields, by_field["file"], by_field["image"]


def cut(body: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({min(p, len(body)) for p in points} | {0, len(body)})
    return [body[a:b] for a, b in itertools.pairwise(edges)] or [b""]


def run(loop: asyncio.AbstractEventLoop, coroutine: Awaitable[Any]) -> Any:
    return loop.run_until_complete(coroutine)


def decode_input(data: bytes) -> tuple[bytes, list[int], bytes]:
    """Byte 0 picks the boundary, byte 1 the number of cuts, then 2 bytes per cut, then the body.

    A plain layout (no ``FuzzedDataProvider``) so seeds and crashes read as HTTP bodies.
    """
    if len(data) < 2:
        return BOUNDARIES[0], [], data
    boundary = BOUNDARIES[data[0] % len(BOUNDARIES)]
    count = data[1] % 8
    raw_points, body = data[2 : 2 + 2 * count], data[2 + 2 * count :]
    points = [int.from_bytes(raw_points[i : i + 2], "big") for i in range(0, len(raw_points) - 1, 2)]
    return boundary, points, body


def make_target(loop: asyncio.AbstractEventLoop) -> Callable[[bytes], None]:
    def test_one_input(data: bytes) -> None:
        boundary, points, body = decode_input(data)
        content_type = b'multipart/form-data; boundary="' + boundary + b'"'
        observed.clear()
        status = run(loop, call(cut(body, points), content_type))
        if status not in ACCEPTED:
            raise AssertionError(f"status {status} for body {body!r}")
        if status != 200:
            if observed:
                raise AssertionError(f"refused with {status} but the handler received {observed!r}")
            return
        reference = run(loop, starlette_reads(body, content_type))
        if reference is not None and (observed["fields"], observed["files"], observed["images"]) != reference:
            raise AssertionError(f"stored {observed!r}, Starlette read {reference!r} from {body!r}")

    return test_one_input


def main() -> None:
    # python-multipart logs every malformed byte it skips; the fuzzer sends millions.
    logging.getLogger("python_multipart").setLevel(logging.CRITICAL)
    logging.getLogger("filestore_fastapi").setLevel(logging.CRITICAL)
    loop = asyncio.new_event_loop()
    atheris.Setup(sys.argv, make_target(loop))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
