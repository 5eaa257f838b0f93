"""Config: every key a storage understands, with defaults, validated at construction."""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .checksums import ChecksumAlgorithm, require_algorithm

MiB = 1024 * 1024

#: A hook receives one ``UploadContext`` and may be sync or async.
Hook = Callable[..., Any]


class Config(BaseModel):
    """Settings of one storage. Unknown keys raise, so a typo never silently does nothing.

    Request-wide limits (``max_body_size``, ``max_fields``, ``max_field_size``,
    ``max_parts``, ``max_form_memory``, ``idle_timeout``) apply to the whole body; when
    several storages share a route the strictest value wins.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    # Where and how files are written.
    destination: str | Path | Hook = "."
    base_url: str | None = None
    overwrite: bool = False
    chunk_size: int = Field(default=MiB, gt=0)
    sanitize_filename: bool = True
    checksum: ChecksumAlgorithm | None = "sha256"
    """The checksum of every stored file (``FileData.checksum``): ``"sha256"``, ``"md5"``,
    ``"crc32c"`` (extra ``gcp``), ``"sha1"``, or None to hash nothing."""

    # Per-file validation.
    max_file_size: int | None = Field(default=None, ge=0)
    min_file_size: int | None = Field(default=None, ge=0)
    allowed_extensions: tuple[str, ...] | None = None
    allowed_content_types: tuple[str, ...] | None = None
    verify_content: bool = False
    """Also check the type the first bytes show against ``allowed_content_types`` (extra ``sniff``)."""

    # Request-wide limits.
    max_body_size: int | None = Field(default=None, ge=0)
    max_fields: int = Field(default=1000, ge=0)
    max_field_size: int = Field(default=MiB, ge=0)
    max_parts: int = Field(default=1000, ge=0)
    max_form_memory: int = Field(default=2 * MiB, ge=0)
    """Text held in memory per request, all fields together (names, values, and
    ``FIELD_OVERHEAD`` bytes a field for the objects that hold them)."""
    idle_timeout: float | None = Field(default=60.0, gt=0)
    """Seconds to wait for the next piece of the body before answering 408."""

    # Calls to the store: a pool of threads of this storage's own, and how long to wait.
    max_threads: int = Field(default=16, ge=1)
    connect_timeout: float = Field(default=10.0, gt=0)
    read_timeout: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=2, ge=0)
    """Retries of a failed store request (the SDK's own back-off), after the first attempt."""

    # Hooks: sync or async callables taking an ``UploadContext``.
    filename: Hook | None = None
    filters: Hook | Sequence[Hook] | None = None
    metadata: Hook | None = None
    progress: Hook | None = None
    """Called as ``progress(context, received)`` with a file's bytes so far, each time
    they pass a whole multiple of ``progress_interval`` bytes, and at its end (multipart and
    resumable uploads alike; never per chunk)."""
    progress_interval: int = Field(default=MiB, gt=0)

    # S3 (extra "s3").
    AWS_BUCKET_NAME: str | None = None
    AWS_DEFAULT_REGION: str | None = None
    endpoint_url: str | None = None
    extra_args: dict[str, Any] = Field(default_factory=dict)
    part_size: int = Field(default=8 * MiB, ge=5 * MiB)
    parts_in_flight: int = Field(default=10, ge=1)
    """S3 parts and Azure blocks of one file sent at once (in the storage's ``max_threads``);
    a file holds about ``(parts_in_flight + 1) x part_size`` in memory while it streams."""

    # Google Cloud Storage (extra "gcp").
    GCP_BUCKET_NAME: str | None = None
    GCP_PROJECT: str | None = None
    GCP_CREDENTIALS: Any = Field(default=None, repr=False)  # secrets stay out of logs

    # Azure Blob Storage (extra "azure").
    AZURE_STORAGE_CONTAINER: str | None = None
    AZURE_STORAGE_CONNECTION_STRING: str | None = Field(default=None, repr=False)
    AZURE_STORAGE_ACCOUNT_URL: str | None = None
    AZURE_STORAGE_CREDENTIAL: Any = Field(default=None, repr=False)

    def __init__(self, **keys: Any) -> None:
        unknown = [key for key in keys if key not in type(self).model_fields]
        if unknown:
            key = unknown[0]
            close = difflib.get_close_matches(key, type(self).model_fields, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TypeError(f"Config got an unknown key {key!r}{hint}")
        super().__init__(**keys)

    def check_applies_to(self, backend: str, storage_class: str) -> None:
        """Raise if a key set here belongs to other backends only: ``AWS_BUCKET_NAME`` on a
        LocalStorage is a mistake (a copied config, a wrong class), not a setting to ignore."""
        own = BACKEND_KEYS.get(backend)
        if own is None:
            return  # a backend of the application's own: it knows its keys
        for key in sorted(self.model_fields_set & _ALL_BACKEND_KEYS - own):
            owners = sorted(name for name, keys in BACKEND_KEYS.items() if key in keys)
            raise TypeError(
                f"{storage_class} does not use the config key {key!r} (a key of {', '.join(owners)})"
            )

    def setting(self, key: str) -> str | None:
        """A cloud key's value, else the environment variable of the same name."""
        value = getattr(self, key)
        return str(value) if value else os.environ.get(key)

    def required_setting(self, key: str, what: str) -> str:
        """``setting(key)``, or a ValueError saying ``what`` is missing and where to set it."""
        value = self.setting(key)
        if not value:
            raise ValueError(f"{what}: set the {key} config key or environment variable")
        return value

    @field_validator("allowed_extensions", mode="before")
    @classmethod
    def _normalise_extensions(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, str):
            value = [value]
        return tuple("." + str(ext).lower().lstrip(".") for ext in value)

    @field_validator("allowed_content_types", mode="before")
    @classmethod
    def _normalise_content_types(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, str):
            value = [value]
        return tuple(str(ctype).lower().strip() for ctype in value)

    @model_validator(mode="after")
    def _sniffer_available(self) -> Config:
        # At construction, so a missing extra fails at start-up rather than on the first upload.
        if self.verify_content:
            if self.allowed_content_types is None:
                raise ValueError("verify_content=True needs allowed_content_types to check against")
            from .sniffing import require_sniffer

            require_sniffer()
        require_algorithm(self.checksum)
        return self


_CLOUD_CALLS = frozenset({"max_threads", "connect_timeout", "read_timeout", "max_retries", "part_size"})
BACKEND_KEYS: dict[str, frozenset[str]] = {
    "local": frozenset(),
    "memory": frozenset(),
    "s3": _CLOUD_CALLS
    | {"AWS_BUCKET_NAME", "AWS_DEFAULT_REGION", "endpoint_url", "extra_args", "parts_in_flight"},
    "gcs": _CLOUD_CALLS | {"GCP_BUCKET_NAME", "GCP_PROJECT", "GCP_CREDENTIALS", "endpoint_url"},
    "azure": _CLOUD_CALLS
    | {
        "AZURE_STORAGE_CONTAINER",
        "AZURE_STORAGE_CONNECTION_STRING",
        "AZURE_STORAGE_ACCOUNT_URL",
        "AZURE_STORAGE_CREDENTIAL",
        "parts_in_flight",
    },
}
"""The keys only some backends use, by ``Storage.storage_name``; every other key applies to all."""
_ALL_BACKEND_KEYS = frozenset().union(*BACKEND_KEYS.values())
