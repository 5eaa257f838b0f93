"""The multipart reader: body bytes in, part events out, whatever the chunking."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from starlette.datastructures import FormData, Headers, UploadFile

from filestore_fastapi import FileData, MalformedRequest, MemoryStorage, UnsupportedMediaType
from filestore_fastapi.multipart import (
    Event,
    MultipartReader,
    PartData,
    PartEnd,
    PartStart,
    form_events,
    parse_boundary,
    read_events,
)

BOUNDARY = "----filestore-test-boundary-4f2a"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


@dataclass(frozen=True)
class Part:
    """One part of a test body; ``filename=None`` makes it a text field."""

    name: str
    data: bytes = b""
    filename: str | None = None
    content_type: str | None = None
    extra_headers: tuple[str, ...] = ()

    def head(self, boundary: str = BOUNDARY) -> bytes:
        """The delimiter and headers of this part, up to and including the blank line."""
        disposition = f'Content-Disposition: form-data; name="{self.name}"'
        if self.filename is not None:
            disposition += f'; filename="{self.filename}"'
        lines = [f"--{boundary}", disposition]
        if self.content_type is not None:
            lines.append(f"Content-Type: {self.content_type}")
        lines.extend(self.extra_headers)
        return ("\r\n".join(lines) + "\r\n\r\n").encode()


def file_part(name: str, filename: str, data: bytes, content_type: str = "application/octet-stream") -> Part:
    return Part(name, data, filename, content_type)


def encode(parts: Iterable[Part], boundary: str = BOUNDARY) -> bytes:
    """A complete multipart/form-data body."""
    body = b"".join(part.head(boundary) + part.data + b"\r\n" for part in parts)
    return body + f"--{boundary}--\r\n".encode()


def collect(events: Iterable[Event]) -> list[tuple[str, str | None, str | None, bytes]]:
    """(name, filename, content type, data) per part, checking the events are well nested."""
    parts: list[tuple[str, str | None, str | None, bytes]] = []
    current: PartStart | None = None
    data: list[bytes] = []
    for event in events:
        if isinstance(event, PartStart):
            assert current is None, "a part started before the previous one ended"
            current, data = event, []
        elif isinstance(event, PartData):
            assert current is not None, "data outside a part"
            data.append(bytes(event.data))
        else:
            assert current is not None, "a part ended that never started"
            parts.append((current.name, current.filename, current.content_type, b"".join(data)))
            current = None
    assert current is None, "the last part never ended"
    return parts


def feed_in_chunks(body: bytes, sizes: Iterable[int]) -> list[Event]:
    """Feed ``body`` split at the given sizes (cycled), keep the events, then close."""
    reader = MultipartReader(BOUNDARY.encode())
    events: list[Event] = []
    position = 0
    size_cycle = list(sizes)
    index = 0
    while position < len(body):
        size = size_cycle[index % len(size_cycle)]
        index += 1
        events += reader.feed(body[position : position + size])
        position += size
    reader.close()
    return events


# Data that looks like delimiters to a careless parser: CRLFs, dashes, a boundary prefix
# that stops one byte short, and the boundary without its leading CRLF.
TRICKY = (
    b"\r\n--"
    + BOUNDARY[:-1].encode()
    + b"X\r\n\r\n--\r\n-"
    + BOUNDARY.encode()
    + b"\r\r\n\n"
    + bytes(range(256))
)

PARTS = [
    Part("title", "Quarterly report \u00e9".encode()),
    file_part("document", "report.pdf", TRICKY * 20, "application/pdf"),
    file_part("document", "empty.bin", b""),
    Part("note", b""),
    file_part("image", "p\u00e9.png", random.Random(7).randbytes(5000), "image/png"),
]
EXPECTED = [
    ("title", None, None, "Quarterly report \u00e9".encode()),
    ("document", "report.pdf", "application/pdf", TRICKY * 20),
    ("document", "empty.bin", "application/octet-stream", b""),
    ("note", None, None, b""),
    ("image", "p\u00e9.png", "image/png", PARTS[4].data),
]


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 13, 64, 1000, 1 << 20])
def test_events_do_not_depend_on_chunk_size(chunk: int) -> None:
    assert collect(feed_in_chunks(encode(PARTS), [chunk])) == EXPECTED


@pytest.mark.parametrize("seed", range(20))
def test_events_do_not_depend_on_random_splits(seed: int) -> None:
    rng = random.Random(seed)
    sizes = [rng.randint(1, 97) for _ in range(50)]
    assert collect(feed_in_chunks(encode(PARTS), sizes)) == EXPECTED


def test_kept_data_views_stay_valid_after_later_chunks() -> None:
    """Writers buffer PartData views uncopied, so a view must never see bytes change."""
    reader = MultipartReader(BOUNDARY.encode())
    body = encode(PARTS)
    kept: list[memoryview] = []
    for position in range(len(body)):
        kept += [
            event.data for event in reader.feed(body[position : position + 1]) if isinstance(event, PartData)
        ]
    reader.close()
    assert b"".join(bytes(view) for view in kept) == b"".join(part[3] for part in EXPECTED)


async def test_read_events_streams_an_async_body() -> None:
    body = encode(PARTS)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 11):
            yield body[start : start + 11]

    events = [event async for event in read_events(chunks(), BOUNDARY.encode())]
    assert collect(events) == EXPECTED


async def test_read_events_yields_a_part_before_the_body_ends() -> None:
    """Streaming: a part's start arrives while the rest of the body is still unsent."""
    head = file_part("document", "a.txt", b"").head()
    sent: list[bytes] = []

    async def chunks() -> AsyncIterator[bytes]:
        for chunk in (head, b"abc", b"\r\n--" + BOUNDARY.encode() + b"--\r\n"):
            sent.append(chunk)
            yield chunk

    events = read_events(chunks(), BOUNDARY.encode())
    first = await anext(events)
    assert isinstance(first, PartStart) and first.filename == "a.txt"
    assert sent == [head]
    assert [type(e) for e in [e async for e in events]] == [PartData, PartEnd]


def test_part_headers_are_exposed() -> None:
    part = Part("f", b"x", "a.txt", "Text/Plain", extra_headers=("X-Custom: 1",))
    start = feed_in_chunks(encode([part]), [7])[0]
    assert isinstance(start, PartStart)
    assert start.content_type == "Text/Plain"
    assert ("x-custom", "1") in start.headers


def test_utf8_and_latin1_filenames_are_decoded() -> None:
    utf8 = Part("f", b"x", "\u00fcber \u6587\u4ef6.txt")
    latin1_head = (
        b"--"
        + BOUNDARY.encode()
        + b'\r\nContent-Disposition: form-data; name="f"; filename="\xfc.txt"\r\n\r\n'
    )
    body = (
        encode([utf8])[: -len(f"--{BOUNDARY}--\r\n")]
        + latin1_head
        + b"y\r\n"
        + f"--{BOUNDARY}--\r\n".encode()
    )
    names = [start.filename for start in feed_in_chunks(body, [3]) if isinstance(start, PartStart)]
    assert names == ["\u00fcber \u6587\u4ef6.txt", "\u00fc.txt"]


def test_epilogue_is_ignored() -> None:
    body = encode([Part("a", b"1")]) + b"epilogue, ignored\r\n--" + BOUNDARY.encode()
    assert collect(feed_in_chunks(body, [4])) == [("a", None, None, b"1")]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (f"multipart/form-data; boundary={BOUNDARY}", BOUNDARY.encode()),
        (f'multipart/form-data; boundary="{BOUNDARY}"', BOUNDARY.encode()),
        (f"Multipart/Form-Data; charset=utf-8; boundary={BOUNDARY}", BOUNDARY.encode()),
    ],
)
def test_parse_boundary(header: str, expected: bytes) -> None:
    assert parse_boundary(header) == expected


@pytest.mark.parametrize(
    "header", [None, "", "application/json", "text/plain; boundary=x", "multipart/mixed; boundary=x"]
)
def test_not_multipart_form_data_is_415(header: str | None) -> None:
    with pytest.raises(UnsupportedMediaType) as caught:
        parse_boundary(header)
    assert caught.value.status_code == 415
    assert "multipart/form-data" in caught.value.message


@pytest.mark.parametrize(
    "header",
    ["multipart/form-data", "multipart/form-data; boundary=", "multipart/form-data; boundary=" + "b" * 71],
)
def test_missing_or_bad_boundary_is_400(header: str) -> None:
    with pytest.raises(MalformedRequest) as caught:
        parse_boundary(header)
    assert caught.value.status_code == 400
    assert "boundary" in caught.value.message


def test_body_with_another_boundary_is_400() -> None:
    body = encode([Part("a", b"1")], boundary="some-other-boundary")
    with pytest.raises(MalformedRequest):
        feed_in_chunks(body, [16])


@pytest.mark.parametrize("cut", [10, 60, 120, -20, -4, -3])
def test_truncated_body_is_400(cut: int) -> None:
    body = encode([file_part("document", "a.bin", b"z" * 100)])
    with pytest.raises(MalformedRequest) as caught:
        feed_in_chunks(body[:cut], [9])
    assert caught.value.status_code == 400


def test_empty_body_is_400() -> None:
    with pytest.raises(MalformedRequest):
        MultipartReader(BOUNDARY.encode()).close()


@pytest.mark.parametrize(
    "head",
    [
        b"Content-Type: text/plain\r\n",  # no Content-Disposition at all
        b'Content-Disposition: attachment; name="a"\r\n',  # not form-data
        b'Content-Disposition: form-data; filename="a.txt"\r\n',  # no name
        b'Content-Disposition: form-data; name="a"\r\nContent-Disposition: form-data; name="b"\r\n',
        b'Content-Disposition: form-data; name="a"\r\nContent-Type: a/b\r\nContent-Type: c/d\r\n',
        b'Content-Disposition: form-data; name="a"\r\n' + b"X-Pad: 1\r\n" * 20,  # too many headers
        b'Content-Disposition: form-data; name="a"\r\nX-Long: ' + b"v" * 10_000 + b"\r\n",
    ],
)
def test_malformed_part_headers_are_400(head: bytes) -> None:
    body = b"--" + BOUNDARY.encode() + b"\r\n" + head + b"\r\nvalue\r\n--" + BOUNDARY.encode() + b"--\r\n"
    with pytest.raises(MalformedRequest) as caught:
        feed_in_chunks(body, [5])
    assert caught.value.status_code == 400


async def test_form_events_replay_a_parsed_form() -> None:
    """The fallback for routes where FastAPI parsed the body first gives the same events."""
    import io

    upload = UploadFile(
        io.BytesIO(TRICKY), filename="report.pdf", headers=Headers({"content-type": "application/pdf"})
    )
    form = FormData([("title", "Quarterly"), ("document", upload)])
    await upload.read()  # FastAPI may have read it already: replay starts from the beginning
    events = [event async for event in form_events(form, chunk_size=100)]
    assert collect(events) == [
        ("title", None, None, b"Quarterly"),
        ("document", "report.pdf", "application/pdf", TRICKY),
    ]
    assert max(len(e.data) for e in events if isinstance(e, PartData)) <= 100
    assert await upload.read() == TRICKY, "left at the start for the route's own File() parameter"


@pytest.mark.parametrize("chunk", [1, 5, 1 << 20])
def test_a_preamble_before_the_first_boundary_is_ignored(chunk: int) -> None:
    # RFC 2046 5.1.1: text before the first delimiter is to be ignored, like the epilogue.
    body = b"This is the preamble.\r\nIt says --" + BOUNDARY[:5].encode() + b"\r\n" + encode(PARTS)
    assert collect(feed_in_chunks(body, [chunk])) == EXPECTED


def test_an_endless_preamble_is_400() -> None:
    reader = MultipartReader(BOUNDARY.encode())
    with pytest.raises(MalformedRequest) as caught:
        for _ in range(100):
            reader.feed(b"no boundary here " * 1000)
    assert "no multipart boundary in the first" in caught.value.message


def disposition_body(disposition: bytes) -> bytes:
    head = b"--" + BOUNDARY.encode() + b"\r\nContent-Disposition: " + disposition + b"\r\n\r\n"
    return head + b"x\r\n--" + BOUNDARY.encode() + b"--\r\n"


@pytest.mark.parametrize(
    ("disposition", "expected"),
    [
        # urllib3 < 2 and old requests send non-ASCII names only this way.
        (b"form-data; name=\"f\"; filename*=utf-8''na%C3%AFve%20r%C3%A9sum%C3%A9.pdf", "naïve résumé.pdf"),
        # RFC 6266 4.3: when both are sent, filename* wins, in whichever order.
        (b'form-data; name="f"; filename="naive.pdf"; filename*=UTF-8\'\'na%C3%AFve.pdf', "naïve.pdf"),
        (b'form-data; name="f"; filename*=UTF-8\'en\'na%C3%AFve.pdf; filename="naive.pdf"', "naïve.pdf"),
        (b"form-data; name=\"f\"; filename*=iso-8859-1''%FC.txt", "ü.txt"),
        # An unknown charset or a broken value falls back to filename=.
        (b'form-data; name="f"; filename="plain.txt"; filename*=koi8-r\'\'%C1.txt', "plain.txt"),
        (b'form-data; name="f"; filename="plain.txt"; filename*=UTF-8\'\'%FF%FE.txt', "plain.txt"),
        # Inside a quoted value it is text, not a parameter.
        (b'form-data; name="f"; filename="a; filename*=UTF-8\'\'b.txt"', "a; filename*=UTF-8''b.txt"),
    ],
)
def test_rfc5987_filename_is_decoded(disposition: bytes, expected: str) -> None:
    [start] = [e for e in feed_in_chunks(disposition_body(disposition), [7]) if isinstance(e, PartStart)]
    assert start.filename == expected


def test_rfc5987_filename_reaches_original_filename() -> None:
    storage = MemoryStorage("f")
    app = FastAPI()

    @app.post("/upload")
    async def upload(files: list[FileData] = Depends(storage)) -> list[str]:  # noqa: B008
        return [f.original_filename for f in files]

    disposition = b'form-data; name="f"; filename="fallback.txt"; filename*=UTF-8\'\'%E2%82%AC%20rate.txt'
    reply = TestClient(app).post(
        "/upload", content=disposition_body(disposition), headers={"content-type": CONTENT_TYPE}
    )
    assert reply.status_code == 200, reply.text
    assert reply.json() == ["€ rate.txt"]
