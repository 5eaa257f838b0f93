"""S3Backend: Amazon S3 and S3-compatible stores (MinIO, LocalStack, Spaces) through boto3.

A file streams as a multipart upload in ``part_size`` parts, ``parts_in_flight`` of them going
up while the next one fills; a file smaller than one part goes up as a single ``PutObject`` at
commit. boto3 is imported when an ``S3Backend`` is created, never by ``import filestore_fastapi``.

Every blocking call runs in the storage's own ``workers``, never in the thread pool the
app shares, and the client waits at most ``connect_timeout`` and ``read_timeout`` per
attempt, ``1 + max_retries`` attempts: a store that stops answering fails its requests in
bounded time and freezes nothing else. A clean-up that fails (the store is unreachable) is
handed to the storage's ``janitor``, which retries it once the request has ended.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
import secrets
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import IO, TYPE_CHECKING, Any, cast
from urllib.parse import quote

import anyio

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
    from botocore.response import StreamingBody
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

logger = logging.getLogger("filestore_fastapi")

INSTALL_HINT = 'S3Storage needs boto3: pip install "filestore-fastapi[s3]"'
NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})
# Without s3:ListBucket a missing key answers 403 to HEAD, as does listing uploads without
# s3:ListBucketMultipartUploads: unknown, so the conditional write alone decides.
DENIED = frozenset({"403", "AccessDenied"})
# 412 when the key exists; 409 when another conditional write to it is in progress.
TAKEN = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})

MiB = 1024 * 1024
COPY_LIMIT = 5 * 1024 * MiB
"""The largest object one CopyObject copies; a larger one takes a multipart copy."""
COPY_PART = 512 * MiB  # a multipart copy's parts are copied by S3 itself: large ones, few requests
MIN_PART, MAX_PARTS = 5 * MiB, 10_000
"""S3's bounds on a multipart upload: every part but the last at least 5 MiB, 10,000 parts."""
BACKUP_PREFIX, BACKUP_SUFFIX = ".upload-", ".bak"
"""A replaced object's hidden copy is ``<destination>/.upload-<random>.bak`` while its request
runs; no stored name starts with a dot, so it never collides with an upload."""
UNREADABLE = "unreadable"
"""What ``S3Backend._etag`` says of an object it may not HEAD (no ``s3:GetObject``)."""


@dataclass(frozen=True)
class _Backup:
    """The object an ``overwrite`` replaced, kept under ``key`` until its request has ended."""

    key: str
    etag: str
    """The replaced object's ETag (as HEAD gave it): the version the backup copied."""
    size: int
    restore_args: dict[str, Any] = field(default_factory=dict)
    """What a plain copy would not carry over: its storage class and encryption."""


def _error_code(exc: Exception) -> str | None:
    """The S3 error code of a botocore ``ClientError``, None for any other exception."""
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return None


def _plain(etag: str | None) -> str | None:
    """An ETag without its quotes: stores differ in whether an answer quotes it."""
    return etag.strip('"') if etag is not None else None


def _is_backup(key: str) -> bool:
    name = key.rsplit("/", 1)[-1]
    return name.startswith(BACKUP_PREFIX) and name.endswith(BACKUP_SUFFIX)


def _sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


class S3Writer(Writer):
    """Streams one file as a multipart upload, a part of exactly ``part_size`` at a time
    (see ``PartPipeline``); a file of at most one part is a single ``PutObject``.

    With ``overwrite``, the object a commit is about to replace is first copied (by S3) to
    a hidden backup key: ``revert`` copies it back, ``release`` deletes the copy."""

    def __init__(self, storage: S3Backend, target: WriteRequest) -> None:
        self._storage = storage
        self._target = target
        self._parts: dict[int, CompletedPartTypeDef] = {}
        """The parts uploaded, by number: they finish in any order (``parts_in_flight``)."""
        self._key: str | None = None
        self._upload_id: str | None = None
        self._committed: str | None = None
        self._etag: str | None = None  # of the object the commit wrote
        self._replacing: str | None = None  # the key whose object ``_backup`` holds
        self._backup: _Backup | None = None
        config = storage.config
        self._pipeline = PartPipeline(
            config.part_size, self._send_part, storage.workers, config.parts_in_flight, self._start_upload
        )
        self._aborted = False

    async def write(self, chunk: Chunk) -> None:
        await self._pipeline.write(chunk)

    async def commit(self) -> StoredFile:
        if self._aborted:
            raise WriterClosed("commit() after abort(): nothing is stored")
        rest = await self._pipeline.finish()
        whole = self._pipeline.parts_sent == 0 and not self._parts  # no part sent nor copied
        finish = self._put_whole if whole else self._finish_multipart
        key = await self._storage.workers.run(finish, rest)
        self._committed = key
        return self._storage._stored_file(key)

    async def abort(self) -> None:
        self._aborted = True
        await self._pipeline.cancel()
        storage = self._storage
        upload_id, self._upload_id = self._upload_id, None
        if upload_id is not None and self._key is not None:
            await storage.workers.run(storage._abort_or_retry, self._key, upload_id)
        backup, self._backup = self._backup, None
        if backup is not None and self._replacing is not None:
            # The commit failed after the backup: its write may have landed all the same.
            await self._put_back(self._replacing, None, backup)

    async def revert(self) -> None:
        key, self._committed = self._committed, None
        backup, self._backup = self._backup, None
        if key is not None:
            await self._put_back(key, self._etag, backup)

    async def release(self) -> None:
        self._committed = None
        backup, self._backup = self._backup, None
        if backup is not None:
            await self._storage.workers.run(self._storage._delete_or_retry, backup.key, "backup")

    async def _put_back(self, key: str, ours: str | None, backup: _Backup | None) -> None:
        storage = self._storage
        try:
            await storage.workers.run(storage._put_back, key, ours, backup)
        except Exception:
            logger.warning("could not put %s back as the failed upload found it; retrying later", key)
            what = f"s3 object {key!r} (putting back what a failed upload replaced)"
            storage.janitor.retry(what, functools.partial(storage._put_back, key, ours, backup))

    # -- blocking calls, run in the storage's worker threads --------------------------------

    @property
    def _client(self) -> S3Client:
        return self._storage.client()

    def _upload_args(self) -> dict[str, Any]:
        return {"ContentType": self._target.content_type, **self._storage.config.extra_args}

    def _start_upload(self) -> None:
        """Before the first part (the pipeline's ``start``): the key claimed, the upload started."""
        self._key, self._upload_id = self._claim_multipart_key()

    def _send_part(self, pieces: list[Chunk], number: int) -> None:
        """Part ``number``; several at once (``parts_in_flight``), all after ``_start_upload``.

        The body is the pieces read as a stream (``PartReader``), never joined: bytes would be
        joined again by botocore to the request head, two copies of every part in flight."""
        assert self._key is not None and self._upload_id is not None
        digest = hashlib.sha256()
        for piece in pieces:
            digest.update(piece)
        checksum = base64.b64encode(digest.digest()).decode()
        with PartReader(pieces) as body:
            pieces.clear()
            response = self._client.upload_part(
                Bucket=self._storage.bucket,
                Key=self._key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=cast("IO[bytes]", body),
                ContentLength=len(body),
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=checksum,
            )
        self._parts[number] = {"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": checksum}

    def copy_part(self, number: int, source: str) -> None:
        """Part ``number`` copied by S3 from the object ``source`` (``open_composed``)."""
        assert self._key is not None and self._upload_id is not None
        response = self._client.upload_part_copy(
            Bucket=self._storage.bucket,
            Key=self._key,
            UploadId=self._upload_id,
            PartNumber=number,
            CopySource={"Bucket": self._storage.bucket, "Key": source},
        )
        result = response["CopyPartResult"]
        part: CompletedPartTypeDef = {"PartNumber": number, "ETag": result["ETag"]}
        if "ChecksumSHA256" in result:
            part["ChecksumSHA256"] = result["ChecksumSHA256"]
        self._parts[number] = part

    def _keep_previous(self, key: str) -> None:
        """``overwrite``: copy the object the commit is about to replace, if there is one."""
        self._replacing = key
        self._backup = self._storage._back_up(key, self._target.destination)

    def _finish_multipart(self, pieces: list[Chunk]) -> str:
        assert not pieces  # the pipeline sent the last part too
        assert self._key is not None and self._upload_id is not None
        overwrite = self._target.replaces(self._storage.config)
        if overwrite:
            self._keep_previous(self._key)
        conditions: dict[str, Any] = {} if overwrite else {"IfNoneMatch": "*"}
        try:
            response = self._client.complete_multipart_upload(
                Bucket=self._storage.bucket,
                Key=self._key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": [self._parts[number] for number in sorted(self._parts)]},
                **conditions,
            )
        except Exception as exc:
            if _error_code(exc) in TAKEN:
                # Another upload of the same name finished under this key after we claimed it.
                raise self._conflict("another upload of the same name finished first") from None
            raise
        self._upload_id = None
        self._etag = _plain(response.get("ETag"))
        return self._key

    def _put_whole(self, pieces: list[Chunk]) -> str:
        data = join_releasing(pieces)
        storage, target = self._storage, self._target
        put_args = {
            "Bucket": storage.bucket,
            "Body": data,
            "ChecksumAlgorithm": "SHA256",
            "ChecksumSHA256": _sha256_b64(data),
            **self._upload_args(),
        }
        if target.replaces(storage.config):
            key = join_key(target.destination, target.filename)
            self._keep_previous(key)
            self._etag = _plain(self._client.put_object(Key=key, **put_args).get("ETag"))
            return key

        def put_if_absent(key: str) -> str | None:
            if storage._uploads_in_progress(key):
                return None  # a larger file of this name is on its way there
            try:
                response = self._client.put_object(Key=key, IfNoneMatch="*", **put_args)
            except Exception as exc:
                if _error_code(exc) in TAKEN:
                    return None
                raise
            self._etag = _plain(response.get("ETag"))
            return key

        return claim_first_free(target_keys(target), put_if_absent)

    def _claim_multipart_key(self) -> tuple[str, str]:
        """Start the multipart upload under the first free key.

        An upload's key is fixed when it starts, so a free key is claimed then: not an
        object, no other upload in progress for it, checked again once ours is visible.
        Two uploads that start at the same moment both step aside; one that finishes
        in between is caught by the ``If-None-Match`` of the completion.
        """
        storage, target = self._storage, self._target
        if target.replaces(storage.config):
            key = join_key(target.destination, target.filename)
            return key, self._create_upload(key)

        def start_if_alone(key: str) -> tuple[str, str] | None:
            if storage._exists(key) or storage._uploads_in_progress(key):
                return None
            upload_id = self._create_upload(key)
            try:
                if not storage._uploads_in_progress(key, besides=upload_id) and not storage._exists(key):
                    return key, upload_id
            except BaseException:
                storage._abort_or_retry(key, upload_id)
                raise
            storage._abort_or_retry(key, upload_id)
            return None

        return claim_first_free(target_keys(target), start_if_alone)

    def _create_upload(self, key: str) -> str:
        response = self._client.create_multipart_upload(
            Bucket=self._storage.bucket, Key=key, ChecksumAlgorithm="SHA256", **self._upload_args()
        )
        return response["UploadId"]

    def _conflict(self, reason: str) -> KeyTaken:
        return KeyTaken(f"{self._target.filename!r} could not be stored: {reason}")


class S3Backend(Backend):
    """Stores files as objects in ``AWS_BUCKET_NAME`` under the key prefix ``destination``.

    Credentials come from boto3's standard chain (environment, shared credentials file,
    instance role). ``FileData.filename`` is the object key; ``delete``, ``open`` and the
    presign methods take that key.

    Collisions (``overwrite=False``): an existing object is never replaced. The file gets
    the first free key of ``doc.pdf``, ``doc-1.pdf``, ... claimed with S3's conditional
    write (``If-None-Match: *`` on ``PutObject`` and ``CompleteMultipartUpload``), which
    fails atomically when the key exists, so concurrent uploads of one name never replace
    each other. A multipart upload fixes its key when it starts, so it claims the key then
    (no object, no other upload under way, checked again once its own is listed): two
    multipart uploads never pick one key. Should a small file of that name land there
    during that check, the completion is refused and the request gets 409
    (``KeyTaken``) rather than replacing it. Stores without conditional writes
    ignore the header or refuse it; use them with ``overwrite=True`` or unique names.
    The search for a free key of a multipart upload needs ``s3:ListBucket`` and
    ``s3:ListBucketMultipartUploads``; without them a large file whose name is taken is
    refused with 409 (small files still get their suffix). An ``exact`` write claims
    its one key the same way, with or without ``overwrite``: taken means ``KeyTaken``.
    """

    storage_name = "s3"

    def __init__(self, config: Config | None = None) -> None:
        super().__init__(config)
        require("boto3", INSTALL_HINT)
        self.bucket = self.config.required_setting("AWS_BUCKET_NAME", "S3Storage needs a bucket")
        self.region = self.config.setting("AWS_DEFAULT_REGION")
        self._client: S3Client | None = None
        self._client_lock = threading.Lock()

    def client(self) -> S3Client:
        """This storage's boto3 client, made on first use (blocking: call it off the loop)."""
        with self._client_lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self) -> S3Client:
        import boto3
        from botocore.config import Config as BotoConfig

        config = self.config
        options: dict[str, Any] = {
            # Our SHA-256 checksums only: no extra CRC per request, none baked into presigned URLs.
            "request_checksum_calculation": "when_required",
            "max_pool_connections": max(32, config.max_threads + 1),  # + the janitor
            # botocore would presign with the legacy SigV2 otherwise, which newer regions refuse.
            "signature_version": "s3v4",
            # Bounded waits: a store that stops answering fails a call after at most
            # (1 + max_retries) * read_timeout, whatever the environment or profile says.
            "connect_timeout": config.connect_timeout,
            "read_timeout": config.read_timeout,
            "retries": {"total_max_attempts": config.max_retries + 1, "mode": "standard"},
            # Bodies are not hashed again for the signature (UNSIGNED-PAYLOAD): every part and
            # object carries its SHA-256 in a signed header, which S3 checks the body against.
            # botocore skips that hash over HTTPS already; over plain HTTP (an emulator, MinIO
            # in a private network) it would be a second SHA-256 pass over every byte.
            "s3": {"payload_signing_enabled": False},
        }
        if self.config.endpoint_url:
            # <endpoint>/<bucket>/<key>: compatible stores rarely resolve <bucket>.<host>.
            options["s3"]["addressing_style"] = "path"
        session = boto3.session.Session(region_name=self.region)
        return session.client("s3", endpoint_url=self.config.endpoint_url, config=BotoConfig(**options))

    async def open_writer(self, target: WriteRequest) -> Writer:
        return S3Writer(self, target)

    async def open_composed(self, target: WriteRequest, sources: Sequence[ObjectInfo]) -> Writer:
        """A multipart upload whose parts S3 copies from ``sources`` (``UploadPartCopy``),
        no byte through this process. Each source but the last must make a whole part
        (5 MiB to 5 GiB), else ``NotImplementedError``: the caller streams them instead."""
        if not sources or len(sources) > MAX_PARTS or any(s.size > COPY_LIMIT for s in sources):
            raise NotImplementedError("S3 joins 1 to 10,000 objects of at most 5 GiB")
        if any(source.size < MIN_PART for source in sources[:-1]):
            raise NotImplementedError("S3 joins objects of 5 MiB or more (but the last)")
        writer = S3Writer(self, target)
        copies = []
        try:
            await self.workers.run(writer._start_upload)
            # In the storage's threads: at most max_threads copies at once, no bytes held here.
            copies = [self.workers.submit(writer.copy_part, n, s.key) for n, s in enumerate(sources, 1)]
            for copy in copies:
                await wait(copy)
        except BaseException:
            with anyio.CancelScope(shield=True):
                for copy in copies:
                    await wait_out(copy)
                await writer.abort()
            raise
        return writer

    def url_of(self, key: str) -> str:
        """Where the object is served: ``base_url``, the endpoint, or the public S3 URL."""
        if self.config.base_url is not None:
            return join_url(self.config.base_url, key) or ""
        if self.config.endpoint_url:
            return f"{self.config.endpoint_url.rstrip('/')}/{self.bucket}/{quote(key)}"
        region = self.region or self.client().meta.region_name or "us-east-1"
        return f"https://{self.bucket}.s3.{region}.amazonaws.com/{quote(key)}"

    def _stored_file(self, key: str) -> StoredFile:
        return StoredFile(filename=key, url=self.url_of(key), metadata={"bucket": self.bucket, "key": key})

    def _exists(self, key: str) -> bool:
        try:
            self.client().head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if _error_code(exc) in NOT_FOUND | DENIED:
                return False
            raise
        return True

    def _uploads_in_progress(self, key: str, *, besides: str | None = None) -> bool:
        """Whether a multipart upload to exactly ``key`` (other than ``besides``) is under way.

        The listing is sorted by key, so the exact key's uploads come first in one page.
        """
        try:
            response = self.client().list_multipart_uploads(Bucket=self.bucket, Prefix=key)
        except Exception as exc:
            if _error_code(exc) in DENIED:
                return False
            raise
        return any(u.get("Key") == key and u.get("UploadId") != besides for u in response.get("Uploads", []))

    def _etag(self, key: str) -> str | None:
        """The ETag of the object at ``key``; None if there is none, ``UNREADABLE`` if we may not look."""
        try:
            return _plain(self.client().head_object(Bucket=self.bucket, Key=key)["ETag"])
        except Exception as exc:
            code = _error_code(exc)
            if code in NOT_FOUND:
                return None
            if code in DENIED:
                return UNREADABLE
            raise

    # -- overwrite: keeping the replaced object until its request has ended --------------------

    def _back_up(self, key: str, destination: str) -> _Backup | None:
        """Copy the object at ``key`` (if any) to a hidden key under ``destination``."""
        try:
            head = self.client().head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            code = _error_code(exc)
            if code in NOT_FOUND:
                return None
            if code in DENIED:  # without s3:GetObject it could not be copied either
                logger.warning("overwrite without s3:GetObject: %s is replaced without a backup", key)
                return None
            raise
        encryption: dict[str, Any] = {}  # a backup as encrypted as the original
        if "ServerSideEncryption" in head:
            encryption["ServerSideEncryption"] = head["ServerSideEncryption"]
        if "SSEKMSKeyId" in head:
            encryption["SSEKMSKeyId"] = head["SSEKMSKeyId"]
        restore_args = dict(encryption)  # the backup itself stays in the standard class
        if "StorageClass" in head:
            restore_args["StorageClass"] = head["StorageClass"]
        backup = _Backup(
            key=join_key(destination, f"{BACKUP_PREFIX}{secrets.token_hex(8)}{BACKUP_SUFFIX}"),
            etag=head["ETag"],
            size=head["ContentLength"],
            restore_args=restore_args,
        )
        # If-Match: exactly the version we looked at, or the copy fails (and so the upload).
        self._copy(key, backup.key, backup.size, {"CopySourceIfMatch": backup.etag, **encryption})
        return backup

    def _copy(self, source: str, target: str, size: int, args: dict[str, Any]) -> None:
        """A server-side copy with the source's metadata, content type and tags; one
        CopyObject up to 5 GiB, a multipart copy (boto3's managed copy) above."""
        copy_source: Any = {"Bucket": self.bucket, "Key": source}
        args = {"MetadataDirective": "COPY", **args}
        if size < COPY_LIMIT:
            self.client().copy_object(Bucket=self.bucket, Key=target, CopySource=copy_source, **args)
            return
        from boto3.s3.transfer import TransferConfig

        # In this thread (no threads of s3transfer's own), in large parts.
        managed = TransferConfig(
            multipart_threshold=COPY_LIMIT, multipart_chunksize=COPY_PART, use_threads=False
        )
        self.client().copy(copy_source, self.bucket, target, ExtraArgs=args, Config=managed)

    def _put_back(self, key: str, ours: str | None, backup: _Backup | None) -> None:
        """Leave ``key`` as a failed upload found it: the object it replaced copied back from
        ``backup``, or none if it replaced none. ``ours`` is the ETag the upload wrote (None
        if its write failed, and may or may not have landed). An object that is neither
        ours nor the replaced one is a later upload's: it stays."""
        current = self._etag(key)
        if backup is None:
            if current is not None and (ours is None or current in (ours, UNREADABLE)):
                self.client().delete_object(Bucket=self.bucket, Key=key)
            return
        replaced = _plain(backup.etag)
        if current == UNREADABLE or (current == ours if ours is not None else current != replaced):
            self._copy(backup.key, key, backup.size, backup.restore_args)
        self._delete_or_retry(backup.key, "backup")

    def _delete_or_retry(self, key: str, what: str) -> None:
        """Delete ``key``; if the store cannot be reached, the janitor tries again later."""

        def delete() -> None:
            self.client().delete_object(Bucket=self.bucket, Key=key)

        try:
            delete()
        except Exception:
            logger.warning("could not delete the %s %s; retrying later", what, key)
            self.janitor.retry(f"s3 {what} {key!r}", delete)

    # -- unfinished multipart uploads --------------------------------------------------------------

    def _abort_upload(self, key: str, upload_id: str) -> None:
        try:
            self.client().abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except Exception as exc:
            if _error_code(exc) != "NoSuchUpload":
                raise

    def _abort_or_retry(self, key: str, upload_id: str) -> None:
        """Abort a multipart upload; if the store cannot be reached, the janitor tries again
        later (an unfinished upload is billed for as long as it exists)."""
        try:
            self._abort_upload(key, upload_id)
        except Exception:
            logger.warning("could not abort the multipart upload of %s; retrying later", key)
            what = f"s3 multipart upload of {key!r}"
            self.janitor.retry(what, functools.partial(self._abort_upload, key, upload_id))

    async def cleanup(self, older_than: timedelta = timedelta(days=1), *, prefix: str | None = None) -> int:
        """Abort the multipart uploads under the destination prefix (or ``prefix``) started
        more than ``older_than`` ago, and delete the hidden ``.upload-*.bak`` backups there
        older than that; returns how many were removed.

        A ``destination`` hook names no single prefix: pass ``prefix`` (``""`` for the whole
        bucket). Needs ``s3:ListBucketMultipartUploads``, ``s3:AbortMultipartUpload``,
        ``s3:ListBucket`` and ``s3:DeleteObject``.
        """
        if prefix is None:
            if callable(self.config.destination):
                raise ValueError("a destination hook names no prefix to clean: call cleanup(prefix=...)")
            prefix = join_key(str(self.config.destination), "")
        cutoff = datetime.now(timezone.utc) - older_than
        return await self.workers.run(self._clean, prefix, cutoff)

    def _clean(self, prefix: str, cutoff: datetime) -> int:
        return self._clean_uploads(prefix, cutoff) + self._clean_backups(prefix, cutoff)

    def _clean_uploads(self, prefix: str, cutoff: datetime) -> int:
        removed = 0
        pages = (
            self.client().get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=prefix)
        )
        for page in pages:
            for upload in page.get("Uploads", []):
                if upload["Initiated"] <= cutoff:
                    self._abort_upload(upload["Key"], upload["UploadId"])
                    removed += 1
        return removed

    def _clean_backups(self, prefix: str, cutoff: datetime) -> int:
        removed = 0
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        for page in pages:
            for found in page.get("Contents", []):
                if _is_backup(found["Key"]) and found["LastModified"] <= cutoff:
                    self.client().delete_object(Bucket=self.bucket, Key=found["Key"])
                    removed += 1
        return removed

    # -- management ------------------------------------------------------------------------------

    @staticmethod
    def _key_of(file: FileData | str) -> str:
        return file.filename if isinstance(file, FileData) else file

    async def delete(self, file: FileData | str) -> None:
        key = self._key_of(file)
        await self.workers.run(lambda: self.client().delete_object(Bucket=self.bucket, Key=key))

    async def open(self, key: str) -> AsyncIterator[bytes]:
        body = await self.workers.run(self._get_body, key)
        try:
            while chunk := await self.workers.run(body.read, self.config.chunk_size):
                yield chunk
        finally:
            body.close()

    def _get_body(self, key: str) -> StreamingBody:
        try:
            return self.client().get_object(Bucket=self.bucket, Key=key)["Body"]
        except Exception as exc:
            if _error_code(exc) in NOT_FOUND:
                raise NotFound(f"no object {key!r} in the bucket") from None
            raise

    async def stat(self, key: str) -> ObjectInfo:
        head = await self.workers.run(self._head, key)
        return ObjectInfo(key=key, size=int(head["ContentLength"]), content_type=head.get("ContentType"))

    async def list_objects(self, prefix: str) -> list[ObjectInfo]:
        """Listed objects only: an unfinished multipart upload is none, and hidden
        ``.upload-*`` backups and probes are left out. A listing has no content type."""
        return await self.workers.run(self._list_objects, prefix)

    def _list_objects(self, prefix: str) -> list[ObjectInfo]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        found = [
            ObjectInfo(key=item["Key"], size=int(item["Size"]), content_type=None)
            for page in pages
            for item in page.get("Contents", [])
            if not item["Key"].rsplit("/", 1)[-1].startswith(BACKUP_PREFIX)
        ]
        # S3 lists in name order already; sorted so the contract does not rest on a compatible store.
        return sorted(found, key=lambda info: info.key)

    def _head(self, key: str) -> Any:
        try:
            return self.client().head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if _error_code(exc) in NOT_FOUND:
                raise NotFound(f"no object {key!r} in the bucket") from None
            raise

    async def verify(self) -> None:
        """Read the bucket, then write and delete a hidden probe object under the destination."""
        await self.workers.run(self._verify)

    def _verify(self) -> None:
        where = f"bucket {self.bucket!r}"
        probe = probe_key(self.config.destination)
        try:
            self.client().head_bucket(Bucket=self.bucket)
            self.client().put_object(Bucket=self.bucket, Key=probe, Body=b"")
            self.client().delete_object(Bucket=self.bucket, Key=probe)
        except Exception as exc:
            code = _error_code(exc)
            if code in NOT_FOUND | {"NoSuchBucket"}:
                raise StorageUnavailable(f"{where} does not exist") from None
            if code in DENIED | {"InvalidAccessKeyId", "SignatureDoesNotMatch"}:
                raise StorageUnavailable(
                    f"{where}: the credentials may not read and write it ({code})"
                ) from None
            raise StorageUnavailable(f"{where} cannot be used: {code or type(exc).__name__}") from None

    async def presign_upload(
        self, key: str, *, expires_in: int = 3600, content_type: str | None = None
    ) -> PresignedRequest:
        """A PUT a client can make without credentials. Without ``overwrite`` it carries
        ``If-None-Match: *``, so it cannot replace an existing object either."""
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        headers: dict[str, str] = {}
        if content_type is not None:
            params["ContentType"] = headers["Content-Type"] = content_type
        if not self.config.overwrite:
            params["IfNoneMatch"] = headers["If-None-Match"] = "*"
        url = await self.workers.run(self._presign, "put_object", params, expires_in)
        return PresignedRequest(method="PUT", url=url, headers=headers)

    async def presign_download(self, key: str, *, expires_in: int = 3600) -> PresignedRequest:
        """A GET a client can make without credentials, valid for ``expires_in`` seconds."""
        url = await self.workers.run(
            self._presign, "get_object", {"Bucket": self.bucket, "Key": key}, expires_in
        )
        return PresignedRequest(method="GET", url=url)

    def _presign(self, operation: str, params: dict[str, Any], expires_in: int) -> str:
        return self.client().generate_presigned_url(operation, Params=params, ExpiresIn=expires_in)
