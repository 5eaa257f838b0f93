"""``Storage.download``: a stored object as an HTTP response, or 404 before any byte."""

from __future__ import annotations

import mimetypes
from pathlib import PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import quote

from starlette.exceptions import HTTPException
from starlette.responses import StreamingResponse

from .backends.base import NotFound

if TYPE_CHECKING:
    from .dependency import Storage

DEFAULT_CONTENT_TYPE = "application/octet-stream"


def attachment(filename: str) -> str:
    """A ``Content-Disposition`` that saves as ``filename``: an ASCII ``filename`` for old
    clients and, for any other name, RFC 6266's ``filename*`` in UTF-8."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename)
    if fallback == filename:
        return f'attachment; filename="{filename}"'
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


async def download_response(storage: Storage, key: str, filename: str | None) -> StreamingResponse:
    """Stream ``key`` with its type, length and name; 404 if it is not there."""
    try:
        info = await storage.stat(key)
    except NotFound:
        raise HTTPException(404, "file not found") from None
    name = filename or PurePosixPath(key).name
    content_type = info.content_type or mimetypes.guess_type(name)[0] or DEFAULT_CONTENT_TYPE
    headers = {"Content-Length": str(info.size), "Content-Disposition": attachment(name)}
    return StreamingResponse(storage.open(key), media_type=content_type, headers=headers)
