"""The checksum of a stored file: which algorithm (the ``checksum`` config key) and its value.

One place for the choice, so that every way a file arrives (a multipart body, a resumable
upload) hashes it the same way and reports it in the same ``FileData`` fields::

    hasher = new_hasher(config)          # None when config.checksum is None
    for chunk in chunks:
        hasher.update(chunk)             # releases the GIL for large chunks (not crc32c)
    FileData(..., **checksum_fields(hasher))

Values are lower-case hex: 64 digits for sha256, 40 for sha1, 32 for md5 and 8 for crc32c
(its 32-bit value, big-endian, as ``google_crc32c`` prints it).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

from .extras import require

if TYPE_CHECKING:
    from .config import Config

Data = bytes | bytearray | memoryview

ChecksumAlgorithm = Literal["sha256", "md5", "crc32c", "sha1"]
"""The algorithms the ``checksum`` config key takes (or ``None`` for no checksum)."""
ALGORITHMS: tuple[str, ...] = get_args(ChecksumAlgorithm)
DEFAULT: ChecksumAlgorithm = "sha256"
CRC32C_HINT = 'checksum="crc32c" needs google-crc32c: pip install "filestore-fastapi[gcp]"'


class Hasher(Protocol):
    """What ``new_hasher`` returns: ``hashlib``'s interface, with ``name`` the algorithm."""

    @property
    def name(self) -> str: ...

    def update(self, data: Data, /) -> None: ...

    def hexdigest(self) -> str: ...


class _Crc32c:
    """CRC32C (Castagnoli) behind the hashlib interface, from ``google_crc32c`` (C)."""

    __slots__ = ("_checksum",)
    name = "crc32c"

    def __init__(self, module: Any) -> None:
        self._checksum = module.Checksum()

    def update(self, data: Data, /) -> None:
        # The C extension takes ``bytes`` only, no memoryview: a view is copied (~0.1 s/GiB).
        self._checksum.update(data if isinstance(data, bytes) else bytes(data))

    def hexdigest(self) -> str:
        return str(self._checksum.digest().hex())


def require_algorithm(algorithm: str | None) -> None:
    """Raise now if ``algorithm`` is unknown or needs an extra that is not installed, so a
    config fails at start-up rather than on the first upload."""
    if algorithm is None:
        return
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown checksum {algorithm!r}; use one of {', '.join(ALGORITHMS)} or None")
    if algorithm == "crc32c":
        require("google_crc32c", CRC32C_HINT)


def new_hasher(config: Config | str | None) -> Hasher | None:
    """A fresh hasher for ``config.checksum`` (or an algorithm's name); None for no checksum."""
    algorithm = config if config is None or isinstance(config, str) else config.checksum
    if algorithm is None:
        return None
    if algorithm == "crc32c":
        return _Crc32c(require("google_crc32c", CRC32C_HINT))
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown checksum {algorithm!r}; use one of {', '.join(ALGORITHMS)} or None")
    # Not for security here (an integrity check), so FIPS builds allow md5 and sha1 too.
    return hashlib.new(algorithm, usedforsecurity=False)


def checksum_fields(hasher: Hasher | None) -> dict[str, str | None]:
    """The ``FileData`` fields for what ``hasher`` has seen: ``checksum_algorithm``,
    ``checksum`` and, with sha256, the ``sha256`` field too."""
    if hasher is None:
        return {"checksum_algorithm": None, "checksum": None, "sha256": None}
    value = hasher.hexdigest()
    return {
        "checksum_algorithm": hasher.name,
        "checksum": value,
        "sha256": value if hasher.name == "sha256" else None,
    }
