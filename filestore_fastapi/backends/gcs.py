"""GCSStorage: files streamed into a Google Cloud Storage bucket as they arrive.

The SDK (extra "gcp") is imported when a ``GCSStorage`` is built, never by
``import filestore_fastapi``. Every SDK call blocks, so each runs in a worker thread,
and writes hop there once per upload chunk (``part_size``), not once per network read.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio

from ..config import Config
from ..dependency import Storage
from ..errors import UploadConflict
from ..extras import require
from ..filedata import FileData
from ..naming import join_key, join_url, unique_keys
from .base import Chunk, PresignedRequest, StoredFile, Writer, WriteRequest

if TYPE_CHECKING:
    from google.cloud.storage import Blob, Bucket
    from google.cloud.storage.fileio import BlobWriter

logger = logging.getLogger("filestore_fastapi")

INSTALL_HINT = 'pip install "filestore-fastapi[gcp]"'
PUBLIC_ENDPOINT = "https://storage.googleapis.com"
#: Resumable-upload chunks other than the last must be a multiple of this (GCS rule).
CHUNK_MULTIPLE = 256 * 1024
TEMP_PREFIX = ".upload-"
TEMP_SUFFIX = ".part"
CHECKSUM = "crc32c"


def _sdk() -> Any:
    """``google.cloud.storage``, or an ImportError that says which extra to install."""
    return require("google.cloud.storage", f"GCSStorage needs the Google Cloud Storage SDK: {INSTALL_HINT}")


def upload_chunk_size(config: Config) -> int:
    """``part_size`` rounded up to the 256 KiB multiple GCS requires."""
    return -(-config.part_size // CHUNK_MULTIPLE) * CHUNK_MULTIPLE


class GCSWriter(Writer):
    """Holds at most one chunk, then hands it to a resumable upload session.

    A file that ends before filling one chunk is sent in a single request instead (no
    session at all). A session's data becomes an object only when it is finalised in
    ``commit``; ``abort`` cancels the session, so nothing of the file remains.
    """

    def __init__(self, storage: GCSStorage, target: WriteRequest) -> None:
        self._storage = storage
        self._target = target
        self._pending: list[Chunk] = []
        self._pending_size = 0
        self._upload: BlobWriter | None = None
        self._upload_blob: Blob | None = None
        self._stored_keys: list[str] = []  # objects this writer made, newest last
        self._committed: str | None = None

    @property
    def _via_temp_key(self) -> bool:
        # Without overwrite, the session writes a hidden temp object that commit then
        # copies to a free name with a conditional write (see GCSStorage).
        return not self._storage.config.overwrite

    async def write(self, chunk: Chunk) -> None:
        self._pending.append(chunk)
        self._pending_size += len(chunk)
        if self._pending_size >= self._storage.chunk_size:
            chunks, self._pending, self._pending_size = self._pending, [], 0
            await anyio.to_thread.run_sync(self._send, chunks)

    def _send(self, chunks: list[Chunk]) -> None:
        """Feed the session; the SDK sends each full chunk, checksummed, as it fills."""
        if self._upload is None:
            self._upload = self._start_session()
        for chunk in chunks:
            self._upload.write(chunk)

    def _start_session(self) -> BlobWriter:
        bucket = self._storage.bucket()
        if self._via_temp_key:
            name = f"{TEMP_PREFIX}{uuid.uuid4().hex}{TEMP_SUFFIX}"
            key = join_key(self._target.destination, name)
        else:
            key = join_key(self._target.destination, self._target.filename)
        self._upload_blob = bucket.blob(key)
        writer: BlobWriter = self._upload_blob.open(
            "wb",
            chunk_size=self._storage.chunk_size,
            ignore_flush=True,
            content_type=self._target.content_type,
            checksum=CHECKSUM,
            if_generation_match=0 if self._via_temp_key else None,
        )
        return writer

    async def commit(self) -> StoredFile:
        chunks, self._pending, self._pending_size = self._pending, [], 0
        key = self._committed = await anyio.to_thread.run_sync(self._finish, chunks)
        return StoredFile(
            filename=key,
            url=self._storage.url_of(key),
            metadata={"bucket": self._storage.bucket_name, "key": key},
        )

    def _finish(self, chunks: list[Chunk]) -> str:
        if self._upload is None:
            return self._storage.create_object(self._target, b"".join(chunks))
        from google.cloud.storage.exceptions import DataCorruption

        self._send(chunks)
        upload_blob = self._upload_blob
        assert upload_blob is not None
        try:
            self._upload.close()  # sends the last chunk with the whole object's crc32c
        except DataCorruption:
            self._stored_keys.append(upload_blob.name)  # kept, but not what we sent: abort deletes it
            raise
        self._stored_keys.append(upload_blob.name)
        if not self._via_temp_key:
            return str(upload_blob.name)
        key = self._storage.claim_copy(self._target, upload_blob)
        self._stored_keys.append(key)
        self._storage.delete_key(upload_blob.name)
        return key

    async def abort(self) -> None:
        self._pending, self._pending_size = [], 0
        await anyio.to_thread.run_sync(self._discard)

    async def revert(self) -> None:
        key, self._committed = self._committed, None
        if key is not None:
            await self._storage.delete(key)

    def _discard(self) -> None:
        upload, self._upload = self._upload, None
        if upload is not None:
            _cancel_session(upload)
        while self._stored_keys:  # commit failed after the session had made objects
            self._storage.delete_key(self._stored_keys.pop())


def _cancel_session(upload: BlobWriter) -> None:
    """DELETE the session URL (unless it was finalised), so GCS drops the bytes it holds,
    and disarm the writer.

    ``BlobWriter.terminate()`` is not used: it sends its DELETE to the URL that *starts*
    an upload (``upload_url``), not to the session's (``resumable_url``), which leaves the
    session alive until GCS expires it a week later.
    """
    try:
        started = getattr(upload, "_upload_and_transport", None)
        if started:
            session, transport = started
            if session.resumable_url and not session.finished:
                response = transport.delete(session.resumable_url, timeout=30)
                if response.status_code not in (200, 204, 404, 410, 499):
                    logger.warning("cancelling a GCS upload session answered HTTP %s", response.status_code)
    finally:
        # A BlobWriter left open is closed by IOBase.__del__, and its close() *finalises*
        # the upload: closing its buffer (as terminate() does) makes close() a no-op.
        upload._buffer.close()


class GCSStorage(Storage):
    """Stores files in the bucket ``GCP_BUCKET_NAME`` under the key prefix ``destination``.

    Config: ``GCP_BUCKET_NAME`` (required; else the ``GCP_BUCKET_NAME`` environment
    variable), ``GCP_PROJECT`` (else ``$GCP_PROJECT``), ``GCP_CREDENTIALS`` (a credentials
    object or a service-account JSON path; Application Default Credentials when absent,
    anonymous when ``endpoint_url`` points at an emulator), ``endpoint_url``, ``part_size``
    (the upload chunk, rounded up to 256 KiB), ``overwrite``, ``base_url``.

    Collision policy, ``overwrite=False``: the key gets a suffix (``doc.pdf``,
    ``doc-1.pdf``, ...), each candidate claimed with ``ifGenerationMatch=0``, a create
    that GCS refuses atomically when the name exists, so concurrent uploads of one name
    never replace each other nor a stored file. A file smaller than one chunk is claimed
    by its single upload request. A larger one streams into a hidden temp object
    (``.upload-<hex>.part`` under the prefix) that is then copied, server-side, to the
    first free name and deleted; within a bucket the copy moves no data, but it is a
    second object create, seen by Pub/Sub notifications, and on Nearline/Coldline/Archive
    buckets it is billed that class's minimum storage duration. Names already taken are
    skipped after a metadata read; the conditional copy is what settles a race.
    ``overwrite=True`` streams straight to the key and replaces whatever is there.
    """

    storage_name = "gcs"

    def __init__(
        self, name: str, count: int = 1, required: bool = True, config: Config | None = None
    ) -> None:
        super().__init__(name, count, required, config)
        _sdk()
        self.bucket_name = self.config.required_setting("GCP_BUCKET_NAME", "GCSStorage needs a bucket")
        self.project = self.config.setting("GCP_PROJECT")
        self.chunk_size = upload_chunk_size(self.config)
        self._bucket: Bucket | None = None
        self._bucket_lock = threading.Lock()

    # -- the SDK client -------------------------------------------------------------------

    def bucket(self) -> Bucket:
        """The SDK bucket handle; its client is created on first use and then reused.

        Blocking (Application Default Credentials may ask the metadata server): call it
        from a worker thread.
        """
        with self._bucket_lock:
            if self._bucket is None:
                options = {"api_endpoint": self.config.endpoint_url} if self.config.endpoint_url else None
                client = _sdk().Client(
                    project=self.project, credentials=self._credentials(), client_options=options
                )
                self._bucket = client.bucket(self.bucket_name)
            return self._bucket

    def _credentials(self) -> Any:
        credentials = self.config.GCP_CREDENTIALS
        if isinstance(credentials, str | os.PathLike):
            from google.oauth2 import service_account

            return service_account.Credentials.from_service_account_file(os.fspath(credentials))  # type: ignore[no-untyped-call]
        if credentials is None and self.config.endpoint_url:
            from google.auth.credentials import AnonymousCredentials

            return AnonymousCredentials()  # type: ignore[no-untyped-call]
        return credentials

    def url_of(self, key: str) -> str | None:
        """``base_url`` + key, else the object's address on the endpoint in use."""
        if self.config.base_url is not None:
            return join_url(self.config.base_url, key)
        endpoint = (self.config.endpoint_url or PUBLIC_ENDPOINT).rstrip("/")
        return join_url(f"{endpoint}/{self.bucket_name}", key)

    # -- claiming a name (worker thread) ----------------------------------------------------

    def _candidates(self, target: WriteRequest) -> Iterator[str]:
        if self.config.overwrite:
            return iter([join_key(target.destination, target.filename)])
        return unique_keys(target.filename, target.destination)

    def create_object(self, target: WriteRequest, data: bytes) -> str:
        """Store a small file in one request under the first free candidate key."""
        from google.api_core.exceptions import PreconditionFailed

        bucket = self.bucket()
        for key in self._candidates(target):
            try:
                bucket.blob(key).upload_from_string(
                    data,
                    content_type=target.content_type,
                    checksum=CHECKSUM,
                    if_generation_match=None if self.config.overwrite else 0,
                )
            except PreconditionFailed:
                continue
            return key
        raise _no_free_name(target)

    def claim_copy(self, target: WriteRequest, source: Blob) -> str:
        """Copy the finished temp object to the first free candidate key."""
        from google.api_core.exceptions import PreconditionFailed

        bucket = self.bucket()
        for key in self._candidates(target):
            if not self.config.overwrite and bucket.get_blob(key) is not None:
                continue  # a metadata read is cheaper than a refused copy
            destination = bucket.blob(key)
            try:
                token, _, _ = destination.rewrite(source, if_generation_match=0)
                while token is not None:  # only when a copy must move data (other location/class)
                    token, _, _ = destination.rewrite(source, token=token, if_generation_match=0)
            except PreconditionFailed:
                continue
            return key
        raise _no_free_name(target)

    def delete_key(self, key: str) -> None:
        """Delete one object; a missing one is already deleted."""
        from google.api_core.exceptions import NotFound

        with contextlib.suppress(NotFound):
            self.bucket().blob(key).delete()

    # -- the Storage API --------------------------------------------------------------------

    async def open_writer(self, target: WriteRequest) -> Writer:
        return GCSWriter(self, target)

    async def delete(self, file: FileData | str) -> None:
        await anyio.to_thread.run_sync(self.delete_key, _key_of(file))

    async def open(self, key: str) -> AsyncIterator[bytes]:
        """The object's bytes, fetched one ``part_size`` range per request, pinned to the
        generation found first so a concurrent overwrite cannot splice two versions."""
        blob = await anyio.to_thread.run_sync(self._existing_blob, key)
        size, generation, step = int(blob.size or 0), blob.generation, self.chunk_size
        piece = self.config.chunk_size
        for start in range(0, size, step):
            fetch = partial(
                blob.download_as_bytes,
                start=start,
                end=min(start + step, size) - 1,
                if_generation_match=generation,
                checksum=None,  # a range has no whole-object checksum to compare with
            )
            data: bytes = await anyio.to_thread.run_sync(fetch)
            for offset in range(0, len(data), piece):
                yield data[offset : offset + piece]

    def _existing_blob(self, key: str) -> Blob:
        blob = self.bucket().get_blob(key)
        if blob is None:
            raise FileNotFoundError(f"no object {key!r} in the bucket")
        return blob

    async def presign_upload(
        self, key: str, *, expires_in: int = 3600, content_type: str | None = None
    ) -> PresignedRequest:
        """A V4 signed PUT; the client must send the returned headers with it."""
        url = await anyio.to_thread.run_sync(self._sign, key, "PUT", expires_in, content_type)
        headers = {"Content-Type": content_type} if content_type else {}
        return PresignedRequest(method="PUT", url=url, headers=headers)

    async def presign_download(self, key: str, *, expires_in: int = 3600) -> PresignedRequest:
        """A V4 signed GET."""
        url = await anyio.to_thread.run_sync(self._sign, key, "GET", expires_in, None)
        return PresignedRequest(method="GET", url=url)

    def _sign(self, key: str, method: str, expires_in: int, content_type: str | None) -> str:
        blob = self.bucket().blob(key)
        try:
            url: str = blob.generate_signed_url(
                version="v4",
                expiration=datetime.timedelta(seconds=expires_in),
                method=method,
                content_type=content_type,
                api_access_endpoint=self.config.endpoint_url or PUBLIC_ENDPOINT,
            )
        except AttributeError:
            # google-auth's way of saying these credentials hold no private key.
            raise ValueError(
                "signed URLs need credentials that can sign, e.g. a service-account key in GCP_CREDENTIALS"
            ) from None
        return url


def _key_of(file: FileData | str) -> str:
    if isinstance(file, str):
        return file
    key = file.metadata.get("key")
    return key if isinstance(key, str) else file.filename


def _no_free_name(target: WriteRequest) -> UploadConflict:
    field = target.field_name
    return UploadConflict(field, f"{field}: no free name for {target.filename!r}")
