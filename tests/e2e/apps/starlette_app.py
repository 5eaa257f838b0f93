"""A plain Starlette app (no FastAPI) with two upload fields, for real uvicorn runs.

``UPLOAD_DIR`` is the destination; ``/upload`` takes documents and images, ``/fail``
receives them and then raises, ``GET /`` answers that the server is up.
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from filestore_fastapi import Config, LocalStorage, exception_handlers, receive

upload_dir = Path(os.environ["UPLOAD_DIR"])
documents = LocalStorage(
    "document", count=2, config=Config(destination=upload_dir / "documents", max_file_size=1024 * 1024)
)
images = LocalStorage("image", required=False, config=Config(destination=upload_dir / "images"))


async def upload(request: Request) -> JSONResponse:
    files = await receive(request, documents, images)
    return JSONResponse({field: [f.model_dump(mode="json") for f in got] for field, got in files.items()})


async def fail(request: Request) -> JSONResponse:
    await receive(request, documents, images)
    raise RuntimeError("the endpoint fails after receiving")


async def up(request: Request) -> PlainTextResponse:
    return PlainTextResponse("up")


app = Starlette(
    routes=[
        Route("/", up),
        Route("/upload", upload, methods=["POST"]),
        Route("/fail", fail, methods=["POST"]),
    ],
    exception_handlers=exception_handlers,
)
