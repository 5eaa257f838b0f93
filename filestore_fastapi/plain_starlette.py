"""Uploads in a plain Starlette app: ``receive`` in the endpoint, ``exception_handlers`` on the app.

FastAPI resolves a storage as a dependency and answers its refusals itself. Starlette has
neither, so an endpoint asks for its files explicitly, and the handlers render refusals
with the body FastAPI would send, and remove a request's files when the endpoint raises
after receiving them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from .dependency import Storage
from .errors import UploadError
from .filedata import FileData
from .session import SESSION_KEY, UploadSession


async def receive(request: Request, *storages: Storage) -> dict[str, list[FileData]]:
    """Parse the body once, store every file of ``storages``' fields, all or nothing.

    Returns the files by field name. A refused body raises its ``UploadError`` (4xx) with
    nothing stored. Starlette cannot tell this function when the endpoint is done, so the
    files are final once it returns: with the app's ``exception_handlers``, an endpoint
    that raises afterwards has them deleted, but a file one of them replaced
    (``overwrite=True``) is not restored.
    """
    if not storages:
        raise TypeError("receive() needs at least one storage")
    existing = request.scope.get(SESSION_KEY)
    if isinstance(existing, UploadSession) and set(existing.storages.values()) != set(storages):
        raise RuntimeError("the body of this request was already received for other storages")
    session = UploadSession.of(request, storages)
    files = {storage.name: await session.files_for(storage) for storage in storages}
    session.hold()
    await session.finish()
    return files


async def _discard_files(request: Request) -> None:
    session = request.scope.get(SESSION_KEY)
    if isinstance(session, UploadSession):
        await session.delete_final()  # what receive() made final, while the session still lists it
        await session.discard()


async def _upload_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, UploadError)
    await _discard_files(request)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own answer, after removing the files the endpoint received."""
    assert isinstance(exc, HTTPException)
    await _discard_files(request)
    if exc.status_code in {204, 304}:
        return Response(status_code=exc.status_code, headers=exc.headers)
    return PlainTextResponse(exc.detail, status_code=exc.status_code, headers=exc.headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    await _discard_files(request)
    return PlainTextResponse("Internal Server Error", status_code=500)


exception_handlers: Mapping[Any, Any] = {
    UploadError: _upload_error,
    HTTPException: _http_exception,
    Exception: _server_error,
}
"""``Starlette(..., exception_handlers=exception_handlers)``: refusals as FastAPI renders
them, and no file kept by a request whose endpoint raised."""
