"""S3Storage against a real moto server on loopback, driven through a FastAPI app.

moto keeps whatever checksum a request declares without checking it, so the checksum tests
put ``ChecksumGate`` between the storage and moto: a loopback proxy that verifies
``x-amz-checksum-sha256`` the way S3 does (400 ``BadDigest`` on a mismatch) and logs every
request, which also shows that parts really went up before an abort.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import http.client
import os
import subprocess
import sys
import threading
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi import Depends, FastAPI
from fastapi.responses import StreamingResponse
from pydantic import ValidationError
from starlette.types import Message

from filestore_fastapi import Config, FileData, S3Storage
from tests.asgi import post_scope
from tests.contract.harness_s3 import moto_client, moto_credentials
from tests.emulators import MotoServer
from tests.httpclient import httpx

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

KiB = 1024
MiB = 1024 * KiB
PART = 5 * MiB
DELIVERY = 64 * KiB
BOUNDARY = "s3-test-boundary-5c0a"


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


# -- the emulator, and a checksum-verifying proxy in front of it ------------------------------


@dataclass
class Logged:
    method: str
    path: str
    query: dict[str, list[str]]
    size: int
    checksum_verified: bool


@dataclass
class ChecksumGate:
    """A proxy to moto that verifies SHA-256 checksums like S3 and can corrupt one part in transit."""

    upstream: str
    log: list[Logged] = field(default_factory=list)
    corrupt_part: int | None = None
    denied: set[str] = field(default_factory=set)
    """Operations answered 403, as for credentials without the permission (see ``_KINDS``)."""
    endpoint_url: str = ""

    def operations(self, name: str) -> list[Logged]:
        """Requests of one S3 operation."""
        return [request for request in self.log if _KINDS[name](request)]

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        url = urlsplit(handler.path)
        query = parse_qs(url.query, keep_blank_values=True)
        if self.corrupt_part is not None and query.get("partNumber") == [str(self.corrupt_part)]:
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        declared = handler.headers.get("x-amz-checksum-sha256")
        verified = declared is not None and declared == sha256_b64(body)
        logged = Logged(handler.command, url.path, query, len(body), verified)
        self.log.append(logged)
        if any(_KINDS[name](logged) for name in self.denied):
            self._answer(handler, 403, {"Content-Type": "application/xml"}, _ACCESS_DENIED)
            return
        if declared is not None and not verified:
            self._answer(handler, 400, {"Content-Type": "application/xml"}, _BAD_DIGEST)
            return
        connection = http.client.HTTPConnection(urlsplit(self.upstream).netloc, timeout=60)
        try:
            headers = {k: v for k, v in handler.headers.items() if k.lower() not in ("host", "expect")}
            connection.request(handler.command, handler.path, body=body or None, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            passed = {k: v for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP}
            self._answer(handler, response.status, passed, payload)
        finally:
            connection.close()

    @staticmethod
    def _answer(handler: BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: bytes) -> None:
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body)


# S3 operations told apart by method and query, as S3 does.
_KINDS: dict[str, Callable[[Logged], bool]] = {
    "UploadPart": lambda r: r.method == "PUT" and "partNumber" in r.query,
    "AbortMultipartUpload": lambda r: r.method == "DELETE" and "uploadId" in r.query,
    "PutObject": lambda r: r.method == "PUT" and "partNumber" not in r.query,
    "HeadObject": lambda r: r.method == "HEAD",
    "ListMultipartUploads": lambda r: r.method == "GET" and "uploads" in r.query,
}
_HOP_BY_HOP = {"connection", "transfer-encoding", "content-length", "keep-alive", "server", "date"}
_ACCESS_DENIED = b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code></Error>"
_BAD_DIGEST = (
    b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>BadDigest</Code>"
    b"<Message>The SHA256 you specified did not match the calculated checksum.</Message></Error>"
)


@contextlib.contextmanager
def checksum_gate(upstream: str) -> Iterator[ChecksumGate]:
    gate = ChecksumGate(upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # answers botocore's "Expect: 100-continue" at once

        def do_any(self) -> None:
            gate.handle(self)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_any

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    gate.endpoint_url = f"http://127.0.0.1:{server.server_port}"
    try:
        yield gate
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server, moto_credentials(server):
        yield server


@pytest.fixture
def gate(moto: MotoServer) -> Iterator[ChecksumGate]:
    with checksum_gate(moto.endpoint_url) as proxy:
        yield proxy


@pytest.fixture
def s3(moto: MotoServer) -> S3Client:
    return moto_client(moto)


@pytest.fixture
def bucket(s3: S3Client) -> str:
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


Make = Callable[..., S3Storage]


@pytest.fixture
def make(moto: MotoServer, bucket: str) -> Make:
    def make(field: str = "doc", *, count: int = 1, endpoint: str | None = None, **config: Any) -> S3Storage:
        settings: dict[str, Any] = {
            "AWS_BUCKET_NAME": bucket,
            "AWS_DEFAULT_REGION": moto.region,
            "endpoint_url": endpoint or moto.endpoint_url,
            "destination": "up",
            **config,
        }
        return S3Storage(field, count, config=Config(**settings))

    return make


def objects(s3: S3Client, bucket: str) -> dict[str, bytes]:
    listing = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listing}


def pending_uploads(s3: S3Client, bucket: str) -> list[str]:
    return [u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


# -- the client side: a FastAPI app, bodies delivered in 64 KiB pieces as by a server ----------

File = tuple[str, str, bytes, str]  # field, filename, bytes, content type


def app_for(storage: S3Storage, calls: list[list[FileData]] | None = None) -> FastAPI:
    app = FastAPI()

    @app.post("/upload")
    async def upload(files: list[FileData] = Depends(storage)) -> list[FileData]:  # noqa: B008
        if calls is not None:
            calls.append(files)
        return files

    @app.get("/files/{key:path}")
    async def download(key: str) -> StreamingResponse:
        return StreamingResponse(storage.open(key))

    return app


def body_of(*files: File) -> bytes:
    body = bytearray()
    for name, filename, data, content_type in files:
        body += (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        body += data + b"\r\n"
    body += f"--{BOUNDARY}--\r\n".encode()
    return bytes(body)


async def in_pieces(body: bytes) -> AsyncIterator[bytes]:
    view = memoryview(body)
    for start in range(0, len(body), DELIVERY):
        yield bytes(view[start : start + DELIVERY])


def client_of(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app", timeout=120)


async def post(app: FastAPI, *files: File) -> httpx.Response:
    async with client_of(app) as client:
        return await client.post(
            "/upload",
            content=in_pieces(body_of(*files)),
            headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
        )


# -- streaming in parts, checksums ------------------------------------------------------------


async def test_a_file_larger_than_a_part_goes_up_in_parts_of_part_size(
    make: Make, s3: S3Client, bucket: str, gate: ChecksumGate
) -> None:
    storage = make(part_size=PART, endpoint=gate.endpoint_url)
    data = os.urandom(2 * PART + 123)

    response = await post(app_for(storage), ("doc", "big.bin", data, "video/mp4"))

    assert response.status_code == 200, response.text
    [stored] = response.json()
    assert stored["filename"] == "up/big.bin"
    assert stored["metadata"] == {"bucket": bucket, "key": "up/big.bin"}
    assert stored["url"] == f"{gate.endpoint_url}/{bucket}/up/big.bin"
    assert stored["sha256"] == hashlib.sha256(data).hexdigest()
    # Parts go up several at once (parts_in_flight) and may arrive in any order.
    parts = sorted(gate.operations("UploadPart"), key=lambda part: int(part.query["partNumber"][0]))
    assert [part.size for part in parts] == [PART, PART, 123]
    assert all(part.checksum_verified for part in parts)
    head = s3.head_object(Bucket=bucket, Key="up/big.bin", ChecksumMode="ENABLED")
    assert head["ETag"].endswith('-3"')  # a multipart object of three parts
    assert head["ContentType"] == "video/mp4"
    digests = b"".join(hashlib.sha256(data[i : i + PART]).digest() for i in range(0, len(data), PART))
    assert head["ChecksumSHA256"].startswith(sha256_b64(digests))  # S3's composite checksum
    assert objects(s3, bucket) == {"up/big.bin": data}
    assert pending_uploads(s3, bucket) == []


async def test_a_file_smaller_than_a_part_is_one_put_with_its_checksum(
    make: Make, s3: S3Client, bucket: str, gate: ChecksumGate
) -> None:
    storage = make(endpoint=gate.endpoint_url)
    data = os.urandom(3000)

    response = await post(app_for(storage), ("doc", "small.txt", data, "text/plain"))

    assert response.status_code == 200, response.text
    assert gate.operations("UploadPart") == []
    [put] = gate.operations("PutObject")
    assert put.checksum_verified and put.size == len(data)
    head = s3.head_object(Bucket=bucket, Key="up/small.txt", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == sha256_b64(data)
    assert head["ContentType"] == "text/plain"


async def test_a_part_corrupted_in_transit_is_refused_by_the_store_and_nothing_is_left(
    make: Make, s3: S3Client, bucket: str, gate: ChecksumGate
) -> None:
    gate.corrupt_part = 2
    storage = make(part_size=PART, endpoint=gate.endpoint_url, parts_in_flight=1)  # parts in order

    response = await post(app_for(storage), ("doc", "bent.bin", os.urandom(3 * PART), "video/mp4"))

    assert response.status_code == 500, response.text
    assert response.json()["detail"][0]["msg"] == "the file could not be stored"
    assert not gate.operations("UploadPart")[1].checksum_verified
    assert gate.operations("AbortMultipartUpload")
    assert objects(s3, bucket) == {}
    assert pending_uploads(s3, bucket) == []


# -- all or nothing ----------------------------------------------------------------------------


async def test_max_file_size_crossed_after_several_parts_aborts_them_all(
    make: Make, s3: S3Client, bucket: str, gate: ChecksumGate
) -> None:
    storage = make(part_size=PART, max_file_size=12 * MiB, endpoint=gate.endpoint_url, parts_in_flight=1)
    calls: list[list[FileData]] = []

    response = await post(app_for(storage, calls), ("doc", "huge.bin", os.urandom(20 * MiB), "video/mp4"))

    assert response.status_code == 413, response.text
    assert calls == []
    # Full parts went up, or were waiting their turn (dropped), when the limit tripped.
    assert len(gate.operations("UploadPart")) in (1, 2)
    assert gate.operations("AbortMultipartUpload")
    assert objects(s3, bucket) == {}
    assert pending_uploads(s3, bucket) == []


async def test_a_client_disconnect_mid_file_aborts_the_upload(
    make: Make, s3: S3Client, bucket: str, gate: ChecksumGate
) -> None:
    storage = make(part_size=PART, endpoint=gate.endpoint_url, parts_in_flight=1)
    calls: list[list[FileData]] = []
    body = body_of(("doc", "cut.bin", os.urandom(3 * PART), "video/mp4"))
    messages = deque(
        {"type": "http.request", "body": body[start : start + DELIVERY], "more_body": True}
        for start in range(0, 12 * MiB, DELIVERY)
    )

    async def receive() -> Message:
        return messages.popleft() if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        pass

    scope = post_scope("/upload", [(b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode())])
    with contextlib.suppress(Exception):  # how the app reports a vanished client is not the point
        await app_for(storage, calls)(scope, receive, send)

    assert calls == []
    # Parts went up before the client vanished (one more may still have been waiting its turn: dropped).
    assert len(gate.operations("UploadPart")) in (1, 2)
    assert gate.operations("AbortMultipartUpload")
    assert objects(s3, bucket) == {}
    assert pending_uploads(s3, bucket) == []


async def test_a_store_error_is_a_generic_500_that_names_neither_bucket_nor_keys(
    moto: MotoServer,
) -> None:
    storage = S3Storage(
        "doc",
        config=Config(AWS_BUCKET_NAME="no-such-bucket-here", endpoint_url=moto.endpoint_url),
    )

    response = await post(app_for(storage), ("doc", "a.txt", b"hello", "text/plain"))

    assert response.status_code == 500
    assert response.json()["detail"][0]["msg"] == "the file could not be stored"
    for secret in ("no-such-bucket-here", moto.access_key_id, "NoSuchBucket"):
        assert secret not in response.text


# -- names: a suffix, never a replaced object --------------------------------------------------


async def test_a_taken_name_gets_a_suffix_and_the_existing_object_is_kept(
    make: Make, s3: S3Client, bucket: str
) -> None:
    s3.put_object(Bucket=bucket, Key="up/doc.pdf", Body=b"original")
    storage = make(part_size=PART)
    small, large = os.urandom(1000), os.urandom(PART + 1000)

    first = await post(app_for(storage), ("doc", "doc.pdf", small, "application/pdf"))
    second = await post(app_for(storage), ("doc", "doc.pdf", large, "application/pdf"))

    assert first.json()[0]["filename"] == "up/doc-1.pdf", first.text
    assert second.json()[0]["filename"] == "up/doc-2.pdf", second.text
    assert objects(s3, bucket) == {"up/doc.pdf": b"original", "up/doc-1.pdf": small, "up/doc-2.pdf": large}


async def test_without_list_permissions_a_taken_name_is_still_never_replaced(
    make: Make, s3: S3Client, bucket: str, gate: ChecksumGate
) -> None:
    gate.denied = {"HeadObject", "ListMultipartUploads"}
    s3.put_object(Bucket=bucket, Key="up/doc.pdf", Body=b"original")
    storage = make(part_size=PART, endpoint=gate.endpoint_url)
    small = os.urandom(1000)

    first = await post(app_for(storage), ("doc", "doc.pdf", small, "application/pdf"))
    second = await post(app_for(storage), ("doc", "doc.pdf", os.urandom(PART + 1), "application/pdf"))

    assert first.json()[0]["filename"] == "up/doc-1.pdf", first.text  # the conditional PUT finds it
    assert second.status_code == 409, second.text  # a multipart upload cannot move to another key
    assert gate.operations("HeadObject") and gate.operations("ListMultipartUploads")
    assert objects(s3, bucket) == {"up/doc.pdf": b"original", "up/doc-1.pdf": small}
    assert pending_uploads(s3, bucket) == []


async def test_concurrent_uploads_of_one_name_all_land_under_distinct_keys(
    make: Make, s3: S3Client, bucket: str
) -> None:
    storage = make(part_size=PART)
    app = app_for(storage)
    contents = [os.urandom(PART + 1000 * n) for n in range(1, 4)] + [os.urandom(500 * n) for n in range(1, 4)]

    responses = await asyncio.gather(
        *(post(app, ("doc", "same.bin", data, "video/mp4")) for data in contents)
    )

    assert [r.status_code for r in responses] == [200] * len(contents), [r.text for r in responses]
    keys = [r.json()[0]["filename"] for r in responses]
    assert len(set(keys)) == len(contents), keys
    assert all(key.startswith("up/same") and key.endswith(".bin") for key in keys), keys
    assert objects(s3, bucket) == dict(zip(keys, contents, strict=True))
    assert pending_uploads(s3, bucket) == []


async def test_overwrite_replaces_the_object_of_the_same_name(make: Make, s3: S3Client, bucket: str) -> None:
    storage = make(part_size=PART, overwrite=True)
    large, small = os.urandom(PART + 10), os.urandom(10)

    for data in (large, small):
        response = await post(app_for(storage), ("doc", "same.bin", data, "video/mp4"))
        assert response.json()[0]["filename"] == "up/same.bin", response.text

    assert objects(s3, bucket) == {"up/same.bin": small}


async def test_extra_args_reach_every_upload_call(make: Make, s3: S3Client, bucket: str) -> None:
    extra = {"CacheControl": "max-age=60", "Metadata": {"owner": "tests"}}
    storage = make(part_size=PART, count=2, extra_args=extra)

    response = await post(
        app_for(storage),
        ("doc", "small.txt", b"tiny", "text/plain"),
        ("doc", "large.bin", os.urandom(PART + 1), "video/mp4"),
    )

    assert response.status_code == 200, response.text
    for key, content_type in (("up/small.txt", "text/plain"), ("up/large.bin", "video/mp4")):
        head = s3.head_object(Bucket=bucket, Key=key)
        assert (head["CacheControl"], head["Metadata"]) == ("max-age=60", {"owner": "tests"})
        assert head["ContentType"] == content_type


# -- configuration and the SDK -----------------------------------------------------------------


def test_a_missing_bucket_is_an_error_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_BUCKET_NAME", raising=False)

    with pytest.raises(ValueError, match="AWS_BUCKET_NAME"):
        S3Storage("doc")


def test_bucket_and_region_fall_back_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_BUCKET_NAME", "env-bucket")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")

    storage = S3Storage("doc")
    cdn = S3Storage("doc", config=Config(base_url="https://cdn.example.com/files/"))

    assert (storage.bucket, storage.region) == ("env-bucket", "eu-west-3")
    assert storage.url_of("up/a b.txt") == "https://env-bucket.s3.eu-west-3.amazonaws.com/up/a%20b.txt"
    assert cdn.url_of("up/a b.txt") == "https://cdn.example.com/files/up/a%20b.txt"


def test_part_size_below_the_s3_minimum_is_refused() -> None:
    with pytest.raises(ValidationError, match="part_size"):
        Config(part_size=5 * MiB - 1)


def test_a_missing_sdk_names_the_pip_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # makes `import boto3` fail

    with pytest.raises(ImportError, match=r'pip install "filestore-fastapi\[s3\]"'):
        S3Storage("doc", config=Config(AWS_BUCKET_NAME="any"))


def test_importing_the_backend_does_not_import_the_sdk() -> None:
    code = (
        "import sys, filestore_fastapi, filestore_fastapi.backends.s3\n"
        "loaded = [m for m in ('boto3', 'botocore') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- management side ---------------------------------------------------------------------------


async def test_open_streams_in_chunks_and_delete_removes(make: Make, s3: S3Client, bucket: str) -> None:
    storage = make(count=2, chunk_size=256 * KiB)
    app = app_for(storage)
    data = os.urandom(MiB + 5)
    response = await post(
        app, ("doc", "round.bin", data, "video/mp4"), ("doc", "other.txt", b"x", "text/plain")
    )
    first, second = (FileData.model_validate(f) for f in response.json())

    chunks = [chunk async for chunk in storage.open(first.filename)]
    async with client_of(app) as client:
        served = await client.get(f"/files/{first.filename}")

    assert [len(chunk) for chunk in chunks] == [256 * KiB] * 4 + [5]
    assert b"".join(chunks) == served.content == data
    assert storage.client() is storage.client()  # one client per storage, reused

    await storage.delete(first)
    await storage.delete(second.filename)

    assert objects(s3, bucket) == {}
    with pytest.raises(FileNotFoundError):
        await anext(storage.open(first.filename))


async def test_presigned_urls_upload_and_download_without_credentials(
    make: Make, s3: S3Client, bucket: str
) -> None:
    storage = make()
    key = "up/direct.txt"

    upload = await storage.presign_upload(key, expires_in=120, content_type="text/plain")
    async with httpx.AsyncClient(trust_env=False) as client:
        put = await client.request(upload.method, upload.url, headers=upload.headers, content=b"hello")
        download = await storage.presign_download(key)
        got = await client.request(download.method, download.url)
        again = await storage.presign_upload(key)
        refused = await client.request(again.method, again.url, headers=again.headers, content=b"replaced")

    assert (upload.method, put.status_code) == ("PUT", 200), put.text
    assert "X-Amz-Expires=120" in upload.url and "X-Amz-Signature=" in upload.url
    assert upload.headers == {"Content-Type": "text/plain", "If-None-Match": "*"}
    assert s3.head_object(Bucket=bucket, Key=key)["ContentType"] == "text/plain"
    assert (download.method, got.status_code, got.content) == ("GET", 200, b"hello")
    assert refused.status_code == 412  # without overwrite, a presigned PUT cannot replace either
    assert objects(s3, bucket) == {key: b"hello"}


async def test_presigned_upload_with_overwrite_replaces(make: Make, s3: S3Client, bucket: str) -> None:
    storage = make(overwrite=True)
    s3.put_object(Bucket=bucket, Key="up/x.bin", Body=b"old")

    upload = await storage.presign_upload("up/x.bin")
    async with httpx.AsyncClient(trust_env=False) as client:
        put = await client.request(upload.method, upload.url, headers=upload.headers, content=b"new")

    assert put.status_code == 200, put.text
    assert upload.headers == {}
    assert objects(s3, bucket) == {"up/x.bin": b"new"}
