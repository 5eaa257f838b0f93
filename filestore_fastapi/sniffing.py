"""``verify_content``: judge a file by its first bytes, not by the type the client declares.

A client can call an executable ``photo.png`` and declare ``image/png``; the extension and
Content-Type checks cannot tell. The first bytes can: ``filetype`` (the optional extra
``sniff``, pure Python) knows the signatures of images, archives, executables, media and
documents. Bytes it does not recognise count as text when they decode as UTF-8 without
control characters, else as ``application/octet-stream``.
"""

from __future__ import annotations

import codecs
import re
from types import ModuleType
from typing import TYPE_CHECKING

from .backends.base import Chunk, StoredFile, Writer, WriteRequest
from .buffer import ChunkBuffer
from .errors import UnsupportedMediaType
from .extras import require
from .policy import content_type_allowed

if TYPE_CHECKING:
    from .dependency import Storage

SNIFF_BYTES = 8192  # the most filetype ever reads; most signatures sit in the first 262
INSTALL_HINT = 'Config(verify_content=True) needs filetype: pip install "filestore-fastapi[sniff]"'
UNKNOWN = "application/octet-stream"
TEXTUAL = frozenset({"application/json", "application/xml", "application/x-ndjson", "application/yaml"})
_BINARY_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def require_sniffer() -> ModuleType:
    """The ``filetype`` module, or an ImportError that names the extra to install."""
    return require("filetype", INSTALL_HINT)


def _looks_like_text(head: bytes, complete: bool) -> bool:
    if _BINARY_CONTROL.search(head):
        return False
    try:
        # A sample cut mid-character is still text: only a complete file must end cleanly.
        codecs.getincrementaldecoder("utf-8")().decode(head, final=complete)
    except UnicodeDecodeError:
        return False
    return True


def _is_textual(content_type: str) -> bool:
    return (
        content_type.startswith("text/")
        or content_type in TEXTUAL
        or content_type.endswith(("+json", "+xml"))
    )


def sniff_content_type(head: bytes, declared: str, *, complete: bool) -> str:
    """The type ``head`` (a file's first bytes; all of them if ``complete``) really has.

    Text has no signature, so for text the declared type stands if it is a textual one
    (``text/csv``, ``application/json``, ``image/svg+xml``), else it is ``text/plain``.
    An empty file has no type: ``application/octet-stream``.
    """
    kind = require_sniffer().guess(head) if head else None
    if kind is not None:
        return str(kind.mime)
    if head and _looks_like_text(head, complete):
        return declared if _is_textual(declared) else "text/plain"
    return UNKNOWN


class ContentCheckingWriter(Writer):
    """Holds a file's first ``SNIFF_BYTES`` until they show what the file is. A type outside
    ``allowed_content_types`` is refused with 415 before the backend is even asked for a
    writer, so a refused file leaves nothing at all; otherwise the held bytes go to the
    backend's writer and everything after them streams straight through."""

    def __init__(self, storage: Storage, target: WriteRequest) -> None:
        self._storage = storage
        self._target = target
        self._held = ChunkBuffer()
        self._inner: Writer | None = None

    async def write(self, chunk: Chunk) -> None:
        if self._inner is not None:
            await self._inner.write(chunk)
            return
        self._held.append(chunk)
        if self._held.size >= SNIFF_BYTES:
            await self._verify_and_open(complete=False)

    async def commit(self) -> StoredFile:
        if self._inner is None:
            await self._verify_and_open(complete=True)
        assert self._inner is not None
        return await self._inner.commit()

    async def abort(self) -> None:
        self._held.clear()
        if self._inner is not None:
            await self._inner.abort()

    async def revert(self) -> None:
        assert self._inner is not None, "revert() before commit()"
        await self._inner.revert()

    async def release(self) -> None:
        assert self._inner is not None, "release() before commit()"
        await self._inner.release()

    async def _verify_and_open(self, *, complete: bool) -> None:
        held = self._held.take()
        head = bytearray()
        for piece in held:
            head += memoryview(piece)[: SNIFF_BYTES - len(head)]
        allowed = self._storage.config.allowed_content_types or ()
        real = sniff_content_type(bytes(head), self._target.content_type, complete=complete)
        if not content_type_allowed(real, allowed):
            field = self._target.field_name
            raise UnsupportedMediaType(
                field, f"{field}: the content is {real}, which is not allowed (allowed: {', '.join(allowed)})"
            )
        self._inner = await self._storage.open_writer(self._target)
        for chunk in held:
            await self._inner.write(chunk)
