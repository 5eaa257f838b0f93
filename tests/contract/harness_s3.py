"""Contract harness for S3Storage against a moto server on loopback.

Each storage gets a bucket of its own (and a key prefix in it), so ``leftovers`` can list
the whole bucket: a stray key outside the prefix counts too.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import anyio
import boto3

from filestore_fastapi import Config, FileData, S3Storage, Storage
from tests.emulators import MotoServer

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


class Harness:
    name = "s3"

    def __init__(self, server: MotoServer) -> None:
        self._server = server
        self._client = moto_client(server)
        self._serial = itertools.count()

    def make(self, field: str, *, count: int = 1, required: bool = True, **config: Any) -> Storage:
        serial = next(self._serial)
        bucket = f"contract-{serial}"
        self._client.create_bucket(Bucket=bucket)
        return S3Storage(
            field,
            count,
            required,
            Config(
                destination=f"uploads/{serial}",
                AWS_BUCKET_NAME=bucket,
                AWS_DEFAULT_REGION=self._server.region,
                endpoint_url=self._server.endpoint_url,
                **config,
            ),
        )

    async def read_back(self, storage: Storage, file: FileData) -> bytes:
        bucket = _bucket(storage)
        return await anyio.to_thread.run_sync(
            lambda: self._client.get_object(Bucket=bucket, Key=file.filename)["Body"].read()
        )

    async def leftovers(self, storage: Storage) -> list[str]:
        return await anyio.to_thread.run_sync(self._everything_in, _bucket(storage))

    async def stored_content_type(self, storage: Storage, file: FileData) -> str | None:
        bucket = _bucket(storage)
        head = await anyio.to_thread.run_sync(
            lambda: self._client.head_object(Bucket=bucket, Key=file.filename)
        )
        return head.get("ContentType")

    def _everything_in(self, bucket: str) -> list[str]:
        """Objects, unfinished multipart uploads and their parts, anywhere in the bucket."""
        found = [
            obj["Key"]
            for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for obj in page.get("Contents", [])
        ]
        for upload in self._client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            found.append(f"multipart:{upload['Key']}")
        return sorted(found)


def moto_client(server: MotoServer) -> S3Client:
    """A plain boto3 client of the emulator, to check what really is in the store."""
    client: S3Client = boto3.client(
        "s3",
        endpoint_url=server.endpoint_url,
        region_name=server.region,
        aws_access_key_id=server.access_key_id,
        aws_secret_access_key=server.secret_access_key,
    )
    return client


def _bucket(storage: Storage) -> str:
    assert isinstance(storage, S3Storage)
    return storage.bucket


@contextlib.contextmanager
def moto_credentials(server: MotoServer) -> Iterator[None]:
    """boto3's credential chain reads the environment: point it at moto's dummy keys."""
    keys = {"AWS_ACCESS_KEY_ID": server.access_key_id, "AWS_SECRET_ACCESS_KEY": server.secret_access_key}
    dropped = ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_SECURITY_TOKEN")
    saved = {name: os.environ.get(name) for name in [*keys, *dropped]}
    os.environ.update(keys)
    for name in dropped:
        os.environ.pop(name, None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def open_harness() -> Iterator[Harness]:
    with MotoServer() as server, moto_credentials(server):
        yield Harness(server)
