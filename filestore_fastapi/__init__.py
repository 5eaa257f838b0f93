"""Streaming file uploads for FastAPI: a storage backend is a dependency.

Importing this package never imports a cloud SDK; each cloud backend loads its SDK on
first use and names the pip extra to install when it is missing.
"""

from .backends.base import (
    Backend,
    KeyTaken,
    NotFound,
    ObjectInfo,
    PresignedRequest,
    StorageUnavailable,
    StoredFile,
    Writer,
    WriterClosed,
    WriteRequest,
)
from .config import Config
from .dependency import FormModel, Storage, form_fields
from .errors import (
    MalformedRequest,
    PayloadTooLarge,
    RequestTimeout,
    StorageFailure,
    UnsupportedMediaType,
    UploadConflict,
    UploadError,
    ValidationFailed,
)
from .filedata import FileData
from .naming import sanitize_filename
from .openapi import add_upload_bodies, install_openapi
from .plain_starlette import exception_handlers, receive
from .policy import UploadContext
from .startup import verify_storages
from .storages import AzureStorage, GCSStorage, LocalStorage, MemoryStorage, S3Storage
from .tus import tus_router

__all__ = [
    "AzureStorage",
    "Backend",
    "Config",
    "FileData",
    "FormModel",
    "GCSStorage",
    "KeyTaken",
    "LocalStorage",
    "MalformedRequest",
    "MemoryStorage",
    "NotFound",
    "ObjectInfo",
    "PayloadTooLarge",
    "PresignedRequest",
    "RequestTimeout",
    "S3Storage",
    "Storage",
    "StorageFailure",
    "StorageUnavailable",
    "StoredFile",
    "UnsupportedMediaType",
    "UploadConflict",
    "UploadContext",
    "UploadError",
    "ValidationFailed",
    "WriteRequest",
    "Writer",
    "WriterClosed",
    "add_upload_bodies",
    "exception_handlers",
    "form_fields",
    "install_openapi",
    "receive",
    "sanitize_filename",
    "tus_router",
    "verify_storages",
]
