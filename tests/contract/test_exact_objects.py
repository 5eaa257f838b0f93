"""Objects under exact keys, and listing them: what resumable uploads keep their pieces and
state with (``WriteRequest(exact=True)``, ``Backend.key_of``, ``Backend.list_objects``).

An exact write claims its name or nothing: never a suffixed name, never over an existing
object, even with ``overwrite=True``. Memory keeps exact objects (in its process) though it
keeps no file.
"""

from __future__ import annotations

import os

import pytest

from filestore_fastapi import KeyTaken, NotFound, Storage, StoredFile, WriteRequest

from .conftest import ContractHarness
from .test_backend import PART, large_size, opened, small_parts, write_all


def exact(storage: Storage, folder: str, name: str) -> WriteRequest:
    destination = str(storage.config.destination)
    return WriteRequest(
        field_name="f",
        filename=name,
        content_type="application/octet-stream",
        destination=f"{destination}/{folder}" if folder else destination,
        exact=True,
    )


async def put(storage: Storage, target: WriteRequest, data: bytes) -> StoredFile:
    writer = await storage.open_writer(target)
    try:
        await write_all(writer, data)
        stored = await writer.commit()
    except BaseException:
        await writer.abort()
        raise
    await writer.release()
    return stored


@pytest.mark.parametrize("size", ["small", "large"])
async def test_an_exact_write_is_under_its_key_and_lists(harness: ContractHarness, size: str) -> None:
    storage = harness.make("f", **small_parts(harness))
    data = os.urandom(3000 if size == "small" else large_size(harness))
    target = exact(storage, ".state/abc", "00000000000000000000")
    await put(storage, target, data)

    key = storage.key_of(target.destination, target.filename)
    assert key.endswith(".state/abc/00000000000000000000")
    assert await opened(storage, key) == data
    assert (await storage.stat(key)).size == len(data)
    listed = await storage.list_objects(key.removesuffix("00000000000000000000"))
    assert [(info.key, info.size) for info in listed] == [(key, len(data))]


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("size", ["small", "large"])
async def test_an_exact_name_that_exists_is_key_taken_and_kept(
    harness: ContractHarness, overwrite: bool, size: str
) -> None:
    storage = harness.make("f", overwrite=overwrite, **small_parts(harness))
    target = exact(storage, "held", "lock-1")
    await put(storage, target, b"first")

    second = os.urandom(3000 if size == "small" else PART + 1024 * 1024)
    with pytest.raises(KeyTaken):
        await put(storage, target, second)

    key = storage.key_of(target.destination, target.filename)
    assert await opened(storage, key) == b"first"
    listed = await storage.list_objects(key.removesuffix("lock-1"))
    assert [info.key for info in listed] == [key], "no suffixed name, no leftover of the refused write"


async def test_listing_is_sorted_by_key_and_bounded_by_the_prefix(harness: ContractHarness) -> None:
    storage = harness.make("f")
    for folder, name in [("up/b", "2"), ("up/b", "1"), ("up/a", "9"), ("upper", "x"), ("other", "y")]:
        await put(storage, exact(storage, folder, name), name.encode())
    prefix = storage.key_of(exact(storage, "up", "").destination, "x").removesuffix("x")
    keys = [info.key for info in await storage.list_objects(prefix)]
    assert keys == [prefix + "a/9", prefix + "b/1", prefix + "b/2"]
    assert await storage.list_objects(prefix + "nothing/") == []


async def test_a_deleted_exact_object_is_gone_from_the_listing(harness: ContractHarness) -> None:
    storage = harness.make("f")
    target = exact(storage, "gone", "piece")
    await put(storage, target, b"bytes")
    key = storage.key_of(target.destination, target.filename)
    await storage.delete(key)
    with pytest.raises(NotFound):
        await storage.stat(key)
    assert await storage.list_objects(key) == []
    # The name is free again.
    await put(storage, target, b"again")
    assert await opened(storage, key) == b"again"


async def test_an_object_deleted_while_it_is_read_is_whole_or_not_found(harness: ContractHarness) -> None:
    """Reading is never a mix: the object as it was when opened (a file system, a GET that
    streams one response), or ``NotFound`` once its version is gone (stores read in ranges)."""
    from .test_backend import NO_PARTS

    extra = {} if harness.name in NO_PARTS else {"part_size": PART}
    storage = harness.make("f", chunk_size=1024 * 1024, **extra)
    data = os.urandom(2 * PART + 12345)
    target = exact(storage, "gone", "while-read")
    await put(storage, target, data)
    key = storage.key_of(target.destination, target.filename)
    chunks = storage.open(key)
    received = [await chunks.__anext__()]
    await storage.delete(key)
    try:
        received += [chunk async for chunk in chunks]
    except NotFound:
        return
    assert b"".join(received) == data
