"""``tus_router``: the tus 1.0.0 resumable upload protocol for one storage, as an APIRouter.

Core (HEAD, PATCH, OPTIONS) and the extensions creation, creation-with-upload,
creation-defer-length, termination, checksum (sha1, md5, sha256), expiration and
concatenation. The state lives in the store (``resumable.py``), so any instance of the app
answers any request of an upload. After completion, ``GET`` on the upload's URL answers
its ``FileData`` as JSON.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import inspect
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, params
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .errors import (
    MalformedRequest,
    PayloadTooLarge,
    StorageFailure,
    UnsupportedMediaType,
    UploadError,
    UploadNotFound,
)
from .policy import check_size
from .resumable import UPLOAD_ID, OnComplete, ResumableUploads, Upload, logger

if TYPE_CHECKING:
    from .dependency import Storage

TUS_VERSION = "1.0.0"
EXTENSIONS = (
    "creation",
    "creation-with-upload",
    "creation-defer-length",
    "termination",
    "checksum",
    "expiration",
    "concatenation",
)
CHECKSUMS: dict[str, Callable[[], Any]] = {"sha1": hashlib.sha1, "md5": hashlib.md5, "sha256": hashlib.sha256}
CHUNK_TYPE = "application/offset+octet-stream"
MAX_METADATA = 64 * 1024
"""Bytes of ``Upload-Metadata`` accepted (below ``max_form_memory`` if that is lower)."""

Owner = Callable[[Request], str | Awaitable[str | None] | None]


class PreconditionFailed(UploadError):
    """The client speaks a tus version this server does not (``Tus-Resumable``)."""

    status_code = 412
    error_type = "unsupported_version"


def tus_router(
    storage: Storage,
    *,
    prefix: str,
    on_complete: OnComplete | None = None,
    dependencies: Sequence[params.Depends] = (),
    expires_after: timedelta = timedelta(days=1),
    owner: Owner | None = None,
    lease: timedelta = timedelta(seconds=30),
    tags: Sequence[str] = ("uploads",),
) -> APIRouter:
    """Routes for resumable uploads into ``storage`` under ``prefix``.

    ``on_complete(file)`` (sync or async) runs once per completed upload, before it is
    final: if it raises, the file is removed and the client gets a 500. ``dependencies``
    run on every tus request (authentication). ``owner(request)`` names the caller: an
    upload belongs to whoever created it, and is a 404 for anyone else. ``expires_after``
    counts from creation (``Upload-Expires``); ``storage.cleanup()`` removes expired uploads.
    ``lease`` is how long a crashed instance can block an upload it was writing to.
    """
    uploads = ResumableUploads(storage, expires_after=expires_after, lease=lease, on_complete=on_complete)
    router = APIRouter(prefix=prefix, dependencies=list(dependencies), tags=list(tags))
    handler = _TusHandler(uploads, owner)
    router.add_api_route("", handler.options, methods=["OPTIONS"], summary="tus: what the server supports")
    router.add_api_route(
        "", handler.create, methods=["POST"], summary="tus: create an upload", status_code=201
    )
    router.add_api_route("/{upload_id}", handler.head, methods=["HEAD"], summary="tus: the upload's offset")
    router.add_api_route("/{upload_id}", handler.patch, methods=["PATCH"], summary="tus: append bytes")
    router.add_api_route("/{upload_id}", handler.delete, methods=["DELETE"], summary="tus: terminate")
    router.add_api_route("/{upload_id}", handler.override, methods=["POST"], include_in_schema=False)
    router.add_api_route(
        "/{upload_id}", handler.result, methods=["GET"], summary="The completed upload's FileData"
    )
    return router


class _TusHandler:
    def __init__(self, uploads: ResumableUploads, owner: Owner | None) -> None:
        self.uploads = uploads
        self.config = uploads.storage.config
        self._owner = owner

    # -- endpoints -------------------------------------------------------------------------

    async def options(self, request: Request) -> Response:
        headers = {
            "Tus-Resumable": TUS_VERSION,
            "Tus-Version": TUS_VERSION,
            "Tus-Extension": ",".join(EXTENSIONS),
            "Tus-Checksum-Algorithm": ",".join(CHECKSUMS),
        }
        if self.config.max_file_size is not None:
            headers["Tus-Max-Size"] = str(self.config.max_file_size)
        return Response(status_code=204, headers=headers)

    async def create(self, request: Request) -> Response:
        try:
            self._check_version(request)
            owner = await self._caller(request)
            headers = request.headers
            raw_metadata = headers.get("upload-metadata", "")
            metadata = self._parse_metadata(raw_metadata)
            concat, parts = self._parse_concat(headers.get("upload-concat"))
            partials = await self.uploads.check_partials(parts, owner) if concat == "final" else []
            length = sum(p.offset for p in partials) if concat == "final" else self._parse_length(headers)
            info = await self.uploads.create(
                request,
                length=length,
                metadata=metadata,
                raw_metadata=raw_metadata,
                concat=concat,
                parts=parts,
                owner=owner,
            )
            location = f"{request.url.path.rstrip('/')}/{info.id}"
            reply = {"Location": location, "Upload-Expires": _http_date(info.expires)}
            if concat == "final":
                upload, _ = await self.uploads.concatenate(info, partials, request, owner)
                return self._answer(201, upload, reply)
            # An empty upload is complete now: clients send no PATCH for it (tus-js-client).
            if length == 0 or _carries_bytes(headers):
                upload, _ = await self.uploads.append(info.id, request, offset=0, owner=owner)
                return self._answer(201, upload, reply)
            return Response(status_code=201, headers={**reply, "Tus-Resumable": TUS_VERSION})
        except Exception as exc:
            return self._failure(exc)

    async def head(self, upload_id: str, request: Request) -> Response:
        try:
            self._check_version(request)
            upload = await self.uploads.load(upload_id, await self._caller(request))
            headers = {"Cache-Control": "no-store", "Upload-Offset": str(upload.offset)}
            if upload.length is None:
                headers["Upload-Defer-Length"] = "1"
            else:
                headers["Upload-Length"] = str(upload.length)
            info = upload.info
            if info.raw_metadata:
                headers["Upload-Metadata"] = info.raw_metadata
            if info.concat == "partial":
                headers["Upload-Concat"] = "partial"
            elif info.concat == "final":
                base = request.url.path.rsplit("/", 1)[0]
                headers["Upload-Concat"] = "final;" + " ".join(f"{base}/{part}" for part in info.parts)
            if not upload.complete:
                headers["Upload-Expires"] = _http_date(info.expires)
            return Response(status_code=200, headers={**headers, "Tus-Resumable": TUS_VERSION})
        except Exception as exc:
            return self._failure(exc, body=False)

    async def patch(self, upload_id: str, request: Request) -> Response:
        try:
            self._check_version(request)
            headers = request.headers
            if not _carries_bytes(headers):
                raise UnsupportedMediaType(None, f"a PATCH's Content-Type must be {CHUNK_TYPE}")
            offset = _header_int(headers, "upload-offset", required=True)
            assert offset is not None
            length = _header_int(headers, "upload-length")
            declared = _header_int(headers, "content-length")
            if declared is not None:  # refused from Content-Length, before reading a byte
                check_size(self.config, self.uploads.storage.name, offset + declared)
            upload, _ = await self.uploads.append(
                upload_id,
                request,
                offset=offset,
                owner=await self._caller(request),
                length=length,
                checksum=self._parse_checksum(headers.get("upload-checksum")),
            )
            return self._answer(204, upload)
        except Exception as exc:
            return self._failure(exc)

    async def delete(self, upload_id: str, request: Request) -> Response:
        try:
            self._check_version(request)
            await self.uploads.terminate(upload_id, await self._caller(request))
            return Response(status_code=204, headers={"Tus-Resumable": TUS_VERSION})
        except Exception as exc:
            return self._failure(exc)

    async def override(self, upload_id: str, request: Request) -> Response:
        """tus core: ``X-HTTP-Method-Override`` is the request's method, for clients behind
        proxies that refuse PATCH or DELETE (tus-js-client's ``overridePatchMethod``)."""
        method = request.headers.get("x-http-method-override", "").strip().upper()
        methods = {"PATCH": self.patch, "DELETE": self.delete, "HEAD": self.head, "GET": self.result}
        if method not in methods:
            headers = {"Allow": "GET, HEAD, PATCH, DELETE", "Tus-Resumable": TUS_VERSION}
            return JSONResponse({"detail": "Method Not Allowed"}, status_code=405, headers=headers)
        return await methods[method](upload_id, request)

    async def result(self, upload_id: str, request: Request) -> Response:
        """The completed upload's ``FileData`` as JSON (404 before completion)."""
        try:
            upload = await self.uploads.load(upload_id, await self._caller(request))
            if upload.done is None or upload.info.concat == "partial":
                raise UploadNotFound(None, f"the upload is not complete: {upload.offset} bytes so far")
            return JSONResponse(upload.done, headers={"Cache-Control": "no-store"})
        except Exception as exc:
            return self._failure(exc)

    # -- headers ---------------------------------------------------------------------------

    async def _caller(self, request: Request) -> str | None:
        if self._owner is None:
            return None
        caller = self._owner(request)
        if inspect.isawaitable(caller):
            caller = await caller
        return caller

    @staticmethod
    def _check_version(request: Request) -> None:
        version = request.headers.get("tus-resumable")
        if version != TUS_VERSION:
            raise PreconditionFailed(None, f"Tus-Resumable must be {TUS_VERSION}, got {version!r}")

    def _parse_length(self, headers: Any) -> int | None:
        length = _header_int(headers, "upload-length")
        defer = headers.get("upload-defer-length")
        if length is not None and defer is not None:
            raise MalformedRequest(None, "Upload-Length and Upload-Defer-Length are exclusive")
        if length is None:
            if defer != "1":
                raise MalformedRequest(None, "Upload-Length or Upload-Defer-Length: 1 is required")
            return None
        return length

    def _parse_metadata(self, raw: str) -> dict[str, str]:
        """``key base64,key base64``: keys unique, values strict base64 of UTF-8."""
        limit = min(MAX_METADATA, self.config.max_form_memory)
        if len(raw) > limit:
            raise PayloadTooLarge(None, f"Upload-Metadata exceeds {limit} bytes")
        metadata: dict[str, str] = {}
        for pair in filter(None, (item.strip() for item in raw.split(","))):
            key, _, encoded = pair.partition(" ")
            if not key or " " in encoded.strip() or key in metadata:
                raise MalformedRequest(None, f"Upload-Metadata has an invalid pair {key!r}")
            try:
                metadata[key] = base64.b64decode(encoded.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise MalformedRequest(
                    None, f"Upload-Metadata value of {key!r} is not base64 of UTF-8"
                ) from None
        return metadata

    @staticmethod
    def _parse_concat(header: str | None) -> tuple[str | None, tuple[str, ...]]:
        if header is None:
            return None, ()
        if header == "partial":
            return "partial", ()
        kind, _, urls = header.partition(";")
        if kind != "final" or not urls.strip():
            raise MalformedRequest(None, "Upload-Concat must be 'partial' or 'final;<upload URLs>'")
        parts = tuple(url.rstrip("/").rsplit("/", 1)[-1] for url in urls.split())
        if not all(UPLOAD_ID.fullmatch(part) for part in parts):
            raise MalformedRequest(None, "Upload-Concat names an upload that is not one of this server's")
        return "final", parts

    @staticmethod
    def _parse_checksum(header: str | None) -> tuple[Callable[[], Any], bytes] | None:
        if header is None:
            return None
        algorithm, _, encoded = header.strip().partition(" ")
        factory = CHECKSUMS.get(algorithm.lower())
        if factory is None:
            raise MalformedRequest(None, f"Upload-Checksum algorithm {algorithm!r} is not supported")
        try:
            return factory, base64.b64decode(encoded.strip(), validate=True)
        except binascii.Error:
            raise MalformedRequest(None, "Upload-Checksum is not base64") from None

    # -- answers ---------------------------------------------------------------------------

    def _answer(self, status: int, upload: Upload, headers: dict[str, str] | None = None) -> Response:
        reply = {**(headers or {}), "Tus-Resumable": TUS_VERSION, "Upload-Offset": str(upload.offset)}
        if not upload.complete:
            reply["Upload-Expires"] = _http_date(upload.info.expires)
        return Response(status_code=status, headers=reply)

    def _failure(self, exc: Exception, *, body: bool = True) -> Response:
        if not isinstance(exc, UploadError):
            logger.exception("resumable upload failed")
            exc = StorageFailure(self.uploads.storage.name, "the upload could not be stored")
        headers = {**(exc.headers or {}), "Tus-Resumable": TUS_VERSION}
        if isinstance(exc, PreconditionFailed):
            headers["Tus-Version"] = TUS_VERSION
        if isinstance(exc, PayloadTooLarge):
            headers["Connection"] = "close"  # the rest of the body is not read
            if self.config.max_file_size is not None:
                headers["Tus-Max-Size"] = str(self.config.max_file_size)
        if not body:
            return Response(status_code=exc.status_code, headers=headers)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


def _carries_bytes(headers: Any) -> bool:
    """Whether the request's body is upload bytes (``application/offset+octet-stream``)."""
    return bool(headers.get("content-type", "").split(";")[0].strip() == CHUNK_TYPE)


def _header_int(headers: Any, name: str, *, required: bool = False) -> int | None:
    value = headers.get(name)
    if value is None:
        if required:
            raise MalformedRequest(None, f"the {name.title()} header is required")
        return None
    if not value.isdigit() or len(value) > 20:
        raise MalformedRequest(None, f"{name.title()} must be a non-negative integer, got {value!r}")
    return int(value)


def _http_date(timestamp: float) -> str:
    return formatdate(timestamp, usegmt=True)
