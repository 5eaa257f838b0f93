"""The storages of the seed's API: a form field (``Storage``) bound to one backend.

Each class is nothing but the two: everything about storing lives in the backend (see
``filestore_fastapi.backends``), everything about the request in ``Storage`` and the
session. A backend is usable without a form field or a request (``S3Backend(config)``).
"""

from __future__ import annotations

from .backends.azure import AzureBackend
from .backends.gcs import GCSBackend
from .backends.local import LocalBackend
from .backends.memory import MemoryBackend
from .backends.s3 import S3Backend
from .dependency import Storage


class LocalStorage(Storage, LocalBackend):
    """Files on the server's disk under ``config.destination``."""


class MemoryStorage(Storage, MemoryBackend):
    """Each file's bytes in ``FileData.file``, for the request only; nothing is kept."""


class S3Storage(Storage, S3Backend):
    """Objects in ``AWS_BUCKET_NAME`` (Amazon S3 or an S3-compatible store)."""


class GCSStorage(Storage, GCSBackend):
    """Objects in the Google Cloud Storage bucket ``GCP_BUCKET_NAME``."""


class AzureStorage(Storage, AzureBackend):
    """Block blobs in the Azure container ``AZURE_STORAGE_CONTAINER``."""
