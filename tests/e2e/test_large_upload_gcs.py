"""A 512 MiB upload through a real uvicorn into fake-gcs-server, in bounded memory; and an
abandoned upload that leaves nothing behind.

The figures (the app's peak RSS growth, wall time) are printed next to the plain SDK's
upload of the same size from a file, e.g. ``pytest tests/e2e/test_large_upload_gcs.py -q``.

The large test is marked ``large``: it takes minutes, nearly all of it in the emulator,
which recomputes the crc32c and MD5 of the whole object so far on every chunk it receives
(quadratic in the number of chunks; the plain SDK shows the same with 8 MiB chunks).
"""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from google.cloud import storage as gcs

from tests.e2e.server import Server, measure_upload, multipart_stream, post_file, run_uvicorn, write_file_of
from tests.emulators import FakeGcsServer
from tests.httpclient import httpx

MiB = 1024 * 1024
LARGE = 512 * MiB
PART = 8 * MiB  # Config's default part_size
RSS_BUDGET = 100 * MiB
BUCKET = "e2e-gcs"


@pytest.fixture(scope="module")
def emulator() -> Iterator[FakeGcsServer]:
    with FakeGcsServer() as server:
        yield server


@pytest.fixture(scope="module")
def bucket(emulator: FakeGcsServer) -> Any:
    return gcs.Client(**emulator.client_kwargs()).create_bucket(BUCKET)


@pytest.fixture(scope="module")
def server(emulator: FakeGcsServer, bucket: Any) -> Iterator[Server]:
    env = {
        "GCP_BUCKET_NAME": bucket.name,
        "GCP_PROJECT": emulator.project,
        "GCS_ENDPOINT_URL": emulator.endpoint_url,
        "GCS_PART_SIZE": str(PART),
    }
    with run_uvicorn("tests.e2e.apps.gcs_app:app", env=env) as running:
        yield running


def post_stream(server: Server, size: int, filename: str) -> tuple[httpx.Response, str]:
    return post_file(f"{server.url}/gcs", size, filename)


def stored_sha256(bucket: Any, key: str) -> str:
    """Hash the object as the store serves it, a part at a time."""
    digest = hashlib.sha256()
    with bucket.blob(key).open("rb", chunk_size=PART) as handle:
        while block := handle.read(PART):
            digest.update(block)
    return digest.hexdigest()


def empty(bucket: Any) -> None:
    for blob in bucket.client.list_blobs(bucket.name):
        blob.delete()


def handler_calls(server: Server) -> int:
    calls: dict[str, int] = httpx.get(f"{server.url}/calls").json()
    return calls.get("gcs", 0)


def sdk_upload_seconds(bucket: Any, path: Path, chunk_size: int | None) -> float:
    blob = bucket.blob(f"sdk/{path.name}-{chunk_size}", chunk_size=chunk_size)
    started = time.perf_counter()
    blob.upload_from_filename(str(path), content_type="application/octet-stream", checksum="crc32c")
    seconds = time.perf_counter() - started
    blob.delete()  # the emulator keeps objects in memory
    return seconds


@pytest.mark.large
def test_512_mib_upload_streams_to_gcs_in_bounded_memory(
    server: Server, bucket: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Warm-up through the chunked path: SDK import, client, thread pool, first allocations.
    response, _ = post_stream(server, 2 * PART + MiB, "warm.bin")
    assert response.status_code == 200, response.text
    empty(bucket)

    upload = measure_upload(server, "/gcs", LARGE, "large.bin")
    response, digest, seconds, growth = upload.response, upload.sha256, upload.seconds, upload.peak_rss_growth

    assert response.status_code == 200, response.text
    [stored] = response.json()
    assert stored["size"] == LARGE
    assert stored["sha256"] == digest
    assert [blob.name for blob in bucket.client.list_blobs(bucket.name)] == ["uploads/large.bin"]
    assert stored_sha256(bucket, "uploads/large.bin") == digest
    empty(bucket)

    source = tmp_path / "large.bin"
    write_file_of(LARGE, source)
    sdk_default = sdk_upload_seconds(bucket, source, None)
    sdk_same_chunks = sdk_upload_seconds(bucket, source, PART)

    with capsys.disabled():
        print(
            f"\nUpload of {LARGE // MiB} MiB to fake-gcs-server:\n"
            f"  GCSStorage via uvicorn  peak RSS +{growth / MiB:.1f} MiB   {seconds:.2f} s"
            f"   ({PART // MiB} MiB chunks)\n"
            f"  SDK upload_from_filename                 {sdk_default:.2f} s   (SDK default chunks)\n"
            f"  SDK upload_from_filename                 {sdk_same_chunks:.2f} s"
            f"   ({PART // MiB} MiB chunks)"
        )
    assert growth < RSS_BUDGET, f"peak RSS grew {growth / MiB:.1f} MiB"


def test_client_disconnect_mid_file_leaves_nothing(server: Server, bucket: Any) -> None:
    empty(bucket)
    calls_before = handler_calls(server)
    content_type, length, body, _ = multipart_stream("file", "abandoned.bin", 6 * PART)
    address = urlsplit(server.url)
    assert address.hostname is not None and address.port is not None

    with socket.create_connection((address.hostname, address.port)) as sock:
        head = (
            f"POST /gcs HTTP/1.1\r\nHost: {address.netloc}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {length}\r\n\r\n"
        )
        sock.sendall(head.encode())
        sent = 0
        for chunk in body:  # about three chunks: the session has stored data when the client goes
            sock.sendall(chunk)
            sent += len(chunk)
            if sent >= length // 2:
                break

    # A dropped, un-cancelled session writer would finalise on garbage collection and
    # surface as an object: give that time to happen, then check nothing did.
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        assert list(bucket.client.list_blobs(bucket.name)) == []
        time.sleep(0.1)
    assert handler_calls(server) == calls_before
    response, _ = post_stream(server, 1000, "after.bin")  # the app still serves
    assert response.status_code == 200, response.text
    empty(bucket)
