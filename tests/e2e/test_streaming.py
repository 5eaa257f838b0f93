"""Uploads through real ASGI servers (uvicorn, Hypercorn, Granian): a large file streams to
disk in bounded memory with the right sha256, and an abandoned upload leaves nothing behind.

On uvicorn the LocalStorage route is measured next to the plain ``UploadFile`` route
FastAPI's docs show, and both rows are printed, e.g. ``pytest tests/e2e/test_streaming.py -q``.
"""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.e2e.server import (
    SERVERS,
    Server,
    Upload,
    measure_upload,
    multipart_stream,
    post_file,
    run_uvicorn,
)
from tests.httpclient import httpx

MiB = 1024 * 1024
LARGE = 256 * MiB
RSS_BUDGET = 64 * MiB
HASH_BLOCK = 4 * MiB


@dataclass
class Dirs:
    uploads: Path
    plain: Path
    spool: Path


def row(route: str, upload: Upload) -> str:
    return (
        f"{route:<8} peak RSS +{upload.peak_rss_growth / MiB:7.1f} MiB   "
        f"{upload.seconds:6.2f} s   disk writes {upload.written / MiB:7.1f} MiB"
    )


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> Dirs:
    root = tmp_path_factory.mktemp("e2e-streaming")
    made = Dirs(uploads=root / "uploads", plain=root / "plain", spool=root / "spool")
    for directory in (made.uploads, made.plain, made.spool):
        directory.mkdir()
    return made


@pytest.fixture(scope="module", params=SERVERS)
def server(dirs: Dirs, request: pytest.FixtureRequest) -> Iterator[Server]:
    # TMPDIR: the plain route spools there, on the same disk, so its writes are counted too.
    env = {"UPLOAD_DIR": str(dirs.uploads), "PLAIN_DIR": str(dirs.plain), "TMPDIR": str(dirs.spool)}
    with run_uvicorn("tests.e2e.apps.local_app:app", env=env, server=request.param) as running:
        yield running


def post_stream(server: Server, route: str, size: int, filename: str) -> tuple[httpx.Response, str]:
    """Send a generated file of ``size`` bytes; returns the response and the file's sha256."""
    return post_file(f"{server.url}{route}", size, filename, timeout=120.0)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def empty(directory: Path) -> None:
    for path in directory.iterdir():
        path.unlink()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting until {what}")
        time.sleep(0.02)


def handler_calls(server: Server) -> dict[str, int]:
    calls: dict[str, int] = httpx.get(f"{server.url}/calls").json()
    return calls


def test_large_upload_streams_to_disk_in_bounded_memory(
    server: Server, dirs: Dirs, capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest
) -> None:
    name = request.node.callspec.params["server"]
    routes = ("/local", "/plain") if name == "uvicorn" else ("/local",)
    for route in routes:  # warm-up: imports, thread pool, first allocations
        response, _ = post_stream(server, route, 2 * MiB, "warm.bin")
        assert response.status_code == 200, response.text
    empty(dirs.uploads)
    empty(dirs.plain)

    local = measure_upload(server, "/local", LARGE, "large-local.bin")
    digest = local.sha256
    assert local.response.status_code == 200, local.response.text
    [stored] = local.response.json()
    assert stored["size"] == LARGE
    assert stored["sha256"] == digest
    assert sorted(p.name for p in dirs.uploads.iterdir()) == [stored["filename"]]  # no temp file left
    assert file_sha256(dirs.uploads / stored["filename"]) == digest
    empty(dirs.uploads)

    rows = [row("/local", local)]
    if "/plain" in routes:
        plain = measure_upload(server, "/plain", LARGE, "large-plain.bin")
        assert plain.response.status_code == 200, plain.response.text
        assert plain.response.json()["size"] == LARGE
        empty(dirs.plain)
        rows.append(row("/plain", plain))

    with capsys.disabled():
        print(f"\nUpload of {LARGE // MiB} MiB through {name}:\n  " + "\n  ".join(rows))
    assert local.peak_rss_growth < RSS_BUDGET, row("/local", local)
    # Each byte goes to disk once: no spooled copy as in the plain route.
    assert LARGE <= local.written < 1.1 * LARGE, row("/local", local)


def test_client_disconnect_mid_file_leaves_nothing(server: Server, dirs: Dirs) -> None:
    assert list(dirs.uploads.iterdir()) == []
    calls_before = handler_calls(server).get("local", 0)
    content_type, length, body, _ = multipart_stream("file", "abandoned.bin", 16 * MiB)
    address = urlsplit(server.url)
    assert address.hostname is not None and address.port is not None

    with socket.create_connection((address.hostname, address.port)) as sock:
        head = (
            f"POST /local HTTP/1.1\r\nHost: {address.netloc}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {length}\r\n\r\n"
        )
        sock.sendall(head.encode())
        sent = 0
        for chunk in body:
            sock.sendall(chunk)
            sent += len(chunk)
            if sent >= length // 2:
                break
        # The upload is really under way: its temp file exists before the client goes.
        wait_until(lambda: any(dirs.uploads.glob(".upload-*.part")), "the temp file appears")

    wait_until(lambda: not any(dirs.uploads.iterdir()), "the upload directory is empty again")
    assert handler_calls(server).get("local", 0) == calls_before


def test_an_early_refusal_is_answered_and_the_connection_closed(server: Server) -> None:
    """The refusal comes while the client is still sending a 1 GiB body, and the server
    closes the connection (``Connection: close``) instead of reading the rest."""
    address = urlsplit(server.url)
    assert address.hostname is not None and address.port is not None
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        head = (
            f"POST /local HTTP/1.1\r\nHost: {address.netloc}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {1024 * MiB}\r\n\r\n"
        )
        sock.sendall(head.encode() + b"x" * MiB)
        received = b""
        try:
            while chunk := sock.recv(65536):  # until the server closes its side
                received += chunk
        except ConnectionResetError:
            pass  # closing with our unread bytes in its buffer makes the kernel send RST
    status_line, _, rest = received.partition(b"\r\n")
    assert status_line.split()[1] == b"415", received[:200]
    assert b"expected multipart/form-data" in rest
