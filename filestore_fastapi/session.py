"""One pass over one request's body, shared by every storage the route depends on.

The first storage dependency FastAPI resolves runs the session; it streams every part
to the storage that owns its field, and the other storages only collect their results.
If anything fails, every file of the request is removed before the error propagates.
"""

from __future__ import annotations

import concurrent.futures
import logging
import sys
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import anyio
from starlette.datastructures import ImmutableMultiDict
from starlette.requests import ClientDisconnect, Request

from .backends.base import KeyTaken, Writer, WriteRequest
from .backends.threads import wait, wait_out
from .buffer import BatchWriter, ChunkBuffer
from .checksums import Hasher, checksum_fields, new_hasher
from .config import Config
from .errors import (
    PayloadTooLarge,
    RequestTimeout,
    StorageFailure,
    UploadConflict,
    UploadError,
    ValidationFailed,
    first_error,
)
from .filedata import FileData
from .idle import IdleWatch
from .multipart import (
    Event,
    PartData,
    PartStart,
    decode_header_value,
    form_events,
    parse_boundary,
    read_events,
)
from .policy import (
    DEFAULT_CONTENT_TYPE,
    UploadContext,
    call_hook,
    check_complete,
    check_count,
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
    from anyio.abc import TaskGroup

    from .backends.base import Chunk
    from .dependency import Storage

logger = logging.getLogger("filestore_fastapi")

SESSION_KEY = "filestore_fastapi.session"
FIELD_OVERHEAD = 256
"""Bytes a text field costs beyond its name and value (the tuple, the strings, the list slot),
counted against ``max_form_memory`` so that a thousand empty fields are not free."""
DEFAULT_CONFIG = Config()  # immutable: shared defaults for a request with no storage of its own


@dataclass(frozen=True)
class RequestLimits:
    """Request-wide limits; with several storages on a route, the strictest of each."""

    max_body_size: int | None
    max_fields: int
    max_field_size: int
    max_parts: int
    max_form_memory: int
    idle_timeout: float | None

    @classmethod
    def strictest(cls, storages: Sequence[Storage]) -> RequestLimits:
        configs = [storage.config for storage in storages] or [DEFAULT_CONFIG]
        body_limits = [c.max_body_size for c in configs if c.max_body_size is not None]
        timeouts = [c.idle_timeout for c in configs if c.idle_timeout is not None]
        return cls(
            max_body_size=min(body_limits) if body_limits else None,
            max_fields=min(c.max_fields for c in configs),
            max_field_size=min(c.max_field_size for c in configs),
            max_parts=min(c.max_parts for c in configs),
            max_form_memory=min(c.max_form_memory for c in configs),
            idle_timeout=min(timeouts) if timeouts else None,
        )


def _hash_all(hasher: Hasher | None, chunks: list[Chunk]) -> None:
    if hasher is not None:
        for chunk in chunks:
            hasher.update(chunk)  # releases the GIL: runs beside the event loop


def _hash_and_write(hasher: Hasher | None, writer: BatchWriter, chunks: list[Chunk]) -> None:
    _hash_all(hasher, chunks)
    writer.write_batch_blocking(chunks)  # the bytes just hashed, still in this core's cache


@dataclass
class _OpenFile:
    """A file being received. Its bytes are gathered into batches of ``chunk_size``; each
    batch is hashed and written off the loop while the loop parses the next one, with at
    most one batch in flight, so memory stays at about two batches per file.

    A writer that can take a whole batch in a blocking call (``BatchWriter``: local disk)
    gets it in a thread of the storage's ``workers``, which hashes it first: one hop per
    batch, no task, no ``await`` per piece; past its first batch, a file's bytes are copied
    into two reusable blocks (``blocks``) rather than kept as views of the server's
    buffers. Any other writer is awaited on the loop while the batch is hashed in a
    thread beside it."""

    storage: Storage
    writer: Writer
    context: UploadContext
    hasher: Hasher | None
    progress: Progress
    size: int = 0
    batch: ChunkBuffer = field(default_factory=ChunkBuffer)
    idle: anyio.Event | None = None
    pending: list[concurrent.futures.Future[None]] = field(default_factory=list)
    batch_writer: BatchWriter | None = None
    blocks: list[memoryview] | None = None
    """For a ``BatchWriter``, once the file has outgrown one batch: two reusable batches
    the bytes are copied into as they arrive (see ``UploadSession._copy_in``)."""
    block: int = 0  # the one being filled
    filled: int = 0

    def __post_init__(self) -> None:
        # Not ``isinstance(writer, BatchWriter)``: a Protocol's check walks its attributes
        # (~15 us, in cProfile of a small upload); the method is what the protocol is.
        if callable(getattr(self.writer, "write_batch_blocking", None)):
            self.batch_writer = cast(BatchWriter, self.writer)

    async def settle(self) -> None:
        """Wait until the batch in flight, if any, is hashed and written."""
        while self.pending:
            # Dropped only once done: a cancelled wait leaves it to ``wait_out``, so the
            # writer is never aborted (its file closed) while a thread still writes to it.
            await wait(self.pending[0])
            self.pending.pop(0)
        if self.idle is not None:
            await self.idle.wait()
            self.idle = None

    async def wait_out(self) -> None:
        """Wait for the batch in flight, whatever its outcome (before an abort)."""
        while self.pending:
            await wait_out(self.pending[0])
            self.pending.pop(0)
        if self.idle is not None:
            await self.idle.wait()
            self.idle = None

    def send(self, batch: list[Chunk], background: TaskGroup) -> None:
        """Start hashing and writing ``batch`` (the previous one has settled)."""
        writer = self.batch_writer
        if writer is not None:
            # Hashed, then written, in one thread hop: with the batch in one block, two A/B
            # runs (1 GiB, 6 rounds, a busy machine) gave 1.78 and 1.91 CPU s against 2.00 and
            # 2.02 for hashing and writing it in two threads at once, and no slower wall time.
            self.pending.append(self.storage.workers.submit(_hash_and_write, self.hasher, writer, batch))
        else:
            self.idle = anyio.Event()
            background.start_soon(self._process, batch, self.idle)

    async def _process(self, batch: list[Chunk], idle: anyio.Event) -> None:
        try:
            async with anyio.create_task_group() as group:
                if self.hasher is not None:
                    group.start_soon(anyio.to_thread.run_sync, _hash_all, self.hasher, batch)
                for chunk in batch:
                    await self.writer.write(chunk)
        finally:
            idle.set()


@dataclass
class _TextField:
    name: str
    value: bytearray = field(default_factory=bytearray)


class UploadSession:
    """Parses a request once and keeps what each storage stored, or the error."""

    def __init__(self, request: Request, storages: Sequence[Storage]) -> None:
        self._request: Request | None = request
        self.storages = {storage.name: storage for storage in storages}
        if len(self.storages) != len(storages):
            raise ValueError("two storages on one route declare the same field name")
        self.limits = RequestLimits.strictest(storages)
        self.fields: list[tuple[str, str]] = []
        self._files: list[FileData] = []
        self._committed: list[tuple[Writer, Storage, FileData]] = []  # until released or reverted
        self._holders = 0  # storage dependencies that have not exited yet
        self._form_memory = 0
        self._idle = IdleWatch(self.limits.idle_timeout)
        self._open: _OpenFile | None = None
        self._complete: list[_OpenFile] = []  # written in full, committed once the body is valid
        self._text: _TextField | None = None
        self._part_count = 0
        self._body_complete = False
        self._done: anyio.Event | None = None  # made only when a second dependency has to wait
        self._started = False
        self._finished = False
        self._error: BaseException | None = None
        self._background: TaskGroup | None = None
        self._batch_bytes = min((s.config.chunk_size for s in storages), default=DEFAULT_CONFIG.chunk_size)

    @property
    def request(self) -> Request:
        if self._request is None:
            raise RuntimeError("the upload session is over; its request is released")
        return self._request

    @classmethod
    def of(cls, request: Request, storages: Sequence[Storage]) -> UploadSession:
        """The request's session, created on first use."""
        session = request.scope.get(SESSION_KEY)
        if session is None:
            session = cls(request, storages)
            request.scope[SESSION_KEY] = session
        assert isinstance(session, UploadSession)
        return session

    async def files_for(self, storage: Storage) -> list[FileData]:
        """The files stored for ``storage``'s field, parsing the body if nobody has yet."""
        await self.run()
        return [f for f in self._files if f.field_name == storage.name]

    def hold(self) -> None:
        """A dependency hands the files to the handler; ``finish`` once it is done."""
        self._holders += 1

    async def finish(self) -> None:
        """The request succeeded: once the last dependency is done, the files stay for good
        and whatever was kept to revert them (a replaced file) is let go."""
        self._holders -= 1
        if self._holders > 0:
            return
        committed, self._committed = self._committed, []
        with anyio.CancelScope(shield=True):
            for writer, _, _ in committed:
                try:
                    await writer.release()
                except Exception:
                    logger.exception("could not release what an upload kept to revert")

    async def delete_final(self) -> None:
        """Delete the files made final by ``finish``: for an app (plain Starlette) that learns
        only afterwards that the request failed. A file they replaced is not restored."""
        final, self._files = self._files, []
        with anyio.CancelScope(shield=True):
            for file_data in reversed(final):
                try:
                    await self.storages[file_data.field_name].delete(file_data)
                except Exception:
                    logger.exception("could not delete %s after the request failed", file_data.filename)

    async def form(self) -> ImmutableMultiDict[str, str]:
        """The text fields of the body, in order."""
        await self.run()
        return ImmutableMultiDict(self.fields)

    async def run(self) -> None:
        if self._started:
            if not self._finished:
                if self._done is None:
                    self._done = anyio.Event()
                await self._done.wait()
        else:
            self._started = True
            try:
                await self._store_all()
            except BaseException as exc:
                self._error = exc
                raise
            finally:
                # The scope holds the session; dropping the request breaks the cycle, so
                # a finished request (and, for memory storage, its bytes) is freed at once.
                self._request = None
                self._finished = True
                if self._done is not None:
                    self._done.set()
        if self._error is not None:
            raise self._error

    async def _store_all(self) -> None:
        try:
            try:
                async with anyio.create_task_group() as self._background, aclosing(self._events()) as events:
                    background = self._background
                    with anyio.CancelScope() as reading, self._idle.watching(reading, background):
                        async for event in events:
                            await self._handle(event)
                    if reading.cancelled_caught:
                        timeout = self.limits.idle_timeout
                        raise RequestTimeout(None, f"no body data for idle_timeout={timeout:g} seconds")
            except BaseExceptionGroup as group:
                raise first_error(group) from None
            finally:
                self._background = None
            self._check_required()
            await self._commit_all()
        except BaseException as exc:
            failing = self._open or (self._complete[0] if self._complete else None)
            field_name = failing.context.field_name if failing else None
            with anyio.CancelScope(shield=True):
                await self._rollback()
            if isinstance(exc, KeyTaken):
                conflict = UploadConflict(field_name, f"{field_name}: {exc}" if field_name else str(exc))
                self._close_if_unread(conflict)
                raise conflict from None
            if isinstance(exc, Exception) and not isinstance(exc, UploadError | ClientDisconnect):
                logger.exception("upload failed")
                failure = StorageFailure(field_name)
                self._close_if_unread(failure)
                raise failure from exc
            if isinstance(exc, UploadError):
                self._close_if_unread(exc)
            raise

    def _close_if_unread(self, error: UploadError) -> None:
        """Answer an early rejection with ``Connection: close``: otherwise the server would
        keep reading (and discarding) the rest of a body that may be gigabytes long."""
        if not self._body_complete:
            error.headers = {**(error.headers or {}), "Connection": "close"}

    def _events(self) -> AsyncGenerator[Event, None]:
        limit = self.limits.max_body_size
        declared = self.request.headers.get("content-length", "")
        if limit is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(None, f"request body of {declared} bytes exceeds max_body_size of {limit}")
        parsed_form = getattr(self.request, "_form", None)
        if parsed_form is not None:
            # FastAPI already parsed the body for a Form()/File() parameter of the route:
            # the same events go through the same checks, the body limit on their bytes.
            self._body_complete = True
            return _within_body_limit(form_events(parsed_form, self._batch_bytes), limit)
        boundary = parse_boundary(self.request.headers.get("content-type"))
        return read_events(self._body(limit), boundary)

    async def _body(self, limit: int | None) -> AsyncGenerator[bytes, None]:
        received = 0
        chunks = self.request.stream().__aiter__()
        while True:
            try:
                chunk = await self._idle.receive(chunks)
            except StopAsyncIteration:
                break
            received += len(chunk)
            if limit is not None and received > limit:
                raise PayloadTooLarge(None, f"request body exceeds max_body_size of {limit} bytes")
            if chunk:
                yield chunk
        self._body_complete = True

    async def _handle(self, event: Event) -> None:
        if isinstance(event, PartData):
            await self._on_data(event.data)
        elif isinstance(event, PartStart):
            await self._on_start(event)
        else:
            await self._on_end()

    async def _on_start(self, part: PartStart) -> None:
        self._part_count += 1
        if self._part_count > self.limits.max_parts:
            raise PayloadTooLarge(None, f"more than max_parts={self.limits.max_parts} parts in the body")
        if part.filename is None:
            if len(self.fields) >= self.limits.max_fields:
                raise PayloadTooLarge(
                    part.name, f"{part.name}: more than max_fields={self.limits.max_fields} text fields"
                )
            self._text = _TextField(part.name)
            self._hold_text(part.name, FIELD_OVERHEAD + len(part.name.encode()))
            return
        storage = self.storages.get(part.name)
        if storage is None or part.filename == "":
            return  # a file for a field nobody declared, or an empty file input: drained
        received = sum(1 for f in self._complete if f.context.field_name == part.name)
        check_count(part.name, received + 1, storage.count)
        context = UploadContext(
            request=self.request,
            field_name=part.name,
            filename=part.filename,
            content_type=(part.content_type or DEFAULT_CONTENT_TYPE).lower(),
            form=dict(self.fields),
        )
        await check_part(storage.config, context)
        target = WriteRequest(
            field_name=part.name,
            filename=await target_name(storage.config, context),
            content_type=context.content_type,
            destination=await target_destination(storage.config, context),
        )
        if storage.config.verify_content:
            writer: Writer = ContentCheckingWriter(storage, target)  # opens the backend's once the bytes pass
        else:
            writer = await storage.open_writer(target)
        config = storage.config
        self._open = _OpenFile(storage, writer, context, new_hasher(config), Progress(config, context))

    async def _on_data(self, data: memoryview) -> None:
        current = self._open
        if current is not None:
            size = current.size = current.size + len(data)
            check_size(current.storage.config, current.context.field_name, size)
            if current.blocks is not None:
                await self._copy_in(current, data)
            else:
                current.batch.append(data)
                if current.batch.size >= self._batch_bytes:
                    await current.settle()
                    assert self._background is not None
                    current.send(current.batch.take(), self._background)
                    if current.batch_writer is not None:
                        current.blocks = [memoryview(bytearray(self._batch_bytes)) for _ in range(2)]
            if current.progress.due(size):
                await current.progress.report(size)
        elif self._text is not None:
            name = self._text.name
            self._text.value += data
            if len(self._text.value) > self.limits.max_field_size:
                limit = self.limits.max_field_size
                raise PayloadTooLarge(name, f"{name}: text field exceeds max_field_size of {limit} bytes")
            self._hold_text(name, len(data))

    async def _copy_in(self, current: _OpenFile, data: memoryview) -> None:
        """Copy ``data`` into the block being filled; a full block goes to the workers and
        the other one (settled first) is filled next.

        The copy lets the server's buffer go at once, so the allocator hands the same
        memory (still in the cache) to the next piece the server reads, instead of keeping
        a batch's worth of pieces alive and trimming and faulting in the heap for the next
        batch (page faults and cold copies showed in perf); a batch is then one
        contiguous buffer: one ``update`` and one ``write``, one GIL hand-off each."""
        assert current.blocks is not None and self._background is not None
        full = self._batch_bytes
        while data:
            block = current.blocks[current.block]
            taken = min(full - current.filled, len(data))
            block[current.filled : current.filled + taken] = data[:taken]
            current.filled += taken
            data = data[taken:]
            if current.filled == full:
                await current.settle()  # the other block's batch: it is filled next
                current.send([block], self._background)
                current.block ^= 1
                current.filled = 0

    def _hold_text(self, name: str, size: int) -> None:
        """Text stays in memory until the handler runs: all of it together is bounded."""
        self._form_memory += size
        if self._form_memory > self.limits.max_form_memory:
            limit = self.limits.max_form_memory
            raise PayloadTooLarge(name, f"{name}: text fields exceed max_form_memory of {limit} bytes in all")

    async def _on_end(self) -> None:
        if self._text is not None:
            # UTF-8, else latin-1: what Starlette's Form() would give for the same bytes.
            self.fields.append((self._text.name, decode_header_value(bytes(self._text.value))))
            self._text = None
        current = self._open
        if current is None:
            return
        await current.settle()
        if current.blocks is not None:  # a large file: its last, partial block goes the same way
            if current.filled:
                assert self._background is not None
                current.send([current.blocks[current.block][: current.filled]], self._background)
                await current.settle()
            current.blocks = None
        else:
            tail = current.batch.take()  # less than a batch: not worth a thread hop
            _hash_all(current.hasher, tail)
            for chunk in tail:
                await current.writer.write(chunk)
        await current.progress.report(current.size)
        check_complete(current.storage.config, current.context.field_name, current.size)
        self._complete.append(current)
        self._open = None

    def _check_required(self) -> None:
        for name, storage in self.storages.items():
            if storage.required and not any(f.context.field_name == name for f in self._complete):
                raise ValidationFailed(name, f"{name}: field required")

    async def _commit_all(self) -> None:
        """Make the request's files visible, only now that the whole body is known valid:
        a part refused late never costs an earlier file its place (or, with ``overwrite``,
        the file it would have replaced)."""
        while self._complete:
            current = self._complete[0]
            stored = await current.writer.commit()
            self._complete.pop(0)
            context = current.context
            file_data = FileData(
                field_name=context.field_name,
                filename=stored.filename,
                original_filename=context.filename,
                content_type=context.content_type,
                size=current.size,
                **checksum_fields(current.hasher),
                path=stored.path,
                url=stored.url,
                file=stored.file,
                storage=current.storage.storage_name,
                metadata=stored.metadata,
            )
            self._files.append(file_data)
            self._committed.append((current.writer, current.storage, file_data))
            hook = current.storage.config.metadata
            if hook is not None:
                file_data.metadata.update(await call_hook(hook, context))

    async def discard(self) -> None:
        """Remove every file of the request: the handler, or FastAPI, refused it after all."""
        with anyio.CancelScope(shield=True):
            await self._rollback()

    async def _rollback(self) -> None:
        """Abort the files not yet committed and revert the ones that were."""
        pending = [self._open] if self._open is not None else []
        pending += self._complete
        self._open, self._complete = None, []
        for current in pending:
            try:
                await current.wait_out()  # a batch still being written must land before the abort
                await current.writer.abort()
            except Exception:
                logger.exception("could not abort a partial upload")
        committed, self._committed = self._committed, []
        for writer, storage, file_data in reversed(committed):
            try:
                try:
                    await writer.revert()
                except NotImplementedError:
                    await storage.delete(file_data)
            except Exception:
                logger.exception("could not revert %s during rollback", file_data.filename)
        self._files.clear()


async def _within_body_limit(
    events: AsyncGenerator[Event, None], limit: int | None
) -> AsyncGenerator[Event, None]:
    """``events``, refusing once their bytes pass ``limit`` (a parsed body is at least that long)."""
    received = 0
    async with aclosing(events):
        async for event in events:
            if isinstance(event, PartData):
                received += len(event.data)
                if limit is not None and received > limit:
                    raise PayloadTooLarge(None, f"request body exceeds max_body_size of {limit} bytes")
            yield event
