"""AzureStorage: Azure Blob Storage (and Azurite) through azure-storage-blob.

A file streams as staged blocks of ``part_size``, each checked by the service against its
MD5 and going up while the next one fills; the block list is committed when the part ends.
A file no larger than one block goes up as a single Put Blob at commit. The SDK is imported
on first use only, so ``import filestore_fastapi`` never loads it.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import anyio

from ..config import Config
from ..dependency import Storage
from ..errors import UploadConflict
from ..extras import require
from ..filedata import FileData
from ..naming import join_key, join_url, unique_keys
from .base import Chunk, PresignedRequest, StoredFile, Writer, WriteRequest
from .parts import PartPipeline, join_releasing

if TYPE_CHECKING:
    from azure.storage.blob import BlobClient, BlobServiceClient, ContainerClient, ContentSettings

T = TypeVar("T")

INSTALL_HINT = 'AzureStorage needs azure-storage-blob: pip install "filestore-fastapi[azure]"'
IDENTITY_HINT = (
    "AzureStorage with AZURE_STORAGE_ACCOUNT_URL and no AZURE_STORAGE_CREDENTIAL uses "
    "DefaultAzureCredential: pip install azure-identity"
)
# A SAS that starts "now" fails on a service whose clock is slightly behind ours.
CLOCK_SKEW = timedelta(minutes=5)
CLAIM_BLOCK = 0
#: Seconds, at most, two uploads that claimed one name at once wait before the next name.
STEP_ASIDE_PAUSE = 0.05


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
    """

    def __init__(self, storage: AzureStorage, target: WriteRequest) -> None:
        self._storage = storage
        self._target = target
        self._token = uuid.uuid4().hex
        self._block_ids: list[str] = []
        self._blob: BlobClient | None = None
        """The blob our blocks are staged on, once its name is claimed."""
        self._committed: str | None = None
        self._pipeline = PartPipeline(storage.config.part_size, self._stage_part, storage.workers)

    def _block_id(self, index: int) -> str:
        return f"{self._token}-{index:06d}"  # index 0 is the claim block, never committed

    async def write(self, chunk: Chunk) -> None:
        await self._pipeline.write(chunk)

    async def commit(self) -> StoredFile:
        rest = await self._pipeline.finish()
        if not self._block_ids:
            stored = await anyio.to_thread.run_sync(self._put_whole, rest)
        else:
            stored = await anyio.to_thread.run_sync(self._commit_blocks, rest)
        self._committed = stored.filename
        return stored

    async def abort(self) -> None:
        await self._pipeline.cancel()
        blob, self._blob = self._blob, None
        if blob is not None:
            await anyio.to_thread.run_sync(self._storage.discard_staged_blocks, blob)

    async def revert(self) -> None:
        key, self._committed = self._committed, None
        if key is not None:
            await self._storage.delete(key)

    # -- blocking calls, run in a worker thread ------------------------------------------

    def _stage_part(self, pieces: list[Chunk], number: int) -> None:
        block_id = self._block_id(number)
        self._block_ids.append(block_id)
        data = join_releasing(pieces)
        if self._blob is None:
            self._blob = self._claim()
        self._blob.stage_block(block_id, data, validate_content=True)

    def _claim(self) -> BlobClient:
        """The blob this upload's blocks go to: with ``overwrite=False``, the first free name.

        Staged blocks belong to one blob name and a commit there discards everyone else's,
        so two uploads must never stage on one name. A name is free when nothing (blob or
        staged blocks) is there; it is ours once our one-byte claim block, staged there, is
        the only thing there. Two uploads that claim at the same moment both step aside,
        after a random pause so that they do not meet again on the next name.
        """
        storage, target = self._storage, self._target
        if storage.config.overwrite:
            return storage.blob(join_key(target.destination, target.filename))
        for key in unique_keys(target.filename, target.destination):
            blob = storage.blob(key)
            if storage.occupied(blob):
                continue
            blob.stage_block(self._block_id(CLAIM_BLOCK), b"\0")
            if storage.staged_only_by(blob, self._token):
                return blob
            time.sleep(random.uniform(0, STEP_ASIDE_PAUSE))
        raise self._conflict("no free name left")

    def _commit_blocks(self, pieces: list[Chunk]) -> StoredFile:
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError, ResourceExistsError
        from azure.storage.blob import BlobBlock

        if pieces:
            self._stage_part(pieces, len(self._block_ids) + 1)
        blob = self._blob
        assert blob is not None
        conditions: dict[str, Any] = {}
        if not self._storage.config.overwrite:
            conditions["match_condition"] = MatchConditions.IfMissing
        try:
            response = blob.commit_block_list(
                [BlobBlock(block_id) for block_id in self._block_ids],
                content_settings=self._content_settings(),
                validate_content=True,
                **conditions,
            )
        except ResourceExistsError:
            if not self._committed_here(blob):
                raise self._conflict("another upload of the same name finished first") from None
            response = {"etag": blob.get_blob_properties().etag}
        except HttpResponseError as exc:
            if getattr(exc, "error_code", None) != "InvalidBlockList":
                raise
            # Another commit to this name discarded our staged blocks (overwrite=True, or a race).
            raise self._conflict("another upload of the same name finished first") from None
        self._blob = None
        return self._storage.stored_file(blob.blob_name, str(response["etag"]))

    def _committed_here(self, blob: BlobClient) -> bool:
        """Whether the blob is made of our blocks: the SDK retried a commit whose reply was lost."""
        committed, _ = blob.get_block_list("committed")
        return [block.id for block in committed] == self._block_ids

    def _put_whole(self, pieces: list[Chunk]) -> StoredFile:
        from azure.core.exceptions import ResourceExistsError

        data = join_releasing(pieces)
        storage, target = self._storage, self._target
        options: dict[str, Any] = {"content_settings": self._content_settings(), "validate_content": True}
        if storage.config.overwrite:
            blob = storage.blob(join_key(target.destination, target.filename))
            response = blob.upload_blob(data, overwrite=True, **options)
            return storage.stored_file(blob.blob_name, str(response["etag"]))
        for key in unique_keys(target.filename, target.destination):
            blob = storage.blob(key)
            if storage.occupied(blob):
                continue  # a blob, or a larger upload of this name on its way there
            try:
                response = blob.upload_blob(data, overwrite=False, **options)
            except ResourceExistsError:
                continue
            return storage.stored_file(key, str(response["etag"]))
        raise self._conflict("no free name left")

    def _content_settings(self) -> ContentSettings:
        from azure.storage.blob import ContentSettings

        return ContentSettings(content_type=self._target.content_type)

    def _conflict(self, reason: str) -> UploadConflict:
        field = self._target.field_name
        return UploadConflict(field, f"{field}: {self._target.filename!r} could not be stored: {reason}")


class AzureStorage(Storage):
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
    (``UploadConflict``) rather than a replaced blob. With ``overwrite=True`` two simultaneous
    uploads of one name race too: the first commit discards the other's staged blocks, and the
    other gets 409.

    An aborted upload leaves nothing: Azure cannot drop staged blocks directly, so they are
    committed as an empty blob (only where no blob exists) that is deleted at once.
    """

    storage_name = "azure"

    def __init__(
        self, name: str, count: int = 1, required: bool = True, config: Config | None = None
    ) -> None:
        super().__init__(name, count, required, config)
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
        if self._connection_string:
            return BlobServiceClient.from_connection_string(self._connection_string, credential=credential)
        if credential is None:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
        assert self._account_url is not None
        return BlobServiceClient(self._account_url, credential=credential)

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
        """Call a blocking function (usually of the SDK) in a worker thread."""
        return await anyio.to_thread.run_sync(function, *args)

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

    def discard_staged_blocks(self, blob: BlobClient) -> None:
        """Drop the blocks staged on ``blob``'s name, if no blob exists there.

        Azure has no call for that; committing an empty block list discards them, and the
        empty blob it makes is deleted at once, only if nobody replaced it meanwhile. Where a
        blob exists the blocks stay invisible until the service drops them (within 7 days).
        """
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

        try:
            response = blob.commit_block_list([], match_condition=MatchConditions.IfMissing)
        except ResourceExistsError:
            return
        with contextlib.suppress(ResourceModifiedError, ResourceNotFoundError):
            blob.delete_blob(etag=str(response["etag"]), match_condition=MatchConditions.IfNotModified)

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
        from azure.core.exceptions import ResourceNotFoundError

        try:
            properties = self.blob(key).get_blob_properties()
        except ResourceNotFoundError:
            raise FileNotFoundError(f"no blob {key!r} in the container") from None
        return int(properties.size), str(properties.etag)

    def _read_range(self, key: str, offset: int, length: int, etag: str) -> bytes:
        from azure.core import MatchConditions

        downloader = self.blob(key).download_blob(
            offset=offset, length=length, etag=etag, match_condition=MatchConditions.IfNotModified
        )
        return downloader.readall()

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
