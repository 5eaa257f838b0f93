"""GCSStorage against a real fake-gcs-server on loopback, driven through a FastAPI app.

``wire`` records every HTTP request the Google SDK makes (it wraps, and still calls, the
SDK's ``AuthorizedSession.request``), which shows what the emulator cannot: chunk sizes,
the checksum sent with the last chunk, the preconditions, and the session's cancellation.

fake-gcs-server 1.54 honours ``ifGenerationMatch`` only on single-request uploads: it
ignores it on resumable uploads and server-side copies, ignores ``X-Goog-Hash``, and
answers a session DELETE with 499 without dropping the session. Tests of those paths
therefore assert the request was made, not the emulator's reaction.

No ``from __future__ import annotations``: FastAPI must evaluate the routes' ``Depends``
annotations, which name a storage local to ``upload_app``.
"""

import asyncio
import base64
import datetime
import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote, urlsplit

import google_crc32c
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import Depends, FastAPI
from fastapi.responses import StreamingResponse
from google.auth.transport.requests import AuthorizedSession
from google.cloud import storage as gcs
from google.oauth2 import service_account

from filestore_fastapi import Config, FileData, GCSStorage
from tests.emulators import FakeGcsServer
from tests.httpclient import httpx

KiB = 1024
MiB = 1024 * KiB
PART = 5 * MiB  # the smallest part_size Config allows; a multiple of 256 KiB
DELIVERY = 64 * KiB
BOUNDARY = "gcs-test-boundary-9e41"


# -- the emulator and a record of what the SDK sends --------------------------------------------


@pytest.fixture(scope="module")
def emulator() -> Iterator[FakeGcsServer]:
    with FakeGcsServer() as server:
        yield server


@pytest.fixture(scope="module")
def sdk(emulator: FakeGcsServer) -> gcs.Client:
    return gcs.Client(**emulator.client_kwargs())


@pytest.fixture
def bucket(sdk: gcs.Client) -> Any:
    return sdk.create_bucket(f"test-{uuid.uuid4().hex[:16]}")


@dataclass(frozen=True)
class Sent:
    method: str
    url: str
    headers: dict[str, str]
    size: int
    status: int

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.url).query)

    @property
    def to_session(self) -> bool:
        return "upload_id" in self.query


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> list[Sent]:
    sent: list[Sent] = []
    original = AuthorizedSession.request

    def recording(self: AuthorizedSession, method: str, url: str, data: Any = None, **kwargs: Any) -> Any:
        response = original(self, method, url, data=data, **kwargs)  # type: ignore[no-untyped-call]
        headers = {name.lower(): value for name, value in (kwargs.get("headers") or {}).items()}
        size = len(data) if isinstance(data, bytes | bytearray | memoryview) else 0
        sent.append(Sent(method, url, headers, size, response.status_code))
        return response

    monkeypatch.setattr(AuthorizedSession, "request", recording)
    return sent


def make_storage(
    emulator: FakeGcsServer, bucket: Any, field: str = "doc", count: int = 1, **config: Any
) -> GCSStorage:
    config.setdefault("destination", "uploads")
    return GCSStorage(
        field,
        count,
        config=Config(
            GCP_BUCKET_NAME=bucket.name,
            GCP_PROJECT=emulator.project,
            endpoint_url=emulator.endpoint_url,
            **config,
        ),
    )


def names_in(bucket: Any) -> list[str]:
    return sorted(blob.name for blob in bucket.client.list_blobs(bucket.name))


# -- a FastAPI app, and bodies delivered in pieces as a real server does ------------------------


def upload_app(storage: GCSStorage) -> FastAPI:
    app = FastAPI()

    @app.post("/upload")
    async def upload(files: Annotated[list[FileData], Depends(storage)]) -> list[FileData]:
        return files

    @app.get("/files/{key:path}")
    async def download(key: str) -> StreamingResponse:
        return StreamingResponse(storage.open(key))

    return app


def multipart(*files: tuple[str, str, bytes, str]) -> bytes:
    body = b""
    for field, filename, data, content_type in files:
        body += (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        body += data + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode()


async def in_pieces(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), DELIVERY):
        yield body[start : start + DELIVERY]


async def post(app: FastAPI, *files: tuple[str, str, bytes, str]) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.post(
            "/upload",
            content=in_pieces(multipart(*files)),
            headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
        )


async def upload_one(
    app: FastAPI, filename: str, data: bytes, content_type: str = "application/pdf"
) -> dict[str, Any]:
    response = await post(app, ("doc", filename, data, content_type))
    assert response.status_code == 200, response.text
    [file] = response.json()
    return dict(file)


def crc32c_b64(data: bytes) -> str:
    checksum = google_crc32c.Checksum(data)  # type: ignore[no-untyped-call]
    return base64.b64encode(checksum.digest()).decode()  # type: ignore[no-untyped-call]


# -- streaming, checksums, abort ----------------------------------------------------------------


async def test_a_file_larger_than_a_chunk_streams_in_chunks_and_ends_with_its_crc32c(
    emulator: FakeGcsServer, bucket: Any, wire: list[Sent]
) -> None:
    storage = make_storage(emulator, bucket, part_size=PART)
    data = os.urandom(2 * PART + 123_457)

    file = await upload_one(upload_app(storage), "report.pdf", data)

    key = "uploads/report.pdf"
    assert file["filename"] == key
    assert file["sha256"] == hashlib.sha256(data).hexdigest()
    assert file["metadata"] == {"bucket": bucket.name, "key": key}
    assert file["url"] == f"{emulator.endpoint_url}/{bucket.name}/{key}"
    assert file["storage"] == "gcs"
    chunks = [s for s in wire if s.method == "PUT" and s.to_session]
    assert [c.size for c in chunks] == [PART, PART, 123_457]
    assert [c.headers["content-range"] for c in chunks[:2]] == [
        f"bytes 0-{PART - 1}/*",
        f"bytes {PART}-{2 * PART - 1}/*",
    ]
    assert chunks[-1].headers["content-range"] == f"bytes {2 * PART}-{len(data) - 1}/{len(data)}"
    assert chunks[-1].headers["x-goog-hash"] == f"crc32c={crc32c_b64(data)}"
    stored = bucket.get_blob(key)
    assert stored.crc32c == crc32c_b64(data)  # what the emulator computed from what it received
    assert stored.download_as_bytes() == data
    assert stored.content_type == "application/pdf"
    assert names_in(bucket) == [key]  # the temp object is gone


async def test_a_file_refused_after_several_chunks_cancels_its_session_and_leaves_nothing(
    emulator: FakeGcsServer, bucket: Any, wire: list[Sent]
) -> None:
    storage = make_storage(emulator, bucket, part_size=PART, max_file_size=2 * PART + MiB)

    response = await post(upload_app(storage), ("doc", "big.bin", os.urandom(3 * PART), "video/mp4"))

    assert response.status_code == 413, response.text
    session = {s.url for s in wire if s.to_session}
    assert len(session) == 1
    chunks = [s for s in wire if s.method == "PUT" and s.to_session]
    # Chunks already sent were stored but never finalised (how many depends on how far the
    # write behind the parser had got when the limit was crossed).
    assert chunks and all((c.size, c.status) == (PART, 308) for c in chunks)
    [cancel] = [s for s in wire if s.method == "DELETE"]
    assert cancel.url in session
    assert cancel.status == 499  # GCS's answer to a cancelled session (the emulator's too)
    assert not [s for s in wire if s.to_session and s is not cancel and wire.index(s) > wire.index(cancel)]
    assert names_in(bucket) == []


async def test_a_small_file_is_one_conditional_request_and_no_session(
    emulator: FakeGcsServer, bucket: Any, wire: list[Sent]
) -> None:
    storage = make_storage(emulator, bucket)
    data = b"%PDF-1.7 small"

    file = await upload_one(upload_app(storage), "small.pdf", data)

    uploads = [s for s in wire if "/upload/" in s.url]
    assert len(uploads) == 1
    assert uploads[0].query["uploadType"] == ["multipart"]
    assert uploads[0].query["ifGenerationMatch"] == ["0"]
    assert bucket.blob(file["filename"]).download_as_bytes() == data


@pytest.mark.parametrize("overwrite", [False, True], ids=["suffix", "overwrite"])
async def test_bytes_corrupted_on_the_way_fail_the_checksum_and_leave_nothing(
    emulator: FakeGcsServer, bucket: Any, monkeypatch: pytest.MonkeyPatch, overwrite: bool
) -> None:
    """Flip one byte of the last chunk in transit: the store keeps what it received, its
    crc32c differs from the one computed while sending, so the upload fails and is removed."""
    original = AuthorizedSession.request

    def corrupting(self: AuthorizedSession, method: str, url: str, data: Any = None, **kwargs: Any) -> Any:
        content_range = (kwargs.get("headers") or {}).get("content-range", "")
        if isinstance(data, bytes) and data and content_range and not content_range.endswith("/*"):
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        return original(self, method, url, data=data, **kwargs)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(AuthorizedSession, "request", corrupting)
    storage = make_storage(emulator, bucket, part_size=PART, overwrite=overwrite)

    response = await post(upload_app(storage), ("doc", "doc.bin", os.urandom(PART + 4096), "text/plain"))

    assert response.status_code == 500, response.text
    assert names_in(bucket) == []


def test_the_upload_chunk_is_part_size_rounded_up_to_256_kib() -> None:
    storage = GCSStorage("doc", config=Config(GCP_BUCKET_NAME="bucket", part_size=PART + 1))
    assert storage.chunk_size == PART + 256 * KiB


# -- collisions ---------------------------------------------------------------------------------


async def test_a_taken_name_gets_the_next_suffix_small_or_large(
    emulator: FakeGcsServer, bucket: Any, wire: list[Sent]
) -> None:
    storage = make_storage(emulator, bucket, part_size=PART)
    app = upload_app(storage)
    small, large = os.urandom(1000), os.urandom(PART + 1)

    first = await upload_one(app, "doc.pdf", small)
    second = await upload_one(app, "doc.pdf", small[::-1])
    third = await upload_one(app, "doc.pdf", large)

    assert [f["filename"] for f in (first, second, third)] == [
        "uploads/doc.pdf",
        "uploads/doc-1.pdf",
        "uploads/doc-2.pdf",
    ]
    assert bucket.blob("uploads/doc.pdf").download_as_bytes() == small
    assert bucket.blob("uploads/doc-1.pdf").download_as_bytes() == small[::-1]
    assert bucket.blob("uploads/doc-2.pdf").download_as_bytes() == large
    refused = [s for s in wire if s.status == 412]
    assert refused and all(s.query["ifGenerationMatch"] == ["0"] for s in refused)
    [copy] = [s for s in wire if "/rewriteTo/" in s.url]
    assert copy.query["ifGenerationMatch"] == ["0"]  # what makes the large-file claim race-free on GCS
    assert names_in(bucket) == ["uploads/doc-1.pdf", "uploads/doc-2.pdf", "uploads/doc.pdf"]


async def test_concurrent_uploads_of_one_name_never_replace_each_other(
    emulator: FakeGcsServer, bucket: Any
) -> None:
    storage = make_storage(emulator, bucket)
    app = upload_app(storage)
    payloads = [os.urandom(2000 + n) for n in range(8)]

    files = await asyncio.gather(*(upload_one(app, "same.txt", data, "text/plain") for data in payloads))

    keys = sorted(f["filename"] for f in files)
    assert keys == sorted(["uploads/same.txt", *(f"uploads/same-{n}.txt" for n in range(1, 8))])
    for file in files:
        stored = bucket.blob(file["filename"]).download_as_bytes()
        assert hashlib.sha256(stored).hexdigest() == file["sha256"]


async def test_overwrite_keeps_a_pinned_backup_until_the_request_succeeds(
    emulator: FakeGcsServer, bucket: Any, wire: list[Sent]
) -> None:
    storage = make_storage(emulator, bucket, part_size=PART, overwrite=True)
    app = upload_app(storage)
    large = os.urandom(PART + 10)

    first = await upload_one(app, "doc.pdf", b"old")
    generation = bucket.get_blob("uploads/doc.pdf").generation
    del wire[:]
    second = await upload_one(app, "doc.pdf", large)

    assert first["filename"] == second["filename"] == "uploads/doc.pdf"
    assert bucket.blob("uploads/doc.pdf").download_as_bytes() == large
    assert names_in(bucket) == ["uploads/doc.pdf"], "the backup is gone once the request succeeded"
    backup, onto_key = [s for s in wire if "/rewriteTo/" in s.url]
    assert ".bak" in backup.url and backup.query["ifSourceGenerationMatch"] == [str(generation)]
    assert backup.query["ifGenerationMatch"] == ["0"]
    assert ".part/rewriteTo/" in onto_key.url and onto_key.query["ifGenerationMatch"] == [str(generation)]


# -- configuration and the SDK ------------------------------------------------------------------


def test_a_missing_bucket_is_an_error_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GCP_BUCKET_NAME", raising=False)
    with pytest.raises(ValueError, match="GCP_BUCKET_NAME"):
        GCSStorage("doc", config=Config(endpoint_url="http://127.0.0.1:9"))


def test_bucket_and_project_fall_back_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GCP_BUCKET_NAME", "from-env")
    monkeypatch.setenv("GCP_PROJECT", "project-from-env")

    storage = GCSStorage("doc")

    assert (storage.bucket_name, storage.project) == ("from-env", "project-from-env")
    assert storage.url_of("a b/c.txt") == "https://storage.googleapis.com/from-env/a%20b/c.txt"
    explicit = GCSStorage("doc", config=Config(GCP_BUCKET_NAME="mine", base_url="https://cdn.example/f"))
    assert explicit.bucket_name == "mine"
    assert explicit.url_of("a b.txt") == "https://cdn.example/f/a%20b.txt"


def test_without_the_sdk_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "google.cloud.storage", None)
    with pytest.raises(ImportError, match=r'pip install "filestore-fastapi\[gcp\]"'):
        GCSStorage("doc", config=Config(GCP_BUCKET_NAME="bucket"))


def test_importing_the_package_and_backend_never_imports_the_sdk() -> None:
    code = (
        "import sys, filestore_fastapi, filestore_fastapi.backends.gcs\n"
        "assert 'google.cloud.storage' not in sys.modules, 'SDK imported'\n"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


async def test_a_store_failure_is_a_generic_500_that_names_no_bucket(emulator: FakeGcsServer) -> None:
    storage = GCSStorage(
        "doc",
        config=Config(GCP_BUCKET_NAME="no-such-bucket-7f3a", endpoint_url=emulator.endpoint_url),
    )

    response = await post(upload_app(storage), ("doc", "a.txt", b"data", "text/plain"))

    assert response.status_code == 500
    assert response.json()["detail"][0]["msg"] == "the file could not be stored"
    assert "no-such-bucket" not in response.text
    assert "127.0.0.1" not in response.text


# -- the management side ------------------------------------------------------------------------


async def test_open_streams_the_object_in_chunks_and_delete_removes_it(
    emulator: FakeGcsServer, bucket: Any
) -> None:
    storage = make_storage(emulator, bucket, part_size=PART, chunk_size=256 * KiB)
    app = upload_app(storage)
    data = os.urandom(PART + 300 * KiB)
    file = await upload_one(app, "movie.mp4", data, "video/mp4")
    key = file["filename"]

    pieces = [piece async for piece in storage.open(key)]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        served = await client.get(f"/files/{key}")

    assert b"".join(pieces) == data
    assert max(len(p) for p in pieces) == 256 * KiB
    assert served.status_code == 200 and served.content == data
    await storage.delete(FileData.model_validate(file))
    assert names_in(bucket) == []
    await storage.delete(key)  # already gone: not an error
    with pytest.raises(FileNotFoundError):
        [piece async for piece in storage.open(key)]


def service_account_info() -> dict[str, str]:
    """A throwaway key: signing is local, and the emulator does not check signatures."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "type": "service_account",
        "project_id": "test-project",
        "private_key_id": "throwaway",
        "private_key": pem,
        "client_email": "uploader@test-project.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": "http://127.0.0.1:9/token",  # never used: nothing here needs a token
    }


@pytest.mark.parametrize("as_file", [False, True], ids=["credentials-object", "json-path"])
async def test_presigned_urls_upload_and_download_through_the_emulator(
    emulator: FakeGcsServer, bucket: Any, tmp_path: Path, as_file: bool
) -> None:
    info = service_account_info()
    credentials: Any = service_account.Credentials.from_service_account_info(info)  # type: ignore[no-untyped-call]
    if as_file:
        credentials = tmp_path / "key.json"
        credentials.write_text(json.dumps(info))
    storage = make_storage(emulator, bucket, GCP_CREDENTIALS=credentials)
    key = "direct/a photo.jpg"
    data = os.urandom(5000)

    put = await storage.presign_upload(key, expires_in=600, content_type="image/jpeg")
    get = await storage.presign_download(key, expires_in=600)
    async with httpx.AsyncClient() as client:
        uploaded = await client.request(put.method, put.url, content=data, headers=put.headers)
        downloaded = await client.request(get.method, get.url)

    assert (put.method, get.method) == ("PUT", "GET")
    # Without overwrite the PUT cannot replace an object: the precondition is sent and signed.
    assert put.headers == {"Content-Type": "image/jpeg", "x-goog-if-generation-match": "0"}
    signed = parse_qs(urlsplit(put.url).query)["X-Goog-SignedHeaders"][0].split(";")
    assert "x-goog-if-generation-match" in signed
    for url in (put.url, get.url):
        assert url.startswith(f"{emulator.endpoint_url}/{bucket.name}/{quote(key)}?")
        assert parse_qs(urlsplit(url).query)["X-Goog-Expires"] == ["600"]
    assert uploaded.status_code == 200, uploaded.text
    assert downloaded.status_code == 200 and downloaded.content == data
    stored = bucket.get_blob(key)
    assert stored.content_type == "image/jpeg"
    assert stored.download_as_bytes() == data
    expires = datetime.timedelta(seconds=int(parse_qs(urlsplit(get.url).query)["X-Goog-Expires"][0]))
    assert expires == datetime.timedelta(minutes=10)


async def test_presigned_upload_with_overwrite_sends_no_precondition(
    emulator: FakeGcsServer, bucket: Any
) -> None:
    credentials: Any = service_account.Credentials.from_service_account_info(service_account_info())  # type: ignore[no-untyped-call]
    storage = make_storage(emulator, bucket, GCP_CREDENTIALS=credentials, overwrite=True)
    put = await storage.presign_upload("direct/a.txt", content_type="text/plain")
    assert put.headers == {"Content-Type": "text/plain"}
    assert "x-goog-if-generation-match" not in put.url


async def test_presigning_without_a_key_to_sign_with_is_a_clear_error(
    emulator: FakeGcsServer, bucket: Any
) -> None:
    storage = make_storage(emulator, bucket)  # anonymous credentials
    with pytest.raises(ValueError, match="service-account key"):
        await storage.presign_download("any.txt")
