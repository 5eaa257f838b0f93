"""Resumable uploads whose state lives in the store itself, so any instance can go on.

``tus.py`` speaks the protocol; this module keeps each upload as objects of the storage's
own backend, under ``<destination>/.tus/<id>/``:

- ``info``: what the creation said (length, metadata, expiry, concatenation, owner, the
  name and folder the hooks chose), JSON, written once;
- ``length``: a deferred length, written once, when the client tells it;
- ``data-<offset>``: the bytes of one PATCH, named by the offset they start at (20 digits,
  so a listing is in order); the upload's offset is where the contiguous pieces end;
- ``lock-<n>``: leases; the writer of the highest ``n`` holds the upload until it expires;
- ``done``: the ``FileData`` of the completed upload (of a partial upload: its size).

Every object is written with ``WriteRequest(exact=True)``: created if absent, else
``KeyTaken``, the one primitive every store has (``os.link``, ``If-None-Match: *``,
``ifGenerationMatch=0``, Azure's conditional commit). It is the lock, whoever creates
``lock-<n+1>`` holds the upload, and the fence: a PATCH that lost its lease while it wrote
finds its ``data-<offset>`` taken, and its bytes are dropped rather than interleaved.

On completion the pieces become one object under a name claimed with the storage's
collision policy, and the ``FileData`` is the one a multipart upload of the same file
gets; then the pieces are deleted. If every byte came through this instance, the checksum
was taken as they came and a ``Composing`` backend joins the pieces inside the store;
otherwise they stream, in order, through an ordinary writer, hashed on the way.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
import sys
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

import anyio
from starlette.requests import ClientDisconnect, Request

from .backends.base import Composing, KeyTaken, NotFound, ObjectInfo, Writer, WriteRequest
from .checksums import Hasher, checksum_fields, new_hasher
from .errors import (
    ChecksumMismatch,
    MalformedRequest,
    OffsetMismatch,
    PayloadTooLarge,
    RequestTimeout,
    UploadConflict,
    UploadForbidden,
    UploadGone,
    UploadLocked,
    UploadNotFound,
    ValidationFailed,
    first_error,
)
from .filedata import FileData
from .idle import IdleWatch
from .policy import (
    DEFAULT_CONTENT_TYPE,
    UploadContext,
    call_hook,
    check_complete,
    check_part,
    check_size,
    target_destination,
    target_name,
)
from .progress import Progress
from .sniffing import ContentCheckingWriter

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from .dependency import Storage

logger = logging.getLogger("filestore_fastapi")

STATE_FOLDER = ".tus"
INFO, LENGTH, DONE = "info", "length", "done"
UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
_PIECE = re.compile(r"data-(\d{20})")
_LOCK = re.compile(r"lock-(\d{12})")
RUNNING_HASHERS = 1024
"""Uploads in progress whose checksum so far one instance keeps (a cache: a miss costs a
read of the pieces at completion, never a wrong checksum)."""

OnComplete = Callable[[FileData], Awaitable[None] | None]


def new_upload_id() -> str:
    """128 random bits: an id is all a client needs to write to an upload."""
    return secrets.token_hex(16)


@dataclass(frozen=True)
class UploadInfo:
    """What the creation of an upload fixed; the ``info`` object."""

    id: str
    length: int | None
    metadata: dict[str, str]
    created: float
    expires: float
    filename: str
    """The stored name the ``filename`` hook (or the sanitiser) chose; claimed on completion."""
    destination: str
    content_type: str
    raw_metadata: str = ""
    """``Upload-Metadata`` as the client sent it, echoed by HEAD."""
    concat: str | None = None
    """``"partial"``, ``"final"`` or None."""
    parts: tuple[str, ...] = ()
    """A final upload's partial uploads, in order."""
    owner: str | None = None

    def dumps(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def loads(cls, data: bytes) -> UploadInfo:
        values = json.loads(data)
        values["parts"] = tuple(values.get("parts", ()))
        return cls(**values)


@dataclass
class Upload:
    """An upload as the store shows it now."""

    info: UploadInfo
    length: int | None
    pieces: list[ObjectInfo]
    """The contiguous ``data-*`` objects from offset 0."""
    offset: int
    done: dict[str, Any] | None = None
    locks: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.done is not None

    @property
    def expired(self) -> bool:
        return not self.complete and time.time() > self.info.expires


class _Body:
    """A request's body that ends, rather than raises, when the client goes away: the
    bytes that did arrive are kept (tus resumes there). ``idle`` times its waits."""

    def __init__(self, request: Request, idle_timeout: float | None) -> None:
        self._request = request
        self.idle = IdleWatch(idle_timeout)
        self.disconnected = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = self._request.stream().__aiter__()
        while True:
            try:
                chunk = await self.idle.receive(chunks)
            except StopAsyncIteration:
                return
            except ClientDisconnect:
                self.disconnected = True
                return
            if chunk:
                yield chunk


class ResumableUploads:
    """The uploads of one storage: create, append, complete, terminate, expire.

    ``lease`` is how long a writer holds an upload without renewing (it renews every third
    of it while it writes): a crashed instance blocks its upload that long at most.
    """

    def __init__(
        self,
        storage: Storage,
        *,
        expires_after: timedelta = timedelta(days=1),
        lease: timedelta = timedelta(seconds=30),
        on_complete: OnComplete | None = None,
    ) -> None:
        self.storage = storage
        self.expires_after = expires_after
        self.lease_seconds = lease.total_seconds()
        self.on_complete = on_complete
        self.folder = state_folder(storage)
        self._hashers: OrderedDict[str, tuple[int, Hasher]] = OrderedDict()
        try:
            storage.key_of(self.folder, INFO)
        except ValueError:
            raise ValueError(
                f"{storage!r}: resumable uploads keep their state under a fixed destination; "
                "this storage's destination is a hook"
            ) from None

    # -- objects ---------------------------------------------------------------------------

    def _target(self, upload_id: str, name: str, content_type: str = DEFAULT_CONTENT_TYPE) -> WriteRequest:
        return WriteRequest(
            field_name=self.storage.name,
            filename=name,
            content_type=content_type,
            destination=f"{self.folder}/{upload_id}",
            exact=True,
        )

    def _prefix(self, upload_id: str) -> str:
        return self.storage.key_of(f"{self.folder}/{upload_id}", INFO).removesuffix(INFO)

    async def _put(self, upload_id: str, name: str, data: bytes) -> None:
        writer = await self.storage.open_writer(self._target(upload_id, name))
        try:
            await writer.write(data)
            await writer.commit()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await writer.abort()
            raise
        await writer.release()

    async def _read(self, key: str) -> bytes:
        return b"".join([chunk async for chunk in self.storage.open(key)])

    async def _delete(self, keys: Iterable[str]) -> None:
        with anyio.CancelScope(shield=True):
            for key in keys:
                try:
                    await self.storage.delete(key)
                except Exception:
                    logger.exception("could not delete %s of a resumable upload", key)

    # -- state -----------------------------------------------------------------------------

    async def load(self, upload_id: str, owner: str | None = None) -> Upload:
        """The upload as stored, or ``UploadNotFound`` (also for another owner's upload)."""
        if not UPLOAD_ID.fullmatch(upload_id):
            raise UploadNotFound(None, "no such upload")
        prefix = self._prefix(upload_id)
        objects = await self._objects(prefix)
        if INFO not in objects:
            raise UploadNotFound(None, "no such upload")
        try:
            info = UploadInfo.loads(await self._read(objects[INFO].key))
        except NotFound:
            raise UploadNotFound(None, "no such upload") from None
        if info.owner != owner:
            raise UploadNotFound(None, "no such upload")
        return await self._state(info, prefix, objects)

    async def _reload(self, upload: Upload) -> Upload:
        """``upload`` as it is now (its ``info`` is written once: not read again)."""
        prefix = self._prefix(upload.info.id)
        objects = await self._objects(prefix)
        if INFO not in objects:
            raise UploadNotFound(None, "no such upload")  # terminated meanwhile
        return await self._state(upload.info, prefix, objects)

    async def _objects(self, prefix: str) -> dict[str, ObjectInfo]:
        """The objects of one upload, by name."""
        return {info.key[len(prefix) :]: info for info in await self.storage.list_objects(prefix)}

    async def _state(self, info: UploadInfo, prefix: str, objects: dict[str, ObjectInfo]) -> Upload:
        length = info.length
        if length is None and LENGTH in objects:
            length = int(await self._read(objects[LENGTH].key))
        done = json.loads(await self._read(objects[DONE].key)) if DONE in objects else None
        pieces, offset = [], 0
        for name in sorted(objects):
            match = _PIECE.fullmatch(name)
            if match is None:
                continue
            if int(match.group(1)) != offset:
                break  # a gap: nothing after it counts
            pieces.append(objects[name])
            offset += objects[name].size
        if done is not None:
            offset = int(done["size"])
        locks = sorted(name for name in objects if _LOCK.fullmatch(name))
        upload = Upload(info, length, pieces, offset, done, [prefix + name for name in locks])
        if upload.expired:
            raise UploadGone(None, "the upload expired")
        return upload

    async def create(
        self,
        request: Request,
        *,
        length: int | None,
        metadata: Mapping[str, str],
        raw_metadata: str = "",
        concat: str | None = None,
        parts: tuple[str, ...] = (),
        owner: str | None = None,
    ) -> UploadInfo:
        """Check the upload as a multipart file would be checked from its headers, then
        write its ``info``. A partial upload is checked for size only: its metadata, if
        any, is the final upload's business."""
        config, field_name = self.storage.config, self.storage.name
        context = self.context(request, metadata)
        if concat != "partial":
            await check_part(config, context)
        if length is not None:
            check_size(config, field_name, length)
            if concat != "partial":
                check_complete(config, field_name, length)
        now = time.time()
        info = UploadInfo(
            id=new_upload_id(),
            length=length,
            metadata=dict(metadata),
            created=now,
            expires=now + self.expires_after.total_seconds(),
            filename=await target_name(config, context),
            destination=await target_destination(config, context),
            content_type=context.content_type,
            raw_metadata=raw_metadata,
            concat=concat,
            parts=parts,
            owner=owner,
        )
        await self._put(info.id, INFO, info.dumps())
        return info

    def context(self, request: Request, metadata: Mapping[str, str]) -> UploadContext:
        """The hooks' ``UploadContext``: the metadata stands for the form."""
        filename = metadata.get("filename") or metadata.get("name") or ""
        content_type = metadata.get("filetype") or metadata.get("type") or DEFAULT_CONTENT_TYPE
        return UploadContext(
            request=request,
            field_name=self.storage.name,
            filename=filename,
            content_type=content_type.lower(),
            form=dict(metadata),
        )

    # -- leases ----------------------------------------------------------------------------

    @asynccontextmanager
    async def lease(self, upload: Upload) -> AsyncIterator[None]:
        """Hold ``upload`` while the block runs, or ``UploadLocked`` (423) if another request
        does. The holder is the writer of the highest ``lock-<n>``: taken by creating the
        next one, renewed while held (``lock-<n+1>`` replaces ``lock-<n>``), released by a
        ``lock-<n+1>`` that has expired already. A holder that paused past its lease finds
        its renewal taken or below another lease: it has lost, and the block is cancelled."""
        upload_id = upload.info.id
        generation = await self._acquire(upload)
        lost = False
        try:
            async with _unwrapped(), anyio.create_task_group() as group:

                async def renew() -> None:
                    nonlocal generation, lost
                    while True:
                        await anyio.sleep(self.lease_seconds / 3)
                        with anyio.CancelScope(shield=True):
                            try:
                                await self._take(upload_id, generation + 1)
                            except KeyTaken:
                                lost = True
                                group.cancel_scope.cancel()
                                return
                            await self._drop_lock(upload_id, generation)
                            generation += 1

                group.start_soon(renew)
                try:
                    yield
                finally:
                    group.cancel_scope.cancel()
        finally:
            if not lost:
                with anyio.CancelScope(shield=True):
                    with contextlib.suppress(KeyTaken):  # taken over already
                        await self._take(upload_id, generation + 1, expires=0.0)
                    await self._drop_lock(upload_id, generation)
        if lost:
            raise UploadLocked(None, "the upload's lease was lost to another request while writing")

    async def _acquire(self, upload: Upload) -> int:
        generation = 0
        if upload.locks:
            last = upload.locks[-1]
            generation = int(last.rsplit("-", 1)[1])
            try:
                expires = json.loads(await self._read(last))["expires"]
            except NotFound:
                # Replaced since the listing: another request took or released the upload
                # meanwhile, so the names after it may be free again and must not be taken
                # twice: refused.
                raise UploadLocked(None, "another request is writing to this upload") from None
            if expires > time.time():
                raise UploadLocked(None, "another request is writing to this upload")
        try:
            await self._take(upload.info.id, generation + 1)
        except KeyTaken:
            raise UploadLocked(None, "another request is writing to this upload") from None
        await self._delete(upload.locks)
        return generation + 1

    async def _take(self, upload_id: str, generation: int, expires: float | None = None) -> None:
        """Create ``lock-<generation>``; ``KeyTaken`` if it exists, or if it is not the highest
        once made: a name below the highest can be free again (older leases are deleted),
        and a writer that paused past its lease must not take it as its renewal."""
        until = time.time() + self.lease_seconds if expires is None else expires
        await self._put(upload_id, f"lock-{generation:012d}", json.dumps({"expires": until}).encode())
        if expires is not None:
            return  # a release: whoever holds a higher lease keeps it
        prefix = self._prefix(upload_id)
        listed = await self.storage.list_objects(prefix + "lock-")
        highest = max((int(info.key.rsplit("-", 1)[1]) for info in listed), default=generation)
        if highest > generation:
            await self._drop_lock(upload_id, generation)
            raise KeyTaken(f"lock-{highest:012d} is later than lock-{generation:012d}")

    async def _drop_lock(self, upload_id: str, generation: int) -> None:
        key = self.storage.key_of(f"{self.folder}/{upload_id}", f"lock-{generation:012d}")
        await self._delete([key])

    # -- writing ---------------------------------------------------------------------------

    async def append(
        self,
        upload_id: str,
        request: Request,
        *,
        offset: int,
        owner: str | None = None,
        length: int | None = None,
        checksum: tuple[Callable[[], Any], bytes] | None = None,
    ) -> tuple[Upload, FileData | None]:
        """Store the request's body at ``offset`` (a PATCH), completing the upload when its
        last byte arrives. ``checksum`` is a hasher factory and the digest the body must have."""
        upload = await self.load(upload_id, owner)
        if upload.info.concat == "final":
            raise UploadForbidden(None, "a concatenated upload takes no PATCH")
        async with self.lease(upload):
            upload = await self._reload(upload)  # as it is now that we hold it
            if offset != upload.offset:
                raise OffsetMismatch(None, f"Upload-Offset is {offset}, the upload is at {upload.offset}")
            if length is not None:
                await self._declare_length(upload, length)
            if upload.complete:
                async for _ in _Body(request, None):
                    field = self.storage.name
                    raise PayloadTooLarge(field, f"{field}: the upload is complete, at its Upload-Length")
                return upload, None
            received = await self._store_piece(upload, request, checksum)
            upload.offset += received
            file = None
            if upload.length is not None and upload.offset == upload.length:
                file = await self._finish(upload, request)
        return upload, file

    async def _declare_length(self, upload: Upload, length: int) -> None:
        if upload.length is not None:
            if length != upload.length:
                raise MalformedRequest(None, f"Upload-Length is {upload.length} already")
            return
        if length < upload.offset:
            raise MalformedRequest(None, f"Upload-Length {length} is below the offset {upload.offset}")
        check_size(self.storage.config, self.storage.name, length)
        await self._put(upload.info.id, LENGTH, str(length).encode())
        upload.length = length

    async def _store_piece(
        self, upload: Upload, request: Request, checksum: tuple[Callable[[], Any], bytes] | None
    ) -> int:
        config, field_name = self.storage.config, self.storage.name
        target = self._target(upload.info.id, f"data-{upload.offset:020d}", upload.info.content_type)
        writer: Writer
        if config.verify_content and upload.offset == 0:
            writer = ContentCheckingWriter(self.storage, target)
        else:
            writer = await self.storage.open_writer(target)
        hasher = checksum[0]() if checksum else None
        running = self._running_hasher(upload)
        progress = Progress(config, self.context(request, upload.info.metadata), upload.offset)
        body = _Body(request, config.idle_timeout)
        received = 0
        try:
            with anyio.CancelScope() as reading:
                async with _unwrapped(), anyio.create_task_group() as group:
                    with body.idle.watching(reading, group):
                        async for chunk in body:
                            received += len(chunk)
                            total = upload.offset + received
                            if upload.length is not None and total > upload.length:
                                limit = upload.length
                                raise PayloadTooLarge(
                                    field_name,
                                    f"{field_name}: the body goes past Upload-Length of {limit} bytes",
                                )
                            check_size(config, field_name, total)
                            if hasher is not None:
                                hasher.update(chunk)
                            if running is not None:
                                running.update(chunk)
                            await writer.write(chunk)
                            if progress.due(total):
                                await progress.report(total)
            timed_out = reading.cancelled_caught
            if checksum is not None and (body.disconnected or timed_out):
                received = 0  # a checksum is of the whole body: a part of it cannot be kept
            elif hasher is not None and checksum is not None and hasher.digest() != checksum[1]:
                raise ChecksumMismatch(field_name, f"{field_name}: the body does not match Upload-Checksum")
            if received == 0:
                await writer.abort()
            else:
                await writer.commit()
        except KeyTaken:
            with anyio.CancelScope(shield=True):
                await writer.abort()
            raise UploadLocked(None, "another request wrote at this offset first") from None
        except BaseException:
            with anyio.CancelScope(shield=True):
                await writer.abort()
            raise
        if received:
            await writer.release()
            key = self.storage.key_of(target.destination, target.filename)
            upload.pieces.append(ObjectInfo(key=key, size=received, content_type=None))
            if running is not None:
                self._keep_hasher(upload.info.id, upload.offset + received, running)
        if timed_out and checksum is None:
            # Kept what came; the client is told, and resumes from the new offset.
            timeout = config.idle_timeout
            raise RequestTimeout(None, f"no body data for idle_timeout={timeout:g} seconds")
        return received

    # -- completing ------------------------------------------------------------------------

    async def _finish(self, upload: Upload, request: Request) -> FileData | None:
        if upload.info.concat == "partial":
            await self._put(upload.info.id, DONE, json.dumps({"size": upload.offset}).encode())
            upload.done = {"size": upload.offset}
            return None
        entry = self._hashers.get(upload.info.id)
        hashed = entry[1] if entry is not None and entry[0] == upload.offset else None
        file = await self.assemble(upload, upload.pieces, request, hashed=hashed)
        self._hashers.pop(upload.info.id, None)
        await self._delete(piece.key for piece in upload.pieces)
        return file

    def _running_hasher(self, upload: Upload) -> Hasher | None:
        """A hasher that has seen the upload's bytes so far, if they all came through this
        instance in order (else the completion hashes the pieces as it reads them)."""
        if upload.info.concat == "partial" or self.storage.config.checksum is None:
            return None
        if upload.offset == 0:
            return new_hasher(self.storage.config)
        entry = self._hashers.pop(upload.info.id, None)
        return entry[1] if entry is not None and entry[0] == upload.offset else None

    def _keep_hasher(self, upload_id: str, offset: int, hasher: Hasher) -> None:
        self._hashers[upload_id] = (offset, hasher)
        self._hashers.move_to_end(upload_id)
        while len(self._hashers) > RUNNING_HASHERS:
            self._hashers.popitem(last=False)

    async def assemble(
        self, upload: Upload, pieces: list[ObjectInfo], request: Request, *, hashed: Hasher | None = None
    ) -> FileData:
        """Join ``pieces`` in order into a new file with the upload's name and folder,
        claimed by the storage's collision policy; ``on_complete`` runs before it stays.

        Inside the store when the backend is ``Composing`` and the checksum is known
        (``hashed``: the pieces' bytes went through this instance) or not wanted; else the
        pieces stream through a writer, hashed on the way."""
        info, config, field_name = upload.info, self.storage.config, self.storage.name
        size = sum(piece.size for piece in pieces)
        check_complete(config, field_name, size)
        target = WriteRequest(
            field_name=field_name,
            filename=info.filename,
            content_type=info.content_type,
            destination=info.destination,
        )
        hasher = hashed if hashed is not None else new_hasher(config)
        writer: Writer | None = None
        try:
            if isinstance(self.storage, Composing) and (hashed is not None or hasher is None):
                with contextlib.suppress(NotImplementedError):  # these pieces: streamed instead
                    writer = await self.storage.open_composed(target, pieces)
            if writer is None:
                writer = await self.storage.open_writer(target)
                hashing = hasher if hashed is None else None
                for piece in pieces:
                    async for chunk in self.storage.open(piece.key):
                        if hashing is not None:
                            await anyio.to_thread.run_sync(hashing.update, chunk)
                        await writer.write(chunk)
            stored = await writer.commit()
        except BaseException as exc:
            if writer is not None:
                with anyio.CancelScope(shield=True):
                    await writer.abort()
            if isinstance(exc, KeyTaken):
                raise UploadConflict(field_name, f"{field_name}: {exc}") from None
            raise
        context = self.context(request, info.metadata)
        file = FileData(
            field_name=field_name,
            filename=stored.filename,
            original_filename=context.filename or None,
            content_type=info.content_type,
            size=size,
            **checksum_fields(hasher),
            path=stored.path,
            url=stored.url,
            file=stored.file,
            storage=self.storage.storage_name,
            metadata=stored.metadata,
        )
        try:
            if config.metadata is not None:
                file.metadata.update(await call_hook(config.metadata, context))
            await Progress(config, context).report(size)
            if self.on_complete is not None:
                result = self.on_complete(file)
                if result is not None:
                    await result
            await self._put(info.id, DONE, file.model_dump_json().encode())
        except BaseException:
            with anyio.CancelScope(shield=True):
                try:
                    await writer.revert()
                except NotImplementedError:
                    await self.storage.delete(file)
            raise
        await writer.release()
        upload.done = json.loads(file.model_dump_json())
        return file

    async def concatenate(
        self, info: UploadInfo, partials: list[Upload], request: Request, owner: str | None
    ) -> tuple[Upload, FileData]:
        """Complete a final upload: its partial uploads' pieces (``check_partials``), in
        order, become its file; then the partial uploads are removed."""
        upload = Upload(info, info.length, [], 0)
        pieces = [piece for partial in partials for piece in partial.pieces]
        try:
            file = await self.assemble(upload, pieces, request)
        except BaseException:
            await self.terminate(info.id, owner, missing_ok=True)
            raise
        upload.offset = file.size
        for part in info.parts:
            await self.terminate(part, owner, missing_ok=True)
        return upload, file

    async def check_partials(self, parts: tuple[str, ...], owner: str | None) -> list[Upload]:
        """A final upload's partial uploads, each of them complete, their total length within
        ``max_file_size``."""
        partials = [await self.load(part, owner) for part in parts]
        for part, partial in zip(parts, partials, strict=True):
            if partial.info.concat != "partial":
                raise ValidationFailed(None, f"upload {part} is not a partial upload")
            if not partial.complete:
                raise ValidationFailed(None, f"partial upload {part} is not complete")
        check_size(self.storage.config, self.storage.name, sum(partial.offset for partial in partials))
        return partials

    # -- removing --------------------------------------------------------------------------

    async def terminate(self, upload_id: str, owner: str | None = None, *, missing_ok: bool = False) -> None:
        """Remove an upload and everything of it (a DELETE); 423 while a request writes to it."""
        try:
            upload = await self.load(upload_id, owner)
        except (UploadNotFound, UploadGone):
            if missing_ok:
                return
            raise
        prefix = self._prefix(upload_id)
        async with self.lease(upload):
            objects = await self.storage.list_objects(prefix)
            # The info last, so an interrupted removal is still an upload that expires.
            objects.sort(key=lambda info: _name(info.key) == INFO)
            await self._delete(info.key for info in objects if not _LOCK.fullmatch(_name(info.key)))
        await self._delete(info.key for info in await self.storage.list_objects(prefix))  # the released lease

    async def remove_expired(self, now: float | None = None) -> int:
        """Remove every upload whose expiry has passed (completed ones too: their ``done`` is
        only kept for a GET); returns how many. ``Storage.cleanup`` calls it."""
        now = time.time() if now is None else now
        root = self.storage.key_of(self.folder, INFO).removesuffix(INFO)
        by_upload: dict[str, list[ObjectInfo]] = {}
        for info in await self.storage.list_objects(root):
            upload_id = info.key[len(root) :].split("/", 1)[0]
            by_upload.setdefault(upload_id, []).append(info)
        removed = 0
        for objects in by_upload.values():
            info_object = next((o for o in objects if _name(o.key) == INFO), None)
            if info_object is not None:
                try:
                    expires = UploadInfo.loads(await self._read(info_object.key)).expires
                except (NotFound, ValueError, TypeError):
                    continue
                if expires > now:
                    continue
            objects.sort(key=lambda info: _name(info.key) == INFO)
            await self._delete(info.key for info in objects)
            removed += 1
        return removed


@asynccontextmanager
async def _unwrapped() -> AsyncIterator[None]:
    """A task group's error as itself, not in an ``ExceptionGroup`` with the cancellations."""
    try:
        yield
    except BaseExceptionGroup as group:
        raise first_error(group) from None


def _name(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def state_folder(storage: Storage) -> str:
    """Where a storage's uploads keep their state: ``.tus`` under its destination (at the
    top with a destination hook, for the stores whose keys start there)."""
    destination = storage.config.destination
    if callable(destination):
        return STATE_FOLDER
    return str(PurePosixPath(str(destination)) / STATE_FOLDER)


async def remove_expired_uploads(storage: Storage) -> int:
    """``ResumableUploads(storage).remove_expired()``, for a storage that may have none."""
    try:
        uploads = ResumableUploads(storage)
    except ValueError:
        return 0  # a destination hook on local storage: no resumable uploads there
    try:
        return await uploads.remove_expired()
    except NotImplementedError:
        return 0  # a backend of the application's own, without list_objects
