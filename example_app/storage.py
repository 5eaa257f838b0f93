"""Which backend stores the example's documents, chosen by environment variables.

``FILESTORE_BACKEND`` is ``local`` (default), ``memory``, ``s3``, ``gcs`` or ``azure``.
A cloud backend is imported only when chosen, so the default needs no cloud SDK.

Common settings:
  ``FILESTORE_DESTINATION``    directory (local, default ``uploads/documents``) or key
                               prefix (others, default ``documents``)
  ``FILESTORE_MAX_FILE_SIZE``  bytes per file, default 50 MiB
  ``FILESTORE_TUS_LEASE``      seconds a crashed server can block a resumable upload it was
                               writing to, default 30
  ``FILESTORE_TUS_JS_DIST``    the folder of tus-js-client's ``tus.min.js``, default the one
                               ``make run`` installs from npm (``.tools/tus-js-client``)
Cloud settings are the backends' own environment variables (see their docstrings):
  s3     ``AWS_BUCKET_NAME``, ``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL`` for an emulator;
         credentials from boto3's usual chain
  gcs    ``GCP_BUCKET_NAME``, ``GCP_PROJECT``, ``STORAGE_EMULATOR_HOST`` for an emulator
  azure  ``AZURE_STORAGE_CONTAINER`` and ``AZURE_STORAGE_CONNECTION_STRING`` or
         ``AZURE_STORAGE_ACCOUNT_URL``
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filestore_fastapi import Config, LocalStorage, MemoryStorage, Storage

MiB = 1024 * 1024
BACKENDS = ("local", "memory", "s3", "gcs", "azure")
FIELD = "document"
MAX_FILES_PER_REQUEST = 5
LOCAL_BASE_URL = "/media/documents"
RESUMABLE_PREFIX = "/uploads/resumable"
#: Where ``make run`` and ``make test`` install tus-js-client from npm (git-ignored).
TUS_JS_DIST = Path(__file__).resolve().parents[1] / ".tools/tus-js-client/node_modules/tus-js-client/dist"

# Documents and pictures. No HTML or SVG: served from our own origin they could run script.
ALLOWED_EXTENSIONS = (
    ".pdf", ".txt", ".md", ".csv", ".json", ".png", ".jpg", ".jpeg", ".gif", ".webp",
    ".docx", ".xlsx", ".pptx", ".odt", ".ods", ".odp", ".zip",
)  # fmt: skip

#: Emulator endpoints; the cloud backends read their bucket and account variables themselves.
ENDPOINT_VARIABLES = {"s3": "AWS_ENDPOINT_URL", "gcs": "STORAGE_EMULATOR_HOST"}


@dataclass(frozen=True)
class Settings:
    backend: str
    destination: str
    max_file_size: int
    tus_lease_seconds: float = 30.0
    tus_js_dist: Path = TUS_JS_DIST

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        backend = env.get("FILESTORE_BACKEND", "local").strip().lower() or "local"
        if backend not in BACKENDS:
            raise ValueError(f"FILESTORE_BACKEND={backend!r}: choose one of {', '.join(BACKENDS)}")
        default_destination = "uploads/documents" if backend == "local" else "documents"
        return cls(
            backend=backend,
            destination=env.get("FILESTORE_DESTINATION") or default_destination,
            max_file_size=int(env.get("FILESTORE_MAX_FILE_SIZE") or 50 * MiB),
            tus_lease_seconds=float(env.get("FILESTORE_TUS_LEASE") or 30),
            tus_js_dist=Path(env.get("FILESTORE_TUS_JS_DIST") or TUS_JS_DIST),
        )

    @property
    def served_as_static_files(self) -> bool:
        """Local files are downloaded from ``base_url``; the others through the app."""
        return self.backend == "local"


def make_storage(settings: Settings, env: Mapping[str, str] = os.environ) -> Storage:
    """The documents storage for ``settings``; cloud SDKs are imported here, only if chosen."""
    keys: dict[str, Any] = {
        "destination": settings.destination,
        "max_file_size": settings.max_file_size,
        "min_file_size": 1,  # an empty file is almost always a mistake: answer 422
        "allowed_extensions": ALLOWED_EXTENSIONS,
    }
    if settings.backend == "local":
        keys["base_url"] = LOCAL_BASE_URL
    endpoint = env.get(ENDPOINT_VARIABLES.get(settings.backend, ""))
    if endpoint:
        keys["endpoint_url"] = endpoint
    config = Config(**keys)
    storage_class: type[Storage]
    if settings.backend == "local":
        storage_class = LocalStorage
    elif settings.backend == "memory":
        storage_class = MemoryStorage
    elif settings.backend == "s3":
        from filestore_fastapi import S3Storage

        storage_class = S3Storage
    elif settings.backend == "gcs":
        from filestore_fastapi import GCSStorage

        storage_class = GCSStorage
    else:
        from filestore_fastapi import AzureStorage

        storage_class = AzureStorage
    return storage_class(FIELD, count=MAX_FILES_PER_REQUEST, config=config)
