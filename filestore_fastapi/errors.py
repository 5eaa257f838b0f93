"""Upload errors, each mapped to its HTTP status once, here.

They subclass Starlette's ``HTTPException`` so FastAPI answers them with its usual
``{"detail": [...]}`` body and no exception handler needs installing.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio
from starlette.exceptions import HTTPException

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup


class _Detail(list[dict[str, Any]]):
    """FastAPI renders an exception's detail as JSON, Starlette's own handler as text. As
    text, this list renders as FastAPI's JSON body, so in an app without our exception
    handlers a refusal keeps its status and its body rather than becoming a 500."""

    def encode(self, encoding: str = "utf-8") -> bytes:
        return json.dumps({"detail": self}).encode(encoding)


class UploadError(HTTPException):
    """A request the library refuses; ``detail`` has FastAPI's validation-error shape."""

    status_code = 400
    error_type = "upload_error"

    def __init__(self, field: str | None, message: str) -> None:
        loc = ["body", field] if field else ["body"]
        detail = _Detail([{"loc": loc, "msg": message, "type": self.error_type}])
        # A detail given, so Starlette never looks up a phrase (older ones fail for tus's 460).
        super().__init__(status_code=self.status_code, detail=message)
        self.detail: Any = detail  # FastAPI renders any JSON-able detail; Starlette types it as str
        self.field = field
        self.message = message

    def __str__(self) -> str:
        return f"{self.status_code}: {self.message}"


class MalformedRequest(UploadError):
    """The body is not parseable multipart (bad boundary, truncated, invalid headers)."""

    status_code = 400
    error_type = "malformed_multipart"


class PayloadTooLarge(UploadError):
    """A size or count limit of the request or of one file was crossed."""

    status_code = 413
    error_type = "too_large"


class RequestTimeout(UploadError):
    """The client stopped sending the body for longer than ``idle_timeout``."""

    status_code = 408
    error_type = "timeout"


class UnsupportedMediaType(UploadError):
    """The request is not multipart, or a file's extension or content type is not allowed."""

    status_code = 415
    error_type = "unsupported_media_type"


class ValidationFailed(UploadError):
    """A field breaks a rule: missing, over its count, too small, refused by a filter."""

    status_code = 422
    error_type = "value_error"


class UploadConflict(UploadError):
    """The target name exists and the backend does not overwrite nor rename."""

    status_code = 409
    error_type = "conflict"


class StorageFailure(UploadError):
    """The backend failed. The message is generic on purpose: backend errors can carry
    credentials, bucket names or paths that must not reach the client."""

    status_code = 500
    error_type = "storage_error"

    def __init__(self, field: str | None, message: str = "the file could not be stored") -> None:
        super().__init__(field, message)


class UploadNotFound(UploadError):
    """No resumable upload under this id (or not one of the caller's)."""

    status_code = 404
    error_type = "not_found"


class UploadGone(UploadError):
    """The resumable upload expired before it was completed."""

    status_code = 410
    error_type = "expired"


class UploadForbidden(UploadError):
    """The request is not allowed on this upload (a PATCH to a concatenated upload)."""

    status_code = 403
    error_type = "forbidden"


class OffsetMismatch(UploadError):
    """A PATCH's ``Upload-Offset`` is not where the upload's bytes end."""

    status_code = 409
    error_type = "offset_mismatch"


class UploadLocked(UploadError):
    """Another request is writing to this upload (on this instance or another one)."""

    status_code = 423
    error_type = "locked"


class ChecksumMismatch(UploadError):
    """The bytes of a PATCH do not match its ``Upload-Checksum``; they were discarded."""

    status_code = 460
    error_type = "checksum_mismatch"


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error that stopped a task group; the others are the cancellations it caused."""
    errors = list(group.exceptions)
    for error in errors:
        if isinstance(error, BaseExceptionGroup):
            return first_error(error)
        if not isinstance(error, anyio.get_cancelled_exc_class()):
            return error
    return errors[0]
