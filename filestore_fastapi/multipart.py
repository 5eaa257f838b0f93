"""Turn a multipart/form-data byte stream into part events, holding no body in memory.

python-multipart's callback parser does the scanning; this module only collects its
callbacks into ``PartStart`` / ``PartData`` / ``PartEnd`` events and knows nothing of
storage.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.datastructures import FormData

from .errors import MalformedRequest, UnsupportedMediaType

MAX_BOUNDARY_LENGTH = 70  # RFC 2046 section 5.1.1
MAX_PART_HEADERS = 16
MAX_HEADER_LINE = 8 * 1024
MAX_PREAMBLE = 64 * 1024
_FORBIDDEN_IN_HEADER = re.compile(rb"[\r\n\x00]")
# One ``; name=value`` parameter, the value a quoted string (with escapes) or a token.
_PARAMETER = re.compile(rb';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')
_EXTENDED_VALUE = re.compile(rb"^([A-Za-z0-9!#$%&+^_`{}~-]+)'[^']*'(.*)$")


@dataclass(frozen=True)
class PartStart:
    """A part's headers are complete; ``filename`` is None for a text field."""

    name: str
    filename: str | None
    content_type: str | None
    headers: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class PartData:
    """A slice of the current part's body. Views immutable bytes, so it may be kept."""

    data: memoryview


@dataclass(frozen=True)
class PartEnd:
    """The current part is complete."""


Event = PartStart | PartData | PartEnd


def decode_header_value(raw: bytes) -> str:
    """Browsers send UTF-8; very old clients latin-1 (the same fallback Starlette uses)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def extended_parameter(header: bytes, name: bytes) -> str | None:
    """The RFC 5987/2231 ``name*=UTF-8''...`` parameter of a header, decoded; None if absent
    or in a charset other than UTF-8 or latin-1.

    RFC 7578 tells senders not to use it, but old requests and urllib3 versions send
    non-ASCII file names only this way, and RFC 6266 says it wins over ``name=``.
    """
    for match in _PARAMETER.finditer(header):
        if match.group(1).lower() != name + b"*":
            continue
        extended = _EXTENDED_VALUE.match(match.group(2).strip(b' \t"'))
        if extended is None:
            return None
        charset = extended.group(1).decode("ascii").lower()
        if charset not in ("utf-8", "iso-8859-1", "latin-1"):
            return None
        try:
            return unquote_to_bytes(extended.group(2)).decode(charset)
        except UnicodeDecodeError:
            return None
    return None


def plain_parameter(header: bytes, name: bytes) -> bytes | None:
    """The value of ``name=...`` in a header, unquoted as python-multipart does (only ``\\"``
    and ``\\\\`` are escapes: browsers send backslashes as they are); None if absent."""
    for match in _PARAMETER.finditer(header):
        if match.group(1).lower() == name:
            value = match.group(2).strip(b" \t")
            if len(value) >= 2 and value[:1] == value[-1:] == b'"':
                value = value[1:-1].replace(b"\\\\", b"\\").replace(b'\\"', b'"')
            if value[1:3] == b":\\" or value[:2] == b"\\\\":
                value = value.split(b"\\")[-1]  # old IE sends the full Windows path
            return value
    return None


def parse_boundary(content_type: str | None) -> bytes:
    """The boundary of a multipart/form-data Content-Type, or the matching HTTP error."""
    media_type, options = parse_options_header(content_type or "")
    media_type = media_type.lower()  # python-multipart < 0.0.30 keeps the case it was sent in
    if media_type != b"multipart/form-data":
        shown = media_type.decode("latin-1") or "none"
        raise UnsupportedMediaType(None, f"expected multipart/form-data, got {shown}")
    boundary = options.get(b"boundary", b"")
    if not boundary:
        raise MalformedRequest(None, "multipart/form-data without a boundary")
    if len(boundary) > MAX_BOUNDARY_LENGTH:
        raise MalformedRequest(None, f"multipart boundary longer than {MAX_BOUNDARY_LENGTH} characters")
    return boundary


class MultipartReader:
    """Feed it body chunks; get back the events those chunks completed."""

    def __init__(self, boundary: bytes) -> None:
        self._delimiter = b"--" + boundary
        self._preamble: bytearray | None = bytearray()  # until the first delimiter is seen
        self._events: list[Event] = []
        self._headers: list[tuple[str, bytes]] = []
        self._field = bytearray()
        self._value = bytearray()
        self._ended = False
        self._parser = MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_end": self._on_end,
            },
            max_header_count=MAX_PART_HEADERS,
            max_header_size=MAX_HEADER_LINE,
        )

    def feed(self, chunk: bytes) -> list[Event]:
        """Parse ``chunk``; returns the events it produced, in order."""
        if self._ended:
            return []  # an epilogue after the closing boundary is ignored (RFC 2046)
        if self._preamble is not None:
            chunk = self._skip_preamble(chunk)
            if not chunk:
                return []
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            raise MalformedRequest(None, f"malformed multipart body: {exc}") from None
        events, self._events = self._events, []
        return events

    def _skip_preamble(self, chunk: bytes) -> bytes:
        """What follows the preamble (RFC 2046 5.1.1: text before the first delimiter, to be
        ignored), or ``b""`` while the first delimiter has not arrived yet."""
        assert self._preamble is not None
        if not self._preamble and chunk.startswith((self._delimiter, b"\r\n" + self._delimiter)):
            self._preamble = None  # the usual case: no preamble, nothing copied
            return chunk
        self._preamble += chunk
        seen = self._preamble
        if seen.startswith(self._delimiter):
            start = 0
        elif len(seen) < len(self._delimiter) and self._delimiter.startswith(seen):
            return b""
        else:
            found = seen.find(b"\r\n" + self._delimiter)
            if found < 0:
                if len(seen) > MAX_PREAMBLE:
                    raise MalformedRequest(None, f"no multipart boundary in the first {MAX_PREAMBLE} bytes")
                return b""
            start = found + 2
        self._preamble = None
        return bytes(seen[start:])

    def close(self) -> None:
        """The body ended: it must have ended with the closing boundary."""
        if not self._ended:
            raise MalformedRequest(None, "multipart body ended before its closing boundary")

    def _on_part_begin(self) -> None:
        self._headers = []

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _on_header_end(self) -> None:
        name = bytes(self._field).decode("latin-1").strip().lower()
        value = bytes(self._value).strip(b" \t")
        if _FORBIDDEN_IN_HEADER.search(value):
            # RFC 9110 5.5 forbids them, browsers escape them, and parsers disagree on them.
            raise MalformedRequest(None, "a multipart part header contains CR, LF or NUL")
        self._headers.append((name, value))
        self._field.clear()
        self._value.clear()

    def _on_headers_finished(self) -> None:
        disposition = [value for name, value in self._headers if name == "content-disposition"]
        if len(disposition) != 1:
            problem = "no" if not disposition else "more than one"
            raise MalformedRequest(None, f"a multipart part has {problem} Content-Disposition header")
        # Raw bytes: parse_options_header round-trips them through latin-1, then we decode.
        kind, options = parse_options_header(disposition[0])
        if kind != b"form-data" or b"name" not in options:
            raise MalformedRequest(None, "a multipart part is not form-data with a name")
        # Read here, not from ``options``: python-multipart versions differ on ``filename*``.
        filename = extended_parameter(disposition[0], b"filename")
        if filename is None:
            plain = plain_parameter(disposition[0], b"filename")
            filename = None if plain is None else decode_header_value(plain)
        content_types = [value for name, value in self._headers if name == "content-type"]
        if len(content_types) > 1:
            raise MalformedRequest(None, "a multipart part has more than one Content-Type header")
        self._events.append(
            PartStart(
                name=decode_header_value(options[b"name"]),
                filename=filename,
                content_type=decode_header_value(content_types[0]) if content_types else None,
                headers=tuple((name, decode_header_value(value)) for name, value in self._headers),
            )
        )

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        self._events.append(PartData(memoryview(data)[start:end]))

    def _on_part_end(self) -> None:
        self._events.append(PartEnd())

    def _on_end(self) -> None:
        self._ended = True


async def read_events(chunks: AsyncIterator[bytes], boundary: bytes) -> AsyncGenerator[Event, None]:
    """Events of a whole multipart body, as the chunks arrive."""
    reader = MultipartReader(boundary)
    async for chunk in chunks:
        for event in reader.feed(chunk):
            yield event
    reader.close()


async def form_events(form: FormData, chunk_size: int) -> AsyncGenerator[Event, None]:
    """The same events from a form FastAPI has already parsed (slower: it was spooled)."""
    for name, value in form.multi_items():
        if isinstance(value, str):
            yield PartStart(name=name, filename=None, content_type=None, headers=())
            yield PartData(memoryview(value.encode()))
        else:
            yield PartStart(
                name=name,
                filename=value.filename,
                content_type=value.content_type,
                headers=tuple(value.headers.items()),
            )
            await value.seek(0)
            try:
                while chunk := await value.read(chunk_size):
                    yield PartData(memoryview(chunk))
            finally:
                await value.seek(0)  # the route's own File() parameter may read it next
        yield PartEnd()
