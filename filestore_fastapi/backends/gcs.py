"""GCSBackend: files streamed into a Google Cloud Storage bucket as they arrive.

The SDK (extra "gcp") is imported when a ``GCSBackend`` is built, never by
``import filestore_fastapi``. Every SDK call blocks, so each runs in the storage's own
threads (``Storage.workers``), and writes hop there once per upload chunk (``part_size``),
not once per network read. Every call waits at most ``connect_timeout`` to connect and
``read_timeout`` for each read, and is retried at most ``max_retries`` times; a clean-up
that fails all the same is handed to ``Storage.janitor``, which retries it after the request.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import datetime
import functools
import itertools
import logging
import os
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from ..buffer import ChunkBuffer
from ..config import Config
from ..extras import require
from ..filedata import FileData
from ..naming import claim_first_free, join_key, join_url, probe_key, target_keys
from .base import (
    Backend,
    Chunk,
    KeyTaken,
    NotFound,
    ObjectInfo,
    PresignedRequest,
    StorageUnavailable,
    StoredFile,
    Writer,
    WriterClosed,
    WriteRequest,
)
from .threads import wait, wait_out

if TYPE_CHECKING:
    from google.cloud.storage import Blob, Bucket
    from google.cloud.storage.fileio import BlobWriter

logger = logging.getLogger("filestore_fastapi")

T = TypeVar("T")

INSTALL_HINT = 'pip install "filestore-fastapi[gcp]"'
PUBLIC_ENDPOINT = "https://storage.googleapis.com"
#: Resumable-upload chunks other than the last must be a multiple of this (GCS rule).
CHUNK_MULTIPLE = 256 * 1024
#: Hidden objects are named ``.upload-<32 hex>`` + one of these, under the destination.
TEMP_PREFIX = ".upload-"
TEMP_SUFFIX = ".part"  # a large file's bytes, streamed before its name is settled
BACKUP_SUFFIX = ".bak"  # with overwrite=True, what the file replaced, until the request succeeds
HIDDEN_SUFFIXES = (TEMP_SUFFIX, BACKUP_SUFFIX)
CHECKSUM = "crc32c"
#: The longest back-off between two retries of one request, in seconds.
MAX_BACKOFF = 30.0
#: How many times an overwrite reads the key again because another request replaced it first.
MAX_REPLACE_ATTEMPTS = 16
COMPOSE_SOURCES = 32
"""The most objects one GCS compose request joins."""
#: What a cancelled session answers (499 is GCS's, and the emulator's) or a gone one.
SESSION_GONE = frozenset({200, 204, 404, 410, 499})


def _sdk() -> Any:
    """``google.cloud.storage``, or an ImportError that says which extra to install."""
    return require("google.cloud.storage", f"GCSStorage needs the Google Cloud Storage SDK: {INSTALL_HINT}")


def upload_chunk_size(config: Config) -> int:
    """``part_size`` rounded up to the 256 KiB multiple GCS requires."""
    return -(-config.part_size // CHUNK_MULTIPLE) * CHUNK_MULTIPLE


# -- retries ----------------------------------------------------------------------------------

_retries = threading.local()
"""``count``: the retries the SDK's requests made in this thread since ``_reset_retries``."""


def _reset_retries() -> None:
    _retries.count = 0


def _retried() -> bool:
    return int(getattr(_retries, "count", 0)) > 0


_cleaning = threading.local()
"""``now``: this thread runs a clean-up, whose calls get no retries of their own."""


def _once(action: Callable[[], None]) -> None:
    """``action()`` with one attempt per request: the janitor retries the whole clean-up, with
    its own back-off, and a request that failed should not wait out retries to clean up."""
    _cleaning.now = True
    try:
        action()
    finally:
        _cleaning.now = False


def retry_policy(config: Config) -> Any:
    """The ``retry=`` of every SDK call: what the SDK itself deems retryable (429, 5xx,
    connection errors, timeouts), at most ``max_retries`` times per request, after 1 s, 2 s,
    4 s ... (jittered, at most ``MAX_BACKOFF``), and no retry started once
    ``(max_retries + 1) * (connect_timeout + read_timeout)`` seconds have passed. ``None``
    (no retries) when ``max_retries`` is 0.

    google-api-core bounds retries by time only, hence a subclass that counts them, per
    request: the SDK uses one policy for every chunk of a resumable upload.
    """
    if config.max_retries == 0:
        return None
    from google.api_core.retry import Retry
    from google.cloud.storage.retry import _should_retry

    most = config.max_retries
    settings: dict[str, Any] = {
        "initial": 1.0,
        "maximum": MAX_BACKOFF,
        "multiplier": 2.0,
        "timeout": (most + 1) * (config.connect_timeout + config.read_timeout),
    }

    class CountedRetry(Retry):
        def __call__(self, func: Callable[..., Any], on_error: Any = None) -> Callable[..., Any]:
            @functools.wraps(func)
            def attempts(*args: Any, **kwargs: Any) -> Any:
                failures = itertools.count(1)

                def retryable(error: Exception) -> bool:
                    if not _should_retry(error) or next(failures) > most:
                        return False
                    _retries.count = int(getattr(_retries, "count", 0)) + 1
                    return True

                return Retry(predicate=retryable, **settings)(func, on_error)(*args, **kwargs)

            return attempts

    return CountedRetry(predicate=_should_retry, **settings)


# -- what a commit did to the key ---------------------------------------------------------------


@dataclass
class Placement:
    """What a commit did, or may have done, to its key: enough to undo it."""

    key: str
    replaced: int
    """The generation of the object it replaced; 0 when the key was free."""
    checksum: tuple[str, int] | None = None
    """(crc32c, size) of the object written, to recognise it if its answer was lost."""
    source: str | None = None
    """Or the temp object it was copied from, which has the same crc32c and size."""
    backup: str | None = None
    """With ``overwrite=True``, the hidden copy of the object it replaced."""
    generation: int | None = None
    """Ours on the key; None until the write has answered (or when its answer was lost)."""


def _crc32c_of(data: bytes) -> str:
    import google_crc32c

    value: int = google_crc32c.value(data)
    return base64.b64encode(value.to_bytes(4, "big")).decode()


class GCSWriter(Writer):
    """Holds at most one chunk, then hands it to a resumable upload session.

    A file that ends before filling one chunk is sent in a single request at commit (no
    session at all): with ``overwrite=False`` straight to the first free name, with
    ``overwrite=True`` onto the key after a backup of what it holds. A larger file streams
    into a hidden temp object, which ``commit`` finalises and copies to its name (again
    after a backup with ``overwrite=True``). ``abort`` cancels the session and removes
    whatever the commit had made; ``revert`` puts back what the file replaced, ``release``
    drops the backup.
    """

    def __init__(self, storage: GCSBackend, target: WriteRequest) -> None:
        self._storage = storage
        self._target = target
        self._pending = ChunkBuffer()
        self._aborted = False
        self._upload: BlobWriter | None = None
        self._upload_key: str | None = None
        self._temp: str | None = None  # a temp object that may exist
        self._composed: str | None = None  # the temp object ``compose_from`` made
        self._placed: Placement | None = None
        self._in_flight: concurrent.futures.Future[Any] | None = None

    async def write(self, chunk: Chunk) -> None:
        self._pending.append(chunk)
        if self._pending.size >= self._storage.chunk_size:
            chunks = self._pending.take()
            await self._in_thread(self._send, chunks)

    async def _in_thread(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` in the storage's threads. Cancelled, the call goes on: ``abort``
        waits it out, so its work never lands after the clean-up."""
        future = self._storage.workers.submit(function, *args)
        self._in_flight = future
        result = await wait(future)
        self._in_flight = None
        return result

    def _send(self, chunks: list[Chunk]) -> None:
        """Feed the session; the SDK sends each full chunk, checksummed, as it fills."""
        if self._upload is None:
            self._upload = self._start_session()
        for chunk in chunks:
            self._upload.write(chunk)

    def compose_from(self, sources: Sequence[str]) -> None:
        """Make the temp object the objects ``sources`` joined by GCS (``compose``, 32 at a
        time, each round's result the next one's first source): no byte passes through here.
        ``commit`` then copies it to its name, as it does a streamed file's temp object."""
        storage = self._storage
        bucket = storage.bucket()
        pending = list(sources)
        while pending:
            previous = self._temp
            batch = ([previous] if previous else []) + pending[: COMPOSE_SOURCES - bool(previous)]
            del pending[: COMPOSE_SOURCES - bool(previous)]
            key = storage.hidden_key(self._target.destination, TEMP_SUFFIX)
            blob = bucket.blob(key)
            blob.content_type = self._target.content_type
            self._temp = key  # from here abort removes it
            blob.compose(
                [bucket.blob(source) for source in batch],
                if_generation_match=0,
                timeout=storage.timeout,
                retry=storage.retry,
            )
            if previous is not None:
                storage.clean_up(f"the temp object {previous!r}", partial(storage.delete_key, previous))
        self._composed = self._temp

    def _start_session(self) -> BlobWriter:
        storage = self._storage
        self._upload_key = storage.hidden_key(self._target.destination, TEMP_SUFFIX)
        writer: BlobWriter = (
            storage.bucket()
            .blob(self._upload_key)
            .open(
                "wb",
                chunk_size=storage.chunk_size,
                ignore_flush=True,
                content_type=self._target.content_type,
                checksum=CHECKSUM,
                if_generation_match=0,
                timeout=storage.timeout,
                retry=storage.retry,
            )
        )
        return writer

    async def commit(self) -> StoredFile:
        if self._aborted:
            raise WriterClosed("commit() after abort(): nothing is stored")
        chunks = self._pending.take()
        placed = await self._in_thread(self._finish, chunks)
        return StoredFile(
            filename=placed.key,
            url=self._storage.url_of(placed.key),
            metadata={"bucket": self._storage.bucket_name, "key": placed.key},
        )

    def _finish(self, chunks: list[Chunk]) -> Placement:
        storage = self._storage
        put: Callable[[str, int], int]
        checksum: tuple[str, int] | None = None
        source: str | None
        if self._composed is not None:
            assert not chunks, "a composed object takes no more bytes"
            source = self._composed
            put = partial(self._put_copy, storage.bucket().blob(source))
        elif self._upload is None:
            data = b"".join(chunks)
            put = partial(self._put_data, data)
            checksum = (_crc32c_of(data), len(data))
            source = None
        else:
            self._send(chunks)
            self._temp = source = self._upload_key
            assert source is not None
            # Sends the last chunk with the whole object's crc32c. DataCorruption: the temp
            # object exists but holds what GCS received, not what we sent; abort deletes it.
            self._upload.close()
            self._upload = None
            put = partial(self._put_copy, storage.bucket().blob(source))
        if self._target.replaces(storage.config):
            placed = self._replace(put, checksum, source)
        else:
            placed = self._claim(put, checksum, source, probe=source is not None)
        temp, self._temp = self._temp, None
        if temp is not None:
            storage.clean_up(f"the temp object {temp!r}", partial(storage.delete_key, temp))
        return placed

    def _put_data(self, data: bytes, key: str, if_generation_match: int) -> int:
        blob = self._storage.bucket().blob(key)
        blob.upload_from_string(
            data,
            content_type=self._target.content_type,
            checksum=CHECKSUM,
            if_generation_match=if_generation_match,
            timeout=self._storage.timeout,
            retry=self._storage.retry,
        )
        return int(blob.generation)

    def _put_copy(self, source: Blob, key: str, if_generation_match: int) -> int:
        return self._storage.copy(source, key, if_generation_match=if_generation_match)

    def _write_placement(self, placed: Placement, put: Callable[[str, int], int]) -> bool:
        """``put`` the object on ``placed.key`` if it still holds ``placed.replaced``; False if
        it does not. A write whose answer is lost stays in ``_placed``, for abort to undo."""
        from google.api_core.exceptions import PreconditionFailed

        self._placed = placed
        _reset_retries()
        try:
            placed.generation = put(placed.key, placed.replaced)
        except PreconditionFailed:
            # A retry can find its own first attempt done: that is ours, not a conflict.
            generation = self._storage.generation_if_ours(placed) if _retried() else None
            if generation is None:
                self._placed = None
                return False
            placed.generation = generation
        return True

    def _claim(
        self,
        put: Callable[[str, int], int],
        checksum: tuple[str, int] | None,
        source: str | None,
        *,
        probe: bool,
    ) -> Placement:
        """``overwrite=False``: the first free name of ``doc.pdf``, ``doc-1.pdf``, ..., each
        claimed with ``ifGenerationMatch=0``; an ``exact`` target tries its one name only."""

        def create_if_absent(key: str) -> Placement | None:
            if probe and self._storage.get(key) is not None:
                return None  # a metadata read is cheaper than a refused copy
            placed = Placement(key, replaced=0, checksum=checksum, source=source)
            return placed if self._write_placement(placed, put) else None

        return claim_first_free(target_keys(self._target), create_if_absent)

    def _replace(
        self, put: Callable[[str, int], int], checksum: tuple[str, int] | None, source: str | None
    ) -> Placement:
        """``overwrite=True``: copy what the key holds to a hidden backup (pinned to the
        generation read), then write the file there on condition that it still holds that
        generation. Another request replacing it in between means reading it again."""
        from google.api_core.exceptions import NotFound, PreconditionFailed

        storage = self._storage
        key = join_key(self._target.destination, self._target.filename)
        for _ in range(MAX_REPLACE_ATTEMPTS):
            current = storage.get(key)
            placed = Placement(key, current.generation if current else 0, checksum=checksum, source=source)
            if current is not None:
                placed.backup = storage.hidden_key(self._target.destination, BACKUP_SUFFIX)
                self._placed = placed  # from here abort drops the backup
                try:
                    storage.copy(
                        current,
                        placed.backup,
                        if_generation_match=0,
                        if_source_generation_match=placed.replaced,
                    )
                except (NotFound, PreconditionFailed):
                    self._placed = None
                    continue  # replaced or deleted since it was read
            if self._write_placement(placed, put):
                return placed
            if placed.backup is not None:
                backup = placed.backup
                storage.clean_up(f"the backup {backup!r}", partial(storage.delete_key, backup))
        raise KeyTaken(f"{self._target.filename!r} kept changing while it was replaced")

    async def abort(self) -> None:
        self._aborted = True
        self._pending.clear()
        future, self._in_flight = self._in_flight, None
        if future is not None:
            await wait_out(future)
        await self._storage.workers.run(self._discard)

    def _discard(self) -> None:
        storage = self._storage
        upload, self._upload = self._upload, None
        if upload is not None:
            session = _unfinished_session(upload)
            if session is not None:
                cancel = partial(_cancel_session, *session, storage.timeout)
                storage.clean_up("an unfinished GCS upload session", cancel)
        placed, self._placed = self._placed, None
        temp, self._temp = self._temp, None
        if placed is not None:
            # One job: undoing a write whose answer was lost may need the temp object.
            storage.clean_up(f"the upload to {placed.key!r}", partial(storage.undo, placed, temp))
        elif temp is not None:
            storage.clean_up(f"the temp object {temp!r}", partial(storage.delete_key, temp))

    async def revert(self) -> None:
        placed, self._placed = self._placed, None
        if placed is not None:
            storage = self._storage
            await storage.workers.run(
                storage.clean_up, f"the upload to {placed.key!r}", partial(storage.undo, placed, None)
            )

    async def release(self) -> None:
        placed, self._placed = self._placed, None
        if placed is not None and placed.backup is not None:
            storage, backup = self._storage, placed.backup
            await storage.workers.run(
                storage.clean_up, f"the backup {backup!r}", partial(storage.delete_key, backup)
            )


def _unfinished_session(upload: BlobWriter) -> tuple[Any, str] | None:
    """(transport, session URL) if ``upload`` started a session it never finalised; and
    disarm the writer.

    ``BlobWriter.terminate()`` is not used: it sends its DELETE to the URL that *starts*
    an upload (``upload_url``), not to the session's (``resumable_url``), which leaves the
    session alive until GCS expires it a week later.
    """
    try:
        started = getattr(upload, "_upload_and_transport", None)
        if started:
            session, transport = started
            if session.resumable_url and not session.finished:
                return transport, str(session.resumable_url)
        return None
    finally:
        # A BlobWriter left open is closed by IOBase.__del__, and its close() *finalises*
        # the upload: closing its buffer (as terminate() does) makes close() a no-op.
        upload._buffer.close()


def _cancel_session(transport: Any, url: str, timeout: tuple[float, float]) -> None:
    """DELETE the session URL, so GCS drops the bytes it holds."""
    response = transport.delete(url, timeout=timeout)
    if response.status_code not in SESSION_GONE:
        raise RuntimeError(f"cancelling a GCS upload session answered HTTP {response.status_code}")


class GCSBackend(Backend):
    """Stores files in the bucket ``GCP_BUCKET_NAME`` under the key prefix ``destination``.

    Config: ``GCP_BUCKET_NAME`` (required; else the ``GCP_BUCKET_NAME`` environment
    variable), ``GCP_PROJECT`` (else ``$GCP_PROJECT``), ``GCP_CREDENTIALS`` (a credentials
    object or a service-account JSON path; Application Default Credentials when absent,
    anonymous when ``endpoint_url`` points at an emulator), ``endpoint_url``, ``part_size``
    (the upload chunk, rounded up to 256 KiB), ``overwrite``, ``base_url``,
    ``connect_timeout``, ``read_timeout``, ``max_retries``, ``max_threads``.

    Collision policy, ``overwrite=False``: the key gets a suffix (``doc.pdf``,
    ``doc-1.pdf``, ...), each candidate claimed with ``ifGenerationMatch=0``, a create
    that GCS refuses atomically when the name exists, so concurrent uploads of one name
    never replace each other nor a stored file. A file smaller than one chunk is claimed
    by its single upload request. A larger one streams into a hidden temp object
    (``.upload-<hex>.part`` under the prefix) that is then copied, server-side, to the
    first free name and deleted; within a bucket the copy moves no data, but it is a
    second object create, seen by Pub/Sub notifications, and on Nearline/Coldline/Archive
    buckets it is billed that class's minimum storage duration. Names already taken are
    skipped after a metadata read; the conditional copy is what settles a race. An
    ``exact`` write claims its one name the same way, with or without ``overwrite``.

    ``overwrite=True`` replaces the object, but only once the request has succeeded: the
    object there is first copied (server-side) to a hidden ``.upload-<hex>.bak``, pinned
    to the generation read, then the file is written onto the key on condition that it
    still holds that generation (a small file in one request, a large one copied from its
    temp object). A request that fails after all copies the backup back, on condition
    that the key still holds *its* object, so a later request's file is never undone; a
    request that succeeds deletes the backup. An overwrite of an existing object costs a
    metadata read, a copy and a delete more than a create (and the backup is billed like
    the temp object above).

    Failures: every SDK call waits at most ``connect_timeout`` to connect and
    ``read_timeout`` for each read, and is retried at most ``max_retries`` times (see
    ``retry_policy``). A clean-up that fails (cancelling a session, deleting a temp object
    or a backup, putting back a replaced object) is tried again by ``janitor``, with
    back-off, after the request; ``cleanup()`` deletes hidden objects left for longer.
    """

    storage_name = "gcs"

    def __init__(self, config: Config | None = None) -> None:
        super().__init__(config)
        _sdk()
        self.bucket_name = self.config.required_setting("GCP_BUCKET_NAME", "GCSStorage needs a bucket")
        self.project = self.config.setting("GCP_PROJECT")
        self.chunk_size = upload_chunk_size(self.config)
        self.timeout = (self.config.connect_timeout, self.config.read_timeout)
        """The ``timeout=`` of every SDK call: (connect, read) seconds."""
        self.retry = retry_policy(self.config)
        """The ``retry=`` of every SDK call (see ``retry_policy``)."""
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

    # -- blocking primitives (worker thread) ------------------------------------------------

    @staticmethod
    def hidden_key(destination: str, suffix: str) -> str:
        return join_key(destination, f"{TEMP_PREFIX}{uuid.uuid4().hex}{suffix}")

    def retry_here(self) -> Any:
        """``retry``, except in a clean-up (see ``clean_up``)."""
        return None if getattr(_cleaning, "now", False) else self.retry

    def get(self, key: str) -> Blob | None:
        """The object's metadata, or None."""
        blob: Blob | None = self.bucket().get_blob(key, timeout=self.timeout, retry=self.retry_here())
        return blob

    def copy(self, source: Blob, key: str, **conditions: int) -> int:
        """Copy ``source`` (its bytes and metadata; its ``generation`` if set) to ``key``,
        server-side; returns the new object's generation."""
        destination = self.bucket().blob(key)
        token, _, _ = destination.rewrite(source, **conditions, timeout=self.timeout, retry=self.retry_here())
        while token is not None:  # only when a copy must move data (other location/class)
            token, _, _ = destination.rewrite(
                source, token=token, **conditions, timeout=self.timeout, retry=self.retry_here()
            )
        return int(destination.generation)

    def delete_key(self, key: str, generation: int | None = None) -> None:
        """Delete one object (only if it is still ``generation``, when given); a missing one
        is already deleted."""
        from google.api_core.exceptions import NotFound, PreconditionFailed

        with contextlib.suppress(NotFound, PreconditionFailed):
            self.bucket().blob(key).delete(
                if_generation_match=generation, timeout=self.timeout, retry=self.retry_here()
            )

    def generation_if_ours(self, placed: Placement) -> int | None:
        """The generation on ``placed.key`` if it is the object ``placed`` wrote (same crc32c
        and size, and not what was there before), else None."""
        current = self.get(placed.key)
        if current is None or current.generation == placed.replaced:
            return None
        expected = placed.checksum
        if expected is None and placed.source is not None:
            source = self.get(placed.source)
            expected = (source.crc32c, source.size) if source is not None else None
        if expected is None or (current.crc32c, current.size) != expected:
            return None
        return int(current.generation)

    def undo(self, placed: Placement, temp: str | None = None) -> None:
        """Put back what ``placed`` replaced, or delete what it created, then drop its backup
        and ``temp``. Pinned to our generation: an object a later request put there stays.
        Safe to repeat (the janitor does, when it fails)."""
        from google.api_core.exceptions import NotFound, PreconditionFailed

        generation = placed.generation
        if generation is None:
            generation = self.generation_if_ours(placed)
        if generation is not None:
            if placed.backup is None:
                self.delete_key(placed.key, generation)
            else:
                with contextlib.suppress(NotFound, PreconditionFailed):
                    backup = self.bucket().blob(placed.backup)
                    self.copy(backup, placed.key, if_generation_match=generation)
        if placed.backup is not None:
            self.delete_key(placed.backup)
        if temp is not None:
            self.delete_key(temp)

    def clean_up(self, description: str, action: Callable[[], None]) -> None:
        """Try a clean-up now, once; if it fails, ``janitor`` tries it again after the request."""
        attempt = partial(_once, action)
        try:
            attempt()
        except Exception:
            logger.warning("could not clean up %s; retrying it in the background", description, exc_info=True)
            self.janitor.retry(description, attempt)

    # -- the Storage API --------------------------------------------------------------------

    async def open_writer(self, target: WriteRequest) -> Writer:
        return GCSWriter(self, target)

    async def open_composed(self, target: WriteRequest, sources: Sequence[ObjectInfo]) -> Writer:
        """A writer holding ``sources`` joined by GCS (``compose``): no byte through here."""
        writer = GCSWriter(self, target)
        try:
            await self.workers.run(writer.compose_from, [source.key for source in sources])
        except BaseException:
            with anyio.CancelScope(shield=True):
                await writer.abort()
            raise
        return writer

    async def delete(self, file: FileData | str) -> None:
        await self.workers.run(self.delete_key, _key_of(file))

    async def open(self, key: str) -> AsyncIterator[bytes]:
        """The object's bytes, fetched one ``part_size`` range per request, pinned to the
        generation found first so a concurrent overwrite cannot splice two versions."""
        blob = await self.workers.run(self._existing_blob, key)
        size, generation, step = int(blob.size or 0), blob.generation, self.chunk_size
        piece = self.config.chunk_size
        for start in range(0, size, step):
            fetch = partial(
                blob.download_as_bytes,
                start=start,
                end=min(start + step, size) - 1,
                if_generation_match=generation,
                checksum=None,  # a range has no whole-object checksum to compare with
                timeout=self.timeout,
                retry=self.retry,
            )
            data: bytes = await self.workers.run(self._fetch_range, key, fetch)
            for offset in range(0, len(data), piece):
                yield data[offset : offset + piece]

    @staticmethod
    def _fetch_range(key: str, fetch: Callable[[], bytes]) -> bytes:
        from google.api_core.exceptions import NotFound as Missing
        from google.api_core.exceptions import PreconditionFailed

        try:
            return fetch()
        except (Missing, PreconditionFailed):
            # The generation being read is gone: deleted, or replaced by another one.
            raise NotFound(f"object {key!r} was deleted or replaced while it was read") from None

    def _existing_blob(self, key: str) -> Blob:
        blob = self.get(key)
        if blob is None:
            raise NotFound(f"no object {key!r} in the bucket")
        return blob

    async def stat(self, key: str) -> ObjectInfo:
        blob = await self.workers.run(self._existing_blob, key)
        return ObjectInfo(key=key, size=int(blob.size or 0), content_type=blob.content_type)

    async def list_objects(self, prefix: str) -> list[ObjectInfo]:
        """Hidden ``.upload-*`` objects (temp parts, backups, probes) are left out."""
        return await self.workers.run(self._list_objects, prefix)

    def _list_objects(self, prefix: str) -> list[ObjectInfo]:
        blobs = self.bucket().list_blobs(prefix=prefix, timeout=self.timeout, retry=self.retry_here())
        found = [
            ObjectInfo(key=blob.name, size=int(blob.size or 0), content_type=blob.content_type)
            for blob in blobs
            if not blob.name.rsplit("/", 1)[-1].startswith(TEMP_PREFIX)
        ]
        # GCS lists in name order already; sorted so the contract does not rest on it.
        return sorted(found, key=lambda info: info.key)

    async def verify(self) -> None:
        """Read the bucket, then write and delete a hidden probe object under the destination."""
        await self.workers.run(self._verify)

    def _verify(self) -> None:
        from google.api_core.exceptions import Forbidden, Unauthorized
        from google.api_core.exceptions import NotFound as BucketNotFound

        where = f"bucket {self.bucket_name!r}"
        probe = probe_key(self.config.destination)
        try:
            self.bucket().reload(timeout=self.timeout, retry=self.retry_here())
            self.bucket().blob(probe).upload_from_string(b"", timeout=self.timeout, retry=self.retry_here())
            self.delete_key(probe)
        except BucketNotFound:
            raise StorageUnavailable(f"{where} does not exist") from None
        except (Forbidden, Unauthorized) as exc:
            raise StorageUnavailable(
                f"{where}: the credentials may not read and write it ({exc.code})"
            ) from None
        except Exception as exc:
            raise StorageUnavailable(f"{where} cannot be reached: {type(exc).__name__}") from None

    async def cleanup(self, older_than: datetime.timedelta = datetime.timedelta(days=1)) -> int:
        """Delete the hidden objects unfinished uploads left under the destination (temp
        ``.upload-*.part`` objects, ``.upload-*.bak`` backups) created more than
        ``older_than`` ago; returns how many were deleted.

        With a ``destination`` hook the whole bucket is listed. Unfinished resumable
        sessions cannot be listed at all: GCS drops each a week after it started.
        """
        return await self.workers.run(self._cleanup, older_than)

    def _cleanup(self, older_than: datetime.timedelta) -> int:
        from google.api_core.exceptions import NotFound, PreconditionFailed

        destination = self.config.destination
        prefix = "" if callable(destination) else join_key(str(destination), TEMP_PREFIX)
        cutoff = datetime.datetime.now(datetime.timezone.utc) - older_than
        removed = 0
        for blob in self.bucket().list_blobs(prefix=prefix, timeout=self.timeout, retry=self.retry):
            name = blob.name.rsplit("/", 1)[-1]
            if not (name.startswith(TEMP_PREFIX) and name.endswith(HIDDEN_SUFFIXES)):
                continue
            if blob.time_created is None or blob.time_created >= cutoff:
                continue
            try:
                blob.delete(if_generation_match=blob.generation, timeout=self.timeout, retry=self.retry)
            except (NotFound, PreconditionFailed):
                continue  # gone already, or a new object under that name
            removed += 1
        return removed

    async def presign_upload(
        self, key: str, *, expires_in: int = 3600, content_type: str | None = None
    ) -> PresignedRequest:
        """A V4 signed PUT; the client must send the returned headers with it. Without
        ``overwrite`` they include ``x-goog-if-generation-match: 0`` (signed, so a client
        cannot drop it): the PUT then cannot replace an existing object either."""
        conditions = {} if self.config.overwrite else {"x-goog-if-generation-match": "0"}
        url = await self.workers.run(self._sign, key, "PUT", expires_in, content_type, conditions)
        headers = {"Content-Type": content_type} if content_type else {}
        return PresignedRequest(method="PUT", url=url, headers={**headers, **conditions})

    async def presign_download(self, key: str, *, expires_in: int = 3600) -> PresignedRequest:
        """A V4 signed GET."""
        url = await self.workers.run(self._sign, key, "GET", expires_in, None, {})
        return PresignedRequest(method="GET", url=url)

    def _sign(
        self, key: str, method: str, expires_in: int, content_type: str | None, headers: dict[str, str]
    ) -> str:
        blob = self.bucket().blob(key)
        try:
            url: str = blob.generate_signed_url(
                version="v4",
                expiration=datetime.timedelta(seconds=expires_in),
                method=method,
                content_type=content_type,
                headers=dict(headers) or None,  # the SDK adds Host to the dict it is given
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
