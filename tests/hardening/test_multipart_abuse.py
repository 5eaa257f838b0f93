"""Item 2: malformed and abusive multipart bodies against a real uvicorn.

Every case ends with its status, nothing stored (no file, no temp file, handler not
called), the server's peak RSS less than 64 MiB above where it started, and the next,
valid request served. Cases httpx cannot produce (lying Content-Length, raw chunked
framing) go over a raw socket.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.server import Server, run_uvicorn
from tests.httpclient import httpx

from .support import BOUNDARY, Reply, content_type, file_part, form, raw_exchange, request_head, text_part

MiB = 1024 * 1024
RSS_BUDGET = 64 * MiB
MAX_FILE_SIZE = 4 * MiB


@dataclass
class Target:
    server: Server
    destination: Path

    def stored(self) -> list[str]:
        return sorted(p.name for p in self.destination.iterdir()) if self.destination.exists() else []

    def calls(self) -> int:
        count: int = httpx.get(self.server.url + "/calls").json()
        return count


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    destination = tmp_path_factory.mktemp("abuse") / "uploads"
    config = {"destination": str(destination), "max_file_size": MAX_FILE_SIZE}
    env = {"HARDENING_BACKEND": "local", "HARDENING_CONFIG": json.dumps(config), "HARDENING_COUNT": "3"}
    with run_uvicorn("tests.hardening.apps.upload_app:app", env) as server:
        yield Target(server, destination)


def post(target: Target, body: bytes, ctype: str = content_type(), **headers: str) -> Reply:
    response = httpx.post(
        target.server.url + "/upload", content=body, headers={"content-type": ctype, **headers}, timeout=30
    )
    return Reply(response.status_code, dict(response.headers), response.content)


def raw(target: Target, headers: dict[str, str], *body: bytes, half_close: bool = False) -> Reply:
    return raw_exchange(target.server.url, request_head("/upload", headers), body, half_close=half_close)


def one_file(data: bytes = b"hello", name: str = "a.txt") -> bytes:
    return form(file_part("file", name, data))


def header_section(count: int, size: int) -> bytes:
    pad = b"X-Pad: " + b"v" * (size // count) + b"\r\n"
    return (
        b"--"
        + BOUNDARY.encode()
        + b'\r\nContent-Disposition: form-data; name="file"; filename="h.txt"\r\n'
        + pad * count
    )


def chunked(*pieces: bytes) -> bytes:
    return b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in pieces) + b"0\r\n\r\n"


@dataclass(frozen=True)
class Abuse:
    id: str
    send: Callable[[Target], Reply]
    status: int
    stored: int = 0  # files a valid request leaves


def _len(body: bytes) -> str:
    return str(len(body))


CASES = [
    Abuse("no-content-type", lambda t: post(t, one_file(), ctype=""), 415),
    Abuse("not-multipart", lambda t: post(t, b"file=a", ctype="application/x-www-form-urlencoded"), 415),
    Abuse("no-boundary", lambda t: post(t, one_file(), ctype="multipart/form-data"), 400),
    Abuse("empty-boundary", lambda t: post(t, one_file(), ctype="multipart/form-data; boundary="), 400),
    Abuse(
        "boundary-71-chars",
        lambda t: post(t, form(b"x", boundary="b" * 71), ctype=content_type("b" * 71)),
        400,
    ),
    Abuse(
        "boundary-70-chars-is-fine", lambda t: post(t, one_file_b70(), ctype=content_type("b" * 70)), 200, 1
    ),
    Abuse(
        "other-boundary-in-body", lambda t: post(t, form(file_part("file", "a", b"x"), boundary="zz")), 400
    ),
    Abuse("empty-body", lambda t: post(t, b""), 400),
    Abuse("header-section-1mib-many-lines", lambda t: post(t, header_section(1024, MiB)), 400),
    Abuse("header-section-1mib-one-line", lambda t: post(t, header_section(1, MiB)), 400),
    Abuse("headers-never-end", lambda t: post(t, header_section(8, 4096)), 400),
    Abuse(
        "10000-tiny-file-parts",
        lambda t: post(t, form(*(file_part("file", f"{i}.txt", b"x") for i in range(10_000)))),
        422,  # the field's count=3 is reached first
    ),
    Abuse(
        "10000-tiny-undeclared-parts",
        lambda t: post(t, form(*(file_part("other", f"{i}.txt", b"x") for i in range(10_000)))),
        413,
    ),
    Abuse(
        "100000-empty-fields", lambda t: post(t, form(*(text_part("f", b"") for _ in range(100_000)))), 413
    ),
    Abuse(
        "text-field-2mib",
        lambda t: post(t, form(text_part("f", b"v" * 2 * MiB), file_part("file", "a", b""))),
        413,
    ),
    Abuse("file-over-max-file-size", lambda t: post(t, one_file(b"\0" * (MAX_FILE_SIZE + 1))), 413),
    Abuse("file-64mib-refused-early", lambda t: post_stream_large(t), 413),
    Abuse(
        "part-without-content-disposition", lambda t: post(t, form(b"Content-Type: text/plain\r\n\r\nx")), 400
    ),
    Abuse("part-without-headers", lambda t: post(t, form(b"\r\nnaked")), 400),
    Abuse(
        "disposition-not-form-data",
        lambda t: post(t, form(b'Content-Disposition: attachment; name="file"; filename="a"\r\n\r\nx')),
        400,
    ),
    Abuse(
        "duplicate-content-disposition",
        lambda t: post(
            t,
            form(
                b'Content-Disposition: form-data; name="file"; filename="a.txt"\r\n'
                b'Content-Disposition: form-data; name="file"; filename="../b.txt"\r\n\r\nx'
            ),
        ),
        400,
    ),
    Abuse(
        "conflicting-content-types",
        lambda t: post(
            t,
            form(
                b'Content-Disposition: form-data; name="file"; filename="a.txt"\r\n'
                b"Content-Type: text/plain\r\nContent-Type: application/x-msdownload\r\n\r\nx"
            ),
        ),
        400,
    ),
    Abuse(
        "duplicate-filename-parameters",
        lambda t: post(
            t,
            form(b'Content-Disposition: form-data; name="file"; filename="a.txt"; filename="../b"\r\n\r\nx'),
        ),
        200,
        1,
    ),
    Abuse(
        "header-with-nul",
        lambda t: post(t, form(b'Content-Disposition: form-data; name="file"; filename="a\0"\r\n\r\nx')),
        400,
    ),
    Abuse(
        "too-many-files-for-count",
        lambda t: post(t, form(*(file_part("file", f"{i}", b"x") for i in range(4)))),
        422,
    ),
    Abuse("body-cut-mid-part", lambda t: post(t, one_file(b"x" * 1000)[:-200]), 400),
    Abuse("body-cut-mid-headers", lambda t: post(t, one_file()[:40]), 400),
    Abuse("body-without-closing-boundary", lambda t: post(t, one_file()[: -len(BOUNDARY) - 6]), 400),
    Abuse(
        "garbage-after-closing-boundary", lambda t: post(t, one_file() + b"\0garbage\r\n--" * 10_000), 200, 1
    ),
    Abuse(
        "content-length-shorter-than-body",
        lambda t: raw(t, {"Content-Type": content_type(), "Content-Length": "60"}, one_file(b"y" * 100)),
        400,
    ),
    Abuse(
        "content-length-longer-than-body",
        lambda t: raw(
            t, {"Content-Type": content_type(), "Content-Length": "100000"}, one_file(), half_close=True
        ),
        0,  # the server waits for the rest; the client gives up (half-close): no answer, nothing stored
    ),
    Abuse(
        "chunked-without-content-length",
        lambda t: raw(
            t,
            {"Content-Type": content_type(), "Transfer-Encoding": "chunked", "Connection": "close"},
            chunked(*(one_file(b"z" * 5000)[i : i + 777] for i in range(0, 5200, 777))),
        ),
        200,
        1,
    ),
    Abuse(
        "chunked-cut-mid-part",
        lambda t: raw(
            t,
            {"Content-Type": content_type(), "Transfer-Encoding": "chunked", "Connection": "close"},
            chunked(one_file(b"z" * 5000)[:3000]),
        ),
        400,
    ),
]


def one_file_b70() -> bytes:
    return form(file_part("file", "b70.txt", b"ok"), boundary="b" * 70)


def post_stream_large(target: Target) -> Reply:
    """64 MiB in 1 MiB blocks: the server answers at max_file_size and stops reading."""
    head = form(file_part("file", "big.bin", b""))[: -len(BOUNDARY) - 8]

    def body() -> Iterator[bytes]:
        yield head
        for _ in range(64):
            yield b"\0" * MiB

    try:
        response = httpx.post(
            target.server.url + "/upload",
            content=body(),
            headers={"content-type": content_type()},
            timeout=30,
        )
    except httpx.TransportError:  # the server closed while we were still sending
        return Reply(413, {}, b"")
    return Reply(response.status_code, dict(response.headers), response.content)


def test_the_table_covers_the_issue() -> None:
    assert len(CASES) >= 30
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_abuse(target: Target, case: Abuse) -> None:
    shutil.rmtree(target.destination, ignore_errors=True)
    calls = target.calls()
    target.server.reset_peak_rss()
    baseline = target.server.rss()

    reply = case.send(target)

    assert reply.status == case.status, reply.body[:500]
    growth = target.server.peak_rss() - baseline
    print(f"{case.id}: {reply.status}, peak RSS +{growth / MiB:.1f} MiB")  # shown with -rP
    assert growth < RSS_BUDGET, f"RSS grew by {growth / MiB:.1f} MiB"
    stored = target.stored()
    assert len(stored) == case.stored, stored
    assert not [name for name in stored if name.startswith(".")], stored  # no temp file
    assert target.calls() == calls + (1 if case.status == 200 else 0)
    # The server still serves a valid request.
    after = post(target, one_file(b"after", "after.txt"))
    assert after.status == 200, after.body
