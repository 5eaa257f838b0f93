"""AzureBackend: Azure Blob Storage (and Azurite) through azure-storage-blob.

A file streams as staged blocks of ``part_size``, ``parts_in_flight`` of them going up while
the next one fills (over plain HTTP each checked by the service against its MD5; over HTTPS,
TLS does that); the block list is committed when the part ends.
A file no larger than one block goes up as a single Put Blob at commit. The SDK is imported
on first use only, so ``import filestore_fastapi`` never loads it.

Every blocking SDK call runs in the storage's own threads (``Storage.workers``), with the
connect and read timeouts and the retries of its ``Config``; a clean-up that fails (the
store is unreachable) is retried later by ``Storage.janitor``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import hashlib
import logging
import os
import random
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

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
from .parts import PartPipeline, PartReader, join_releasing
from .threads import wait, wait_out

if TYPE_CHECKING:
    from azure.storage.blob import BlobClient, BlobServiceClient, ContainerClient, ContentSettings

T = TypeVar("T")

logger = logging.getLogger("filestore_fastapi")

INSTALL_HINT = 'AzureStorage needs azure-storage-blob: pip install "filestore-fastapi[azure]"'
IDENTITY_HINT = (
    "AzureStorage with AZURE_STORAGE_ACCOUNT_URL and no AZURE_STORAGE_CREDENTIAL uses "
    'DefaultAzureCredential, from azure-identity: pip install "filestore-fastapi[azure]"'
)
# A SAS that starts "now" fails on a service whose clock is slightly behind ours.
CLOCK_SKEW = timedelta(minutes=5)
CLAIM_BLOCK = 0
#: Seconds, at most, two uploads that claimed one name at once wait before the next name.
STEP_ASIDE_PAUSE = 0.05
#: The SDK's back-off before retry n is ``RETRY_BACKOFF + RETRY_BACKOFF_BASE ** n`` seconds,
#: give or take ``RETRY_JITTER``: 1.5 s, 2.3 s, 3.4 s, 5.1 s, ... (its default: 18 s, 24 s, 42 s, ...).
RETRY_BACKOFF = 0.0
RETRY_BACKOFF_BASE = 1.5
RETRY_JITTER = 0.25
#: A blob an overwrite replaces is kept as ``<destination>/.upload-<hex>.bak`` until the request ends.
BACKUP_PREFIX = ".upload-"
BACKUP_SUFFIX = ".bak"
#: How often a pending server-side copy is looked at, in seconds.
COPY_POLL = 0.1
#: How often an overwrite takes a new backup when the blob keeps changing under it.
REPLACE_ATTEMPTS = 3


def _is_backup(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return base.startswith(BACKUP_PREFIX) and base.endswith(BACKUP_SUFFIX)


def _without_query(url: str) -> str:
    """A blob URL without its query: a SAS credential would otherwise travel in ``FileData.url``."""
    scheme, netloc, path, _, _ = urlsplit(url)
    return urlunsplit((scheme, netloc, path, "", ""))


class AzureWriter(Writer):
    """Streams one file as staged blocks of exactly ``part_size`` (see ``PartPipeline``),
    committed as one block list; a file of at most one block is a single Put Blob.

    Block ids are ``<upload token>-<index>``: deterministic within the upload and distinct
    from any other upload's, so a claim can tell whose staged blocks sit on a blob name.
    A commit lists the data blocks only, which discards the claim block.

    With ``overwrite=True`` a commit that replaces a blob first copies it (server-side) to a
    hidden backup ``<destination>/.upload-<token>.bak`` and then commits only if the blob is
    still the version copied. ``revert`` copies the backup back (only if nobody replaced our
    blob since) and ``release`` deletes it. Every clean-up that fails is retried by the
    storage's janitor.
    """

    def __init__(self, storage: AzureBackend, target: WriteRequest) -> None:
        self._storage = storage
        self._target = target
        self._token = uuid.uuid4().hex
        self._staged: set[int] = set()
        """The indexes of the data blocks staged: they finish in any order (``parts_in_flight``)."""
        self._block_ids: list[str] = []
        """The block list of the commit: every staged block, in index order."""
        self._blob: BlobClient | None = None
        """The blob our blocks are staged on, once its name is claimed; None once committed."""
        self._backup: BlobClient | None = None
        """The copy of the blob the commit replaces (``overwrite=True``), until release or revert."""
        self._committed: tuple[str, str] | None = None
        """The committed blob's name and etag, set in the worker thread the moment it commits."""
        self._commit_call: concurrent.futures.Future[StoredFile] | None = None
        config = storage.config
        self._pipeline = PartPipeline(
            config.part_size, self._stage_part, storage.workers, config.parts_in_flight, self._claim_name
        )
        self._aborted = False

    def _block_id(self, index: int) -> str:
        return f"{self._token}-{index:06d}"  # index 0 is the claim block, never committed

    async def write(self, chunk: Chunk) -> None:
        await self._pipeline.write(chunk)

    async def commit(self) -> StoredFile:
        if self._aborted:
            raise WriterClosed("commit() after abort(): nothing is stored")
        rest = await self._pipeline.finish()
        finish = self._put_whole if self._pipeline.parts_sent == 0 else self._commit_blocks
        self._commit_call = self._storage.workers.submit(finish, rest)
        return await wait(self._commit_call)

    async def abort(self) -> None:
        self._aborted = True
        await self._pipeline.cancel()
        if self._commit_call is not None:
            await wait_out(self._commit_call)  # cancelled while committing: it may land yet
        if self._committed is not None:
            await self.revert()  # it did land, though nobody was told
            return
        blob, backup = self._blob, self._backup
        self._blob = self._backup = None
        if blob is not None or backup is not None:
            what = f"the upload of {self._target.filename!r} to {self._target.destination!r}"
            await self._storage.clean_up(what, functools.partial(self._storage.discard, blob, backup))

    async def revert(self) -> None:
        committed, backup = self._committed, self._backup
        self._committed = self._backup = None
        if committed is not None:
            key, etag = committed
            await self._storage.clean_up(
                f"the replaced version of {key!r}" if backup else f"{key!r}",
                functools.partial(self._storage.restore, key, etag, backup),
            )

    async def release(self) -> None:
        backup, self._backup = self._backup, None
        self._committed = None
        if backup is not None:
            await self._storage.clean_up(
                f"the backup {backup.blob_name!r}", functools.partial(self._storage.discard, None, backup)
            )

    # -- blocking calls, run in the storage's worker threads ---------------------------------

    def _stage_part(self, pieces: list[Chunk], number: int) -> None:
        """Block ``number``; several at once (``parts_in_flight``), all after ``_claim_name``."""
        blob = self._blob
        assert blob is not None
        # The service checks a block against its MD5 over plain HTTP only (an emulator, a
        # private network). Over HTTPS, TLS already detects a changed byte on the wire, as the
        # SDK's docs of validate_content say; and MD5 (about 3 s a GiB on one core) was two
        # thirds of the CPU an upload cost, on the threads that send the blocks.
        validate = blob.scheme.lower() != "https"
        with PartReader(pieces) as body:  # not joined: see ``PartReader``
            pieces.clear()
            blob.stage_block(self._block_id(number), body, length=len(body), validate_content=validate)
        self._staged.add(number)

    def _claim_name(self) -> None:
        """Before the first block (the pipeline's ``start``)."""
        self._blob = self._claim()

    def _claim(self) -> BlobClient:
        """The blob this upload's blocks go to: with ``overwrite=False``, the first free name
        (an ``exact`` target's one name, whatever ``overwrite`` says).

        Staged blocks belong to one blob name and a commit there discards everyone else's,
        so two uploads must never stage on one name. A name is free when nothing (blob or
        staged blocks) is there; it is ours once our one-byte claim block, staged there, is
        the only thing there. Two uploads that claim at the same moment both step aside,
        after a random pause so that they do not meet again on the next name.
        """
        storage, target = self._storage, self._target
        if target.replaces(storage.config):
            return storage.blob(join_key(target.destination, target.filename))

        def stage_claim_block(key: str) -> BlobClient | None:
            blob = storage.blob(key)
            if storage.occupied(blob):
                return None
            blob.stage_block(self._block_id(CLAIM_BLOCK), b"\0")
            if storage.staged_only_by(blob, self._token):
                return blob
            time.sleep(random.uniform(0, STEP_ASIDE_PAUSE))
            return None

        return claim_first_free(target_keys(target), stage_claim_block)

    def _commit_blocks(self, pieces: list[Chunk]) -> StoredFile:
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError, ResourceExistsError
        from azure.storage.blob import BlobBlock

        assert not pieces  # the pipeline staged the last block too
        blob = self._blob
        assert blob is not None
        # In index order, whatever order they were staged in (every one was: the pipeline settled).
        self._block_ids = [self._block_id(index) for index in sorted(self._staged)]

        def commit(conditions: dict[str, Any]) -> str:
            response = blob.commit_block_list(
                [BlobBlock(block_id) for block_id in self._block_ids],
                content_settings=self._content_settings(),
                validate_content=True,
                **conditions,
            )
            return str(response["etag"])

        lost = "another upload of the same name finished first"
        try:
            if self._target.replaces(self._storage.config):
                etag = self._replace(blob, commit, self._committed_here, reason=lost)
            else:
                try:
                    etag = commit({"match_condition": MatchConditions.IfMissing})
                except ResourceExistsError:
                    found = self._committed_here(blob)
                    if found is None:
                        raise self._conflict(lost) from None
                    etag = found
        except HttpResponseError as exc:
            if getattr(exc, "error_code", None) != "InvalidBlockList":
                raise
            # Another commit to this name discarded our staged blocks (overwrite=True, or a race).
            raise self._conflict(lost) from None
        self._blob = None
        return self._stored(blob, etag)

    def _committed_here(self, blob: BlobClient) -> str | None:
        """The blob's etag if it is made of our blocks (the SDK retried a commit whose reply
        was lost), else None."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            committed, _ = blob.get_block_list("committed")
            etag = blob.get_blob_properties().etag
        except ResourceNotFoundError:
            return None
        return str(etag) if [block.id for block in committed] == self._block_ids else None

    def _put_whole(self, pieces: list[Chunk]) -> StoredFile:
        from azure.core.exceptions import ResourceExistsError

        data = join_releasing(pieces)
        storage, target = self._storage, self._target
        options: dict[str, Any] = {"content_settings": self._content_settings(), "validate_content": True}
        if target.replaces(storage.config):
            blob = storage.blob(join_key(target.destination, target.filename))

            def put(conditions: dict[str, Any]) -> str:
                return str(blob.upload_blob(data, overwrite=True, **options, **conditions)["etag"])

            md5 = hashlib.md5(data).digest()
            replacing = "other uploads of the same name kept replacing it"
            etag = self._replace(blob, put, lambda blob: self._put_here(blob, md5), reason=replacing)
            return self._stored(blob, etag)

        def put_if_absent(key: str) -> StoredFile | None:
            blob = storage.blob(key)
            if storage.occupied(blob):
                return None  # a blob, or a larger upload of this name on its way there
            try:
                response = blob.upload_blob(data, overwrite=False, **options)
            except ResourceExistsError:
                return None
            return self._stored(blob, str(response["etag"]))

        return claim_first_free(target_keys(target), put_if_absent)

    def _put_here(self, blob: BlobClient, md5: bytes) -> str | None:
        """The blob's etag if it holds our bytes and type (a Put Blob retried after its reply was
        lost), else None."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            properties = blob.get_blob_properties()
        except ResourceNotFoundError:
            return None
        settings = properties.content_settings
        ours = settings.content_md5 is not None and bytes(settings.content_md5) == md5
        return str(properties.etag) if ours and settings.content_type == self._target.content_type else None

    def _replace(
        self,
        blob: BlobClient,
        commit: Callable[[dict[str, Any]], str],
        ours: Callable[[BlobClient], str | None],
        *,
        reason: str,
    ) -> str:
        """``commit`` on ``blob``'s name (``overwrite=True``), keeping a backup of what it replaces.

        The commit is conditional on the version backed up (or on there being none), so the
        backup is exactly what it replaced. If the blob changed in between, ``ours`` tells
        whether that was our own commit retried by the SDK; else the backup is taken again,
        up to ``REPLACE_ATTEMPTS`` times, and then the request gets 409 (``reason``). (A commit
        of another upload there discards our staged blocks: that is a 409 at once.)
        """
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

        storage = self._storage
        for _ in range(REPLACE_ATTEMPTS):
            try:
                current = str(blob.get_blob_properties().etag)
            except ResourceNotFoundError:
                if self._backup is not None:  # from an earlier attempt: nothing to keep now
                    storage.discard(None, self._backup)
                    self._backup = None
                conditions: dict[str, Any] = {"match_condition": MatchConditions.IfMissing}
            else:
                backup = self._backup or storage.blob(join_key(self._target.destination, self._backup_name()))
                self._backup = backup
                try:
                    storage.copy(
                        blob,
                        backup,
                        source_etag=current,
                        source_match_condition=MatchConditions.IfNotModified,
                    )
                except (ResourceModifiedError, ResourceNotFoundError):
                    continue  # replaced or deleted since we looked
                conditions = {"etag": current, "match_condition": MatchConditions.IfNotModified}
            try:
                etag = commit(conditions)
            except (ResourceExistsError, ResourceModifiedError):
                found = ours(blob)
                if found is None:
                    continue
                etag = found
            self._committed = (blob.blob_name, etag)
            return etag
        raise self._conflict(reason)

    def _backup_name(self) -> str:
        return f"{BACKUP_PREFIX}{self._token}{BACKUP_SUFFIX}"

    def _stored(self, blob: BlobClient, etag: str) -> StoredFile:
        self._committed = (blob.blob_name, etag)
        return self._storage.stored_file(blob.blob_name, etag)

    def _content_settings(self) -> ContentSettings:
        from azure.storage.blob import ContentSettings

        return ContentSettings(content_type=self._target.content_type)

    def _conflict(self, reason: str) -> KeyTaken:
        return KeyTaken(f"{self._target.filename!r} could not be stored: {reason}")


class AzureBackend(Backend):
    """Stores files as block blobs in ``AZURE_STORAGE_CONTAINER`` under the prefix ``destination``.

    Connects with ``AZURE_STORAGE_CONNECTION_STRING``, else ``AZURE_STORAGE_ACCOUNT_URL`` with
    ``AZURE_STORAGE_CREDENTIAL`` (an account key, SAS token or token credential; without one,
    ``DefaultAzureCredential`` from azure-identity). Each key falls back to the environment
    variable of the same name when no connection key is configured. The container must exist.
    ``FileData.filename`` is the blob name; ``delete``, ``open`` and the presign methods take it.

    Collisions (``overwrite=False``): an existing blob is never replaced. The file gets the
    first free name of ``doc.pdf``, ``doc-1.pdf``, ..., and is written with Azure's conditional
    create (``If-None-Match: *`` on Put Blob and Put Block List), which fails atomically when
    the name exists. A file of several blocks claims its name (a one-byte block staged there)
    before its first block goes up, stepping aside from names where another upload is staging;
    in the rare race where another upload of that name commits first, the request gets 409
    (``KeyTaken``) rather than a replaced blob. With ``overwrite=True`` two simultaneous
    uploads of one name race too: the first commit discards the other's staged blocks, and the
    other gets 409. An ``exact`` write claims its one name the same way, with or without
    ``overwrite``: taken means ``KeyTaken``.

    With ``overwrite=True`` a request that fails after its commit leaves the blob it replaced
    as it was: the commit first copies that blob (server-side) to a hidden
    ``<destination>/.upload-<hex>.bak``, which is copied back if the request fails and deleted
    once it succeeds.

    An aborted upload leaves nothing: Azure cannot drop staged blocks directly, so they are
    committed as an empty blob (only where no blob exists) that is deleted at once. If the
    store cannot be reached then, the janitor tries again later; ``cleanup()`` removes what
    is left after that (a process killed mid-upload, say).
    """

    storage_name = "azure"

    def __init__(self, config: Config | None = None) -> None:
        super().__init__(config)
        require("azure.storage.blob", INSTALL_HINT)
        self.container_name = self.config.required_setting(
            "AZURE_STORAGE_CONTAINER", "AzureStorage needs a container"
        )
        connection_string = self.config.AZURE_STORAGE_CONNECTION_STRING
        account_url = self.config.AZURE_STORAGE_ACCOUNT_URL
        if not connection_string and not account_url:
            connection_string = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
            account_url = os.environ.get("AZURE_STORAGE_ACCOUNT_URL")
        if not connection_string and not account_url:
            raise ValueError(
                "AzureStorage needs an account: set AZURE_STORAGE_CONNECTION_STRING or "
                "AZURE_STORAGE_ACCOUNT_URL (config key or environment variable)"
            )
        if not connection_string and self.config.AZURE_STORAGE_CREDENTIAL is None:
            require("azure.identity", IDENTITY_HINT)
        self._connection_string = connection_string or None
        self._account_url = account_url or None
        self._service: BlobServiceClient | None = None
        self._container: ContainerClient | None = None
        self._client_lock = threading.Lock()

    def service(self) -> BlobServiceClient:
        """This storage's SDK client, made on first use (call it off the event loop)."""
        with self._client_lock:
            if self._service is None:
                self._service = self._make_service()
            return self._service

    def _make_service(self) -> BlobServiceClient:
        from azure.storage.blob import BlobServiceClient

        credential = self.config.AZURE_STORAGE_CREDENTIAL
        options = self._client_options()
        if self._connection_string:
            return BlobServiceClient.from_connection_string(
                self._connection_string, credential=credential, **options
            )
        if credential is None:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
        assert self._account_url is not None
        return BlobServiceClient(self._account_url, credential=credential, **options)

    def _client_options(self) -> dict[str, Any]:
        """Timeouts and retries from the config: each call makes at most ``1 + max_retries``
        attempts of ``connect_timeout`` + ``read_timeout`` each, with a short back-off between
        them (the SDK's own default is 10 retries, 15 s apart and more)."""
        from azure.storage.blob import ExponentialRetry

        config = self.config
        retries = config.max_retries
        policy: dict[str, Any] = {
            "initial_backoff": RETRY_BACKOFF,
            "increment_base": RETRY_BACKOFF_BASE,
            "random_jitter_range": RETRY_JITTER,
            "retry_total": retries,
            "retry_connect": retries,
            "retry_read": retries,
            "retry_status": retries,
        }
        return {
            "connection_timeout": config.connect_timeout,
            "read_timeout": config.read_timeout,
            "retry_policy": ExponentialRetry(**policy),
        }

    def container(self) -> ContainerClient:
        """The container's client, sharing the service client's connection pool."""
        service = self.service()
        with self._client_lock:
            if self._container is None:
                self._container = service.get_container_client(self.container_name)
            return self._container

    def blob(self, key: str) -> BlobClient:
        return self.container().get_blob_client(key)

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """Call a blocking function (usually of the SDK) in one of this storage's threads."""
        return await self.workers.run(function, *args)

    async def clean_up(self, description: str, action: Callable[[], None]) -> None:
        """Run a blocking clean-up in this storage's threads; if it fails (the store is
        unreachable, say), the janitor tries it again later, after the request."""
        try:
            await self.workers.run(action)
        except Exception:
            logger.warning("could not clean up %s; retrying later", description, exc_info=True)
            self.janitor.retry(description, action)

    async def open_writer(self, target: WriteRequest) -> Writer:
        return AzureWriter(self, target)

    def url_of(self, key: str) -> str:
        """Where the blob is served: ``base_url`` + key, else the blob URL (never with a SAS)."""
        if self.config.base_url is not None:
            return join_url(self.config.base_url, key) or ""
        return _without_query(self.blob(key).url)

    def stored_file(self, key: str, etag: str) -> StoredFile:
        return StoredFile(
            filename=key,
            url=self.url_of(key),
            metadata={"container": self.container_name, "blob": key, "etag": etag},
        )

    # -- blocking helpers for the writer ---------------------------------------------------

    def occupied(self, blob: BlobClient) -> bool:
        """Whether a blob, or any staged block, exists under this name."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            blob.get_block_list("all")
        except ResourceNotFoundError:
            return False
        return True

    def staged_only_by(self, blob: BlobClient, token: str) -> bool:
        """Whether the name holds no blob, and staged blocks of the upload ``token`` only."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            blob.get_blob_properties()
        except ResourceNotFoundError:
            pass
        else:
            return False
        try:
            _, uncommitted = blob.get_block_list("uncommitted")
        except ResourceNotFoundError:
            return False  # our block is gone too: someone committed and deleted meanwhile
        return bool(uncommitted) and all(block.id.startswith(token) for block in uncommitted)

    def discard_staged_blocks(self, blob: BlobClient) -> bool:
        """Drop the blocks staged on ``blob``'s name, if no blob exists there; whether it did.

        Azure has no call for that; committing an empty block list discards them, and the
        empty blob it makes is deleted at once, only if nobody replaced it meanwhile. Where a
        blob exists the blocks stay invisible until the service drops them (within 7 days).
        """
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

        try:
            response = blob.commit_block_list([], match_condition=MatchConditions.IfMissing)
        except ResourceExistsError:
            return False
        with contextlib.suppress(ResourceModifiedError, ResourceNotFoundError):
            blob.delete_blob(etag=str(response["etag"]), match_condition=MatchConditions.IfNotModified)
        return True

    def discard(self, blob: BlobClient | None, backup: BlobClient | None) -> None:
        """What an upload leaves when it ends: the blocks staged on ``blob``'s name (if no blob
        is there) and the ``backup`` of a replaced blob. Safe to repeat."""
        from azure.core.exceptions import ResourceNotFoundError

        if blob is not None:
            self.discard_staged_blocks(blob)
        if backup is not None:
            with contextlib.suppress(ResourceNotFoundError):
                backup.delete_blob()

    def copy(self, source: BlobClient, destination: BlobClient, **conditions: Any) -> None:
        """Copy ``source`` over ``destination`` server-side (bytes, content settings and
        metadata) and wait until it is done. ``conditions`` are the SDK's: ``source_etag`` and
        ``source_match_condition``, or ``etag`` and ``match_condition`` for the destination.

        Within one account the copy usually completes at once; a pending one is polled for
        ``read_timeout`` seconds at most, then aborted.
        """
        from azure.core.exceptions import HttpResponseError

        started = destination.start_copy_from_url(source.url, **conditions)
        status = started.get("copy_status")
        deadline = time.monotonic() + self.config.read_timeout
        while status == "pending":
            if time.monotonic() > deadline:
                with contextlib.suppress(HttpResponseError):
                    destination.abort_copy(str(started["copy_id"]))
                raise TimeoutError(f"copying to {destination.blob_name!r} did not finish in time")
            time.sleep(COPY_POLL)
            status = destination.get_blob_properties().copy.status
        if status != "success":
            raise RuntimeError(f"copying to {destination.blob_name!r} ended {status!r}")

    def restore(self, key: str, etag: str, backup: BlobClient | None) -> None:
        """Undo a commit that made version ``etag`` of ``key``: copy the ``backup`` of the blob it
        replaced back, or, if it replaced nothing, delete it. Only while the blob is still
        that version: another upload that replaced it since keeps its file. Safe to repeat
        (the janitor may), since a restored blob is no longer version ``etag``."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        blob = self.blob(key)
        ours: dict[str, Any] = {"etag": etag, "match_condition": MatchConditions.IfNotModified}
        if backup is None:
            with contextlib.suppress(ResourceModifiedError, ResourceNotFoundError):
                blob.delete_blob(delete_snapshots="include", **ours)
            return
        try:
            self.copy(backup, blob, **ours)
        except ResourceNotFoundError:
            return  # no backup any more: an earlier attempt restored it and deleted the backup
        except ResourceModifiedError:
            self._wait_for_copy_from(backup, blob)  # maybe it is an earlier attempt's copy
        self.discard(None, backup)

    def _wait_for_copy_from(self, source: BlobClient, blob: BlobClient) -> None:
        """Raise while ``blob`` is still being copied from ``source``: deleting the source now
        would break that copy (the janitor tries again later)."""
        from azure.core.exceptions import ResourceNotFoundError

        with contextlib.suppress(ResourceNotFoundError):
            copy = blob.get_blob_properties().copy
            if copy.status == "pending" and _without_query(copy.source or "") == _without_query(source.url):
                raise TimeoutError(f"{blob.blob_name!r} is still being restored")

    async def cleanup(self, older_than: timedelta = timedelta(days=1)) -> int:
        """Remove what uploads left under the destination (the whole container when
        ``destination`` is a hook) that is older than ``older_than``: the staged blocks of
        names that hold no blob, and hidden ``.upload-*.bak`` backups of replaced blobs.
        Returns how many names it cleaned. Two listings of the prefix, and one request per
        leftover.

        Run it from a scheduled job with ``older_than`` above your longest upload: a name
        whose staged blocks are younger may belong to an upload still under way.
        """
        return await self.workers.run(self._cleanup, datetime.now(timezone.utc) - older_than)

    def _cleanup(self, cutoff: datetime) -> int:
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        destination = self.config.destination
        prefix = "" if callable(destination) else join_key(str(destination), "")
        container = self.container()
        # Both listings come in name order: walking them side by side tells the names that
        # hold only staged blocks without a request per blob, or a set of every name.
        committed = (item.name for item in container.list_blobs(name_starts_with=prefix or None))
        next_committed = next(committed, None)
        removed = 0
        for item in container.list_blobs(name_starts_with=prefix or None, include=["uncommittedblobs"]):
            name = item.name
            while next_committed is not None and next_committed < name:
                next_committed = next(committed, None)
            if item.last_modified is None or item.last_modified >= cutoff:
                continue
            blob = container.get_blob_client(name)
            if next_committed != name:
                removed += self.discard_staged_blocks(blob)
            elif _is_backup(name):
                with contextlib.suppress(ResourceNotFoundError, ResourceModifiedError):
                    blob.delete_blob(if_unmodified_since=cutoff)
                    removed += 1
        return removed

    # -- management side -------------------------------------------------------------------

    @staticmethod
    def _key_of(file: FileData | str) -> str:
        return file.filename if isinstance(file, FileData) else file

    async def delete(self, file: FileData | str) -> None:
        """Delete the blob (and its snapshots); deleting a missing blob is not an error."""
        await self.run(self._delete, self._key_of(file))

    def _delete(self, key: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        with contextlib.suppress(ResourceNotFoundError):
            self.blob(key).delete_blob(delete_snapshots="include")

    async def open(self, key: str) -> AsyncIterator[bytes]:
        """Stream the blob in ``chunk_size`` ranges, all of the version that was there first."""
        size, etag = await self.run(self._size_and_etag, key)
        chunk_size = self.config.chunk_size
        for offset in range(0, size, chunk_size):
            yield await self.run(self._read_range, key, offset, min(chunk_size, size - offset), etag)

    def _size_and_etag(self, key: str) -> tuple[int, str]:
        properties = self._properties(key)
        return int(properties.size), str(properties.etag)

    def _properties(self, key: str) -> Any:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self.blob(key).get_blob_properties()
        except ResourceNotFoundError:
            raise NotFound(f"no blob {key!r} in the container") from None

    async def stat(self, key: str) -> ObjectInfo:
        properties = await self.run(self._properties, key)
        content_type = properties.content_settings.content_type
        return ObjectInfo(key=key, size=int(properties.size), content_type=content_type or None)

    async def list_objects(self, prefix: str) -> list[ObjectInfo]:
        """Committed blobs only (staged blocks are none); hidden ``.upload-*`` backups and
        probes are left out."""
        return await self.run(self._list_objects, prefix)

    def _list_objects(self, prefix: str) -> list[ObjectInfo]:
        found = [
            ObjectInfo(
                key=item.name,
                size=int(item.size or 0),
                content_type=item.content_settings.content_type or None,
            )
            for item in self.container().list_blobs(name_starts_with=prefix or None)
            if not item.name.rsplit("/", 1)[-1].startswith(BACKUP_PREFIX)
        ]
        # The service lists in name order already; sorted so the contract does not rest on it.
        return sorted(found, key=lambda info: info.key)

    async def verify(self) -> None:
        """Read the container, then write and delete a hidden probe blob under the destination."""
        await self.run(self._verify)

    def _verify(self) -> None:
        from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError

        where = f"container {self.container_name!r}"
        probe = self.blob(probe_key(self.config.destination))
        try:
            self.container().get_container_properties()
            probe.upload_blob(b"", overwrite=False)
            probe.delete_blob()
        except ResourceNotFoundError:
            raise StorageUnavailable(f"{where} does not exist") from None
        except ClientAuthenticationError:
            raise StorageUnavailable(f"{where}: the credentials were refused") from None
        except HttpResponseError as exc:
            raise StorageUnavailable(f"{where}: {exc.status_code} {exc.reason}") from None
        except Exception as exc:
            raise StorageUnavailable(f"{where} cannot be reached: {type(exc).__name__}") from None

    def _read_range(self, key: str, offset: int, length: int, etag: str) -> bytes:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        try:
            downloader = self.blob(key).download_blob(
                offset=offset, length=length, etag=etag, match_condition=MatchConditions.IfNotModified
            )
            return bytes(downloader.readall())
        except (ResourceNotFoundError, ResourceModifiedError):
            # The version being read is gone: deleted, or replaced by another one.
            raise NotFound(f"blob {key!r} was deleted or replaced while it was read") from None

    async def presign_upload(
        self, key: str, *, expires_in: int = 3600, content_type: str | None = None
    ) -> PresignedRequest:
        """A PUT a client can make without credentials (a SAS URL, create and write only).

        The headers must be sent as given: ``x-ms-blob-type`` is required by Azure, and
        without ``overwrite`` ``If-None-Match: *`` stops the PUT from replacing a blob.
        """
        headers = {"x-ms-blob-type": "BlockBlob"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        if not self.config.overwrite:
            headers["If-None-Match"] = "*"
        url = await self.run(self._sas_url, key, "cw", expires_in)
        return PresignedRequest(method="PUT", url=url, headers=headers)

    async def presign_download(self, key: str, *, expires_in: int = 3600) -> PresignedRequest:
        """A GET a client can make without credentials, valid for ``expires_in`` seconds."""
        url = await self.run(self._sas_url, key, "r", expires_in)
        return PresignedRequest(method="GET", url=url)

    def _sas_url(self, key: str, permission: str, expires_in: int) -> str:
        """Sign with the account key, or with a user delegation key under a token credential."""
        from azure.storage.blob import generate_blob_sas

        service = self.service()
        now = datetime.now(timezone.utc)
        start, expiry = now - CLOCK_SKEW, now + timedelta(seconds=expires_in)
        credential = service.credential
        signing: dict[str, Any]
        if getattr(credential, "account_key", None):
            signing = {"account_key": credential.account_key}
        elif hasattr(credential, "get_token"):
            signing = {"user_delegation_key": service.get_user_delegation_key(start, expiry)}
        else:
            raise ValueError(
                "presigned URLs need an account key or a token credential; "
                "this storage is configured with a SAS token"
            )
        assert service.account_name is not None
        sas = generate_blob_sas(
            service.account_name,
            self.container_name,
            key,
            permission=permission,
            expiry=expiry,
            start=start,
            **signing,
        )
        return f"{_without_query(self.blob(key).url)}?{sas}"
