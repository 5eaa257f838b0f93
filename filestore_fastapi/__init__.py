"""Streaming file uploads for FastAPI: a storage backend is a dependency.

Importing this package never imports a cloud SDK; each cloud backend loads its SDK on
first use and names the pip extra to install when it is missing.
"""

from .backends.base import StoredFile, Writer, WriteRequest
from .backends.local import LocalStorage
from .backends.memory import MemoryStorage
from .config import Config
from .dependency import Storage, form_fields
from .errors import (
    MalformedRequest,
    PayloadTooLarge,
    StorageFailure,
    UnsupportedMediaType,
    UploadConflict,
    UploadError,
    ValidationFailed,
)
from .filedata import FileData
from .naming import sanitize_filename
from .policy import UploadContext

__all__ = [
    "Config",
    "FileData",
    "LocalStorage",
    "MalformedRequest",
    "MemoryStorage",
    "PayloadTooLarge",
    "PresignedRequest",
    "Storage",
    "StorageFailure",
    "StoredFile",
    "UnsupportedMediaType",
    "UploadConflict",
    "UploadContext",
    "UploadError",
    "ValidationFailed",
    "WriteRequest",
    "Writer",
    "form_fields",
    "sanitize_filename",
]
