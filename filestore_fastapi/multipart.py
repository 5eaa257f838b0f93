"""Turn a multipart/form-data byte stream into part events, holding no body in memory.

python-multipart's callback parser does the scanning; this module only collects its
callbacks into ``PartStart`` / ``PartData`` / ``PartEnd`` events and knows nothing of
storage.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.datastructures import FormData

from .errors import MalformedRequest, UnsupportedMediaType

MAX_BOUNDARY_LENGTH = 70  # RFC 2046 section 5.1.1
MAX_PART_HEADERS = 16
MAX_HEADER_LINE = 8 * 1024
_FORBIDDEN_IN_HEADER = re.compile(rb"[\r\n\x00]")


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


def parse_boundary(content_type: str | None) -> bytes:
    """The boundary of a multipart/form-data Content-Type, or the matching HTTP error."""
    media_type, options = parse_options_header(content_type or "")
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
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            raise MalformedRequest(None, f"malformed multipart body: {exc}") from None
        events, self._events = self._events, []
        return events

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
        filename = options.get(b"filename")
        content_types = [value for name, value in self._headers if name == "content-type"]
        if len(content_types) > 1:
            raise MalformedRequest(None, "a multipart part has more than one Content-Type header")
        self._events.append(
            PartStart(
                name=decode_header_value(options[b"name"]),
                filename=None if filename is None else decode_header_value(filename),
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
