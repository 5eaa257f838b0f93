"""A 512 MiB upload through a real uvicorn to S3 (moto), in bounded memory.

The app server's peak RSS is measured around the upload, and as many bytes are then sent
with plain boto3 (``upload_fileobj`` from a temp file) to the same emulator, so the two wall
times can be compared. Both rows are printed: ``pytest tests/e2e/test_large_upload_s3.py -q``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.contract.harness_s3 import moto_client
from tests.e2e.server import Server, measure_upload, post_file, run_uvicorn, write_file_of
from tests.emulators import MotoServer
from tests.httpclient import httpx

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MiB = 1024 * 1024
LARGE = 512 * MiB
PART_SIZE = 8 * MiB
RSS_BUDGET = 100 * MiB
BUCKET = "e2e-large"


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture(scope="module")
def s3(moto: MotoServer) -> S3Client:
    client = moto_client(moto)
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture(scope="module")
def server(moto: MotoServer, s3: S3Client) -> Iterator[Server]:
    env = {
        "AWS_BUCKET_NAME": BUCKET,
        "AWS_DEFAULT_REGION": moto.region,
        "AWS_ACCESS_KEY_ID": moto.access_key_id,
        "AWS_SECRET_ACCESS_KEY": moto.secret_access_key,
        "S3_ENDPOINT_URL": moto.endpoint_url,
        "S3_PART_SIZE": str(PART_SIZE),
    }
    with run_uvicorn("tests.e2e.apps.s3_app:app", env=env) as running:
        yield running


def post_stream(server: Server, size: int, filename: str) -> tuple[httpx.Response, str]:
    return post_file(f"{server.url}/s3", size, filename)


def stored_sha256(s3: S3Client, key: str) -> str:
    digest = hashlib.sha256()
    body = s3.get_object(Bucket=BUCKET, Key=key)["Body"]
    while block := body.read(PART_SIZE):
        digest.update(block)
    return digest.hexdigest()


def empty_bucket(s3: S3Client) -> None:
    for obj in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        s3.delete_object(Bucket=BUCKET, Key=obj["Key"])


def test_large_upload_streams_to_s3_in_bounded_memory(
    server: Server, s3: S3Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for size in (MiB, 3 * PART_SIZE):  # warm-up: imports, client, thread pools, connection pool
        response, _ = post_stream(server, size, "warm.bin")
        assert response.status_code == 200, response.text
    empty_bucket(s3)

    upload = measure_upload(server, "/s3", LARGE, "large.bin")
    response, digest, seconds, growth = upload.response, upload.sha256, upload.seconds, upload.peak_rss_growth

    assert response.status_code == 200, response.text
    [stored] = response.json()
    assert (stored["size"], stored["sha256"]) == (LARGE, digest)
    head = s3.head_object(Bucket=BUCKET, Key=stored["filename"])
    assert head["ETag"].endswith(f'-{LARGE // PART_SIZE}"')  # went up as a multipart upload
    assert stored_sha256(s3, stored["filename"]) == digest
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    empty_bucket(s3)  # moto keeps objects in memory

    plain_file = tmp_path / "plain.bin"
    write_file_of(LARGE, plain_file)
    started = time.perf_counter()
    with plain_file.open("rb") as handle:
        s3.upload_fileobj(handle, BUCKET, "plain/large.bin")
    sdk_seconds = time.perf_counter() - started
    assert s3.head_object(Bucket=BUCKET, Key="plain/large.bin")["ContentLength"] == LARGE
    empty_bucket(s3)

    with capsys.disabled():
        print(
            f"\nUpload of {LARGE // MiB} MiB to moto S3:\n"
            f"  S3Storage via uvicorn  peak RSS +{growth / MiB:6.1f} MiB   {seconds:6.2f} s"
            f"   ({LARGE / MiB / seconds:5.1f} MiB/s)\n"
            f"  boto3 upload_fileobj   from a temp file            {sdk_seconds:6.2f} s"
            f"   ({LARGE / MiB / sdk_seconds:5.1f} MiB/s)"
        )
    assert growth < RSS_BUDGET, f"peak RSS grew by {growth / MiB:.1f} MiB"
