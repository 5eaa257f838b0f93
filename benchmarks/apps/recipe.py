"""(e) The streaming recipe users copy by hand: ``request.stream()`` into
``streaming_form_data.StreamingFormDataParser`` (Cython) with a ``FileTarget`` per file.

This is the widely quoted answer to "how do I upload a large file to FastAPI without
``UploadFile`` spooling it": no temp file, each byte parsed once and written once,
synchronously from the event loop (``FileTarget`` writes through a plain file object).
No checksum, no name policy, no clean-up of a partial file: a recipe, not a library.
``/limited`` uses the package's ``MaxSizeValidator``.
"""

from __future__ import annotations

import uuid

from fastapi import FastAPI, HTTPException, Request
from streaming_form_data import StreamingFormDataParser
from streaming_form_data.targets import FileTarget
from streaming_form_data.validators import MaxSizeValidator, ValidationError

from .settings import DESTINATION, LIMIT

app = FastAPI()


async def _receive(request: Request, limit: int | None = None) -> dict[str, int]:
    DESTINATION.mkdir(parents=True, exist_ok=True)
    path = DESTINATION / f"recipe-{uuid.uuid4().hex}.bin"
    validator = MaxSizeValidator(limit) if limit is not None else None
    parser = StreamingFormDataParser(headers=request.headers)
    # One target per field: the ten files of ``/many`` (one field) go to one file, as the
    # recipe would write them.
    parser.register("file", FileTarget(str(path), validator=validator))
    try:
        async for chunk in request.stream():
            parser.data_received(chunk)
    except ValidationError:
        path.unlink(missing_ok=True)
        raise HTTPException(413, f"file exceeds {limit} bytes") from None
    return {"size": path.stat().st_size}


@app.post("/one")
async def one(request: Request) -> dict[str, int]:
    return await _receive(request)


@app.post("/many")
async def many(request: Request) -> dict[str, int]:
    return await _receive(request)


@app.post("/limited")
async def limited(request: Request) -> dict[str, int]:
    return await _receive(request, LIMIT)
