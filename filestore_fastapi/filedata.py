"""FileData: what the route handler receives for each stored file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class FileData(BaseModel):
    """One stored file. A route may return it (or a list of them) as JSON directly: ``path``
    and ``file`` are left out of the JSON, so no server path or file content leaks."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    field_name: str
    filename: str = Field(description="Stored name, relative to the destination (or the key for clouds).")
    original_filename: str | None = Field(description="The name the client sent, unmodified.")
    content_type: str
    size: int
    sha256: str | None = Field(
        default=None, description="Hex SHA-256 of the bytes stored, when ``checksum_algorithm`` is sha256."
    )
    checksum_algorithm: str | None = Field(
        default=None, description='The ``checksum`` config key: "sha256", "md5", "crc32c", "sha1", or None.'
    )
    checksum: str | None = Field(
        default=None, description="Hex checksum of the bytes stored, by ``checksum_algorithm``."
    )
    path: Path | None = Field(
        default=None,
        exclude=True,  # a server path is nobody's business but the server's: not in the JSON
        description="Absolute path, LocalStorage only. Left out when the model is serialised.",
    )
    url: str | None = None
    file: bytes | None = Field(default=None, exclude=True, repr=False, description="MemoryStorage only.")
    storage: str
    metadata: dict[str, Any] = Field(default_factory=dict)
