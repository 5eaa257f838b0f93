"""Contract harness for GCSStorage against a fake-gcs-server on loopback.

Each storage gets a bucket of its own (and a key prefix in it), so ``leftovers`` can list
the whole bucket: a stray key outside the prefix, or a temp object, counts too. A GCS
resumable session holds no object until it is finalised and cannot be listed, so an
unfinished upload shows here only if it wrongly became an object.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from typing import Any

import anyio
from google.cloud import storage as gcs

from filestore_fastapi import Config, FileData, GCSStorage, Storage
from tests.emulators import FakeGcsServer


class Harness:
    name = "gcs"

    def __init__(self, server: FakeGcsServer) -> None:
        self._server = server
        self._client = gcs.Client(**server.client_kwargs())
        self._serial = itertools.count()

    def make(self, field: str, *, count: int = 1, required: bool = True, **config: Any) -> Storage:
        serial = next(self._serial)
        bucket = f"contract-{serial}"
        self._client.create_bucket(bucket)
        return GCSStorage(
            field,
            count,
            required,
            Config(
                destination=f"uploads/{serial}",
                GCP_BUCKET_NAME=bucket,
                GCP_PROJECT=self._server.project,
                endpoint_url=self._server.endpoint_url,
                **config,
            ),
        )

    async def read_back(self, storage: Storage, file: FileData) -> bytes:
        blob = self._client.bucket(_bucket(storage)).blob(file.filename)
        data: bytes = await anyio.to_thread.run_sync(blob.download_as_bytes)
        return data

    async def leftovers(self, storage: Storage) -> list[str]:
        bucket = _bucket(storage)
        return await anyio.to_thread.run_sync(
            lambda: sorted(blob.name for blob in self._client.list_blobs(bucket))
        )

    async def stored_content_type(self, storage: Storage, file: FileData) -> str | None:
        bucket = self._client.bucket(_bucket(storage))
        blob = await anyio.to_thread.run_sync(bucket.get_blob, file.filename)
        assert blob is not None, f"no object {file.filename!r}"
        content_type: str | None = blob.content_type
        return content_type


def _bucket(storage: Storage) -> str:
    assert isinstance(storage, GCSStorage)
    return storage.bucket_name


@contextlib.contextmanager
def open_harness() -> Iterator[Harness]:
    with FakeGcsServer() as server:
        yield Harness(server)
