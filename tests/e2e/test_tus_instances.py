"""Two uvicorn processes on two ports over one store (local disk, S3, GCS, Azure): any of
them answers any request of an upload, and the store's own lease keeps two writers apart.

- an upload created on one, PATCHed alternately on both, HEAD on either after every chunk;
- PATCHes to one upload from both processes at once: exactly one is refused (423 while
  the other holds the lease, 409 once it has moved the offset), the object intact;
- the holder SIGKILLed mid-body: the other process refuses the upload until the dead
  one's lease runs out (2 s in the app), then takes it over at the last stored offset;
- (in-process, to force the interleaving) a lease listed before a whole other PATCH is
  not taken by two at once.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from starlette.requests import Request

from filestore_fastapi import Config, LocalStorage
from filestore_fastapi.errors import UploadLocked
from filestore_fastapi.resumable import ResumableUploads
from tests.e2e.tus_support import (
    STORES,
    TUS,
    Pair,
    head_offset,
    result,
    shared_pair,
    wait_until,
)
from tests.httpclient import httpx

KiB = 1024
CHUNK = 512 * KiB
SIZE = 6 * CHUNK + 777
LEASE = 2.0  # the app's TUS_LEASE default


@pytest.fixture(params=STORES)
def pair(request: pytest.FixtureRequest) -> Pair:
    return shared_pair(request.param).running()


def create(base: str, name: str, length: int = SIZE) -> str:
    """POST on ``base`` (one process's ``/files``); the upload's path, without the host."""
    metadata = f"filename {base64.b64encode(name.encode()).decode()}"
    headers = {**TUS, "Upload-Length": str(length), "Upload-Metadata": metadata}
    response = httpx.post(base, headers=headers, timeout=10)
    assert response.status_code == 201, response.text
    location: str = response.headers["Location"]
    return location.rsplit("/", 1)[1]


def patch(base: str, upload_id: str, offset: int, body: Any, length: int) -> httpx.Response:
    headers = {
        **TUS,
        "Content-Type": "application/offset+octet-stream",
        "Upload-Offset": str(offset),
        "Content-Length": str(length),
    }
    return httpx.patch(f"{base}/{upload_id}", content=body, headers=headers, timeout=30)


class HeldPatch:
    """A PATCH sent from a thread whose body stops half-way until ``release()``: while it
    waits, the process serving it holds the upload's lease."""

    def __init__(self, base: str, upload_id: str, offset: int, data: bytes) -> None:
        self._go = threading.Event()
        self.response: httpx.Response | None = None
        self.error: BaseException | None = None

        def body() -> Iterator[bytes]:
            yield data[: len(data) // 2]
            self._go.wait(30)
            yield data[len(data) // 2 :]

        def send() -> None:
            try:
                self.response = patch(base, upload_id, offset, body(), len(data))
            except httpx.HTTPError as exc:
                self.error = exc

        self._thread = threading.Thread(target=send)
        self._thread.start()

    def release(self) -> None:
        self._go.set()
        self._thread.join(30)
        assert not self._thread.is_alive()


def race(urls: tuple[str, str], upload_id: str, offset: int, piece: bytes) -> list[int]:
    """The same PATCH to both processes at once (threads released together); the statuses."""
    start = threading.Barrier(len(urls))
    statuses: list[int] = []

    def send(url: str) -> None:
        start.wait(10)
        statuses.append(patch(url, upload_id, offset, piece, len(piece)).status_code)

    senders = [threading.Thread(target=send, args=(url,)) for url in urls]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(30)
    return statuses


def test_create_on_one_patch_alternately_head_on_either(pair: Pair) -> None:
    data = os.urandom(SIZE)
    upload_id = create(pair.urls[0], f"alternate-{pair.store.kind}.bin")
    for offset in range(0, SIZE, CHUNK):
        piece = data[offset : offset + CHUNK]
        response = patch(pair.urls[(offset // CHUNK) % 2], upload_id, offset, piece, len(piece))
        assert response.status_code == 204, response.text
        assert int(response.headers["Upload-Offset"]) == offset + len(piece)
        assert [head_offset(f"{url}/{upload_id}") for url in pair.urls] == [offset + len(piece)] * 2
    files = [result(f"{url}/{upload_id}") for url in pair.urls]
    assert files[0] == files[1]
    assert files[0]["sha256"] == hashlib.sha256(data).hexdigest()  # no instance saw every byte
    assert pair.store.read(pair.store.key_of(files[0])) == data


def test_concurrent_patches_from_both_processes_one_is_refused(pair: Pair) -> None:
    data = os.urandom(SIZE)
    first, second = pair.urls
    upload_id = create(first, f"concurrent-{pair.store.kind}.bin")

    # The first process holds the lease, mid-body: the second refuses the same chunk.
    held = HeldPatch(first, upload_id, 0, data[:CHUNK])
    try:
        wait_until(lambda: pair.store.live_lease(upload_id), what="the first process holding the lease")
        refused = patch(second, upload_id, 0, data[:CHUNK], CHUNK)
        assert refused.status_code == 423, refused.text
        assert head_offset(f"{second}/{upload_id}") == 0
    finally:
        held.release()
    assert held.response is not None and held.response.status_code == 204, held.error or held.response.text
    assert [head_offset(f"{url}/{upload_id}") for url in pair.urls] == [CHUNK] * 2

    # Both at once, released together, for every remaining chunk: one stores it, the other
    # is refused, whichever comes second.
    offset = CHUNK
    while offset < SIZE:
        piece = data[offset : offset + CHUNK]
        statuses = race(pair.urls, upload_id, offset, piece)
        assert sorted(statuses) in ([204, 409], [204, 423]), statuses
        offset += len(piece)
        assert [head_offset(f"{url}/{upload_id}") for url in pair.urls] == [offset] * 2

    file = result(f"{second}/{upload_id}")
    assert file["sha256"] == hashlib.sha256(data).hexdigest()
    assert pair.store.read(pair.store.key_of(file)) == data  # nothing interleaved, nothing twice
    assert [name for name in pair.store.state(upload_id) if name.startswith("data-")] == []


def test_many_racing_patches_each_refuse_one_and_none_fails(pair: Pair) -> None:
    """Small pieces raced on both processes, many times: the loser is refused, never a 500
    (it may find the lease it listed already replaced by the winner's)."""
    piece_size, rounds = 16 * KiB, 16
    data = os.urandom(piece_size * rounds)
    upload_id = create(pair.urls[1], f"raced-{pair.store.kind}.bin", length=len(data))
    for offset in range(0, len(data), piece_size):
        statuses = race(pair.urls, upload_id, offset, data[offset : offset + piece_size])
        assert sorted(statuses) in ([204, 409], [204, 423]), (offset // piece_size, statuses)
    file = result(f"{pair.urls[0]}/{upload_id}")
    assert file["sha256"] == hashlib.sha256(data).hexdigest()
    assert pair.store.read(pair.store.key_of(file)) == data


def test_a_killed_holder_blocks_the_other_process_for_its_lease_only(pair: Pair) -> None:
    data = os.urandom(SIZE)
    doomed, survivor = pair.instances
    upload_id = create(doomed.url, f"killed-{pair.store.kind}.bin")
    assert patch(doomed.url, upload_id, 0, data[:CHUNK], CHUNK).status_code == 204

    held = HeldPatch(doomed.url, upload_id, CHUNK, data[CHUNK : 2 * CHUNK])
    try:
        wait_until(lambda: pair.store.live_lease(upload_id), what="the doomed process holding the lease")
        doomed.kill()
    finally:
        held.release()
    assert held.response is None and held.error is not None  # the client saw its connection die
    lease_end = pair.store.lease_expiry(upload_id)  # the dead process's last renewal says until when

    # Its lease is in the store still: the survivor refuses the upload until it runs out,
    # then takes it over at the last stored offset.
    url = survivor.url
    assert head_offset(f"{url}/{upload_id}") == CHUNK  # the half chunk it was writing never counted
    piece = data[CHUNK : 2 * CHUNK]
    while True:
        sent = time.time()
        response = patch(url, upload_id, CHUNK, piece, CHUNK)
        if response.status_code != 423:
            break
        assert sent <= lease_end, "refused after the dead process's lease ran out"
        time.sleep(0.2)
    assert response.status_code == 204, response.text
    assert time.time() >= lease_end, "taken over before the dead process's lease ran out"
    offset = 2 * CHUNK
    while offset < SIZE:
        piece = data[offset : offset + CHUNK]
        assert patch(url, upload_id, offset, piece, len(piece)).status_code == 204
        offset += len(piece)
    file = result(f"{url}/{upload_id}")
    assert file["sha256"] == hashlib.sha256(data).hexdigest()
    assert pair.store.read(pair.store.key_of(file)) == data


async def test_a_lease_listed_before_a_whole_other_patch_is_not_taken_twice(tmp_path: Path) -> None:
    """In-process, to force the interleaving: three ``ResumableUploads`` over one store stand
    for three instances. B lists the upload's lease, A then acquires and releases it whole
    (its names before the release's are deleted, so free again), then B acquires from its
    stale listing, and C while B would hold it: never two holders at once."""
    storage = LocalStorage("file", config=Config(destination=tmp_path / "uploads"))
    a, b, c = (ResumableUploads(storage, lease=timedelta(seconds=30)) for _ in range(3))
    request = Request({"type": "http", "method": "POST", "path": "/", "headers": [], "query_string": b""})
    info = await a.create(request, length=10, metadata={"filename": "leased.bin"})
    async with a.lease(await a.load(info.id)):
        pass
    stale = await b.load(info.id)
    async with a.lease(await a.load(info.id)):
        pass
    holders = []
    with contextlib.suppress(UploadLocked):
        async with b.lease(stale):
            holders.append("b")
            with contextlib.suppress(UploadLocked):
                async with c.lease(await c.load(info.id)):
                    holders.append("c")
    assert len(holders) <= 1, holders
    async with c.lease(await c.load(info.id)):  # and the upload is not stuck
        pass


async def test_a_holder_paused_past_its_lease_loses_it_to_the_next_one(tmp_path: Path) -> None:
    """A's loop freezes (a long GC, a stopped VM) while it holds the upload; its lease
    expires, B takes and releases the upload meanwhile (so A's next name is free again).
    When A wakes, its renewal is below B's release: A has lost, and its block is cancelled."""
    storage = LocalStorage("file", config=Config(destination=tmp_path / "uploads"))
    a, b = (ResumableUploads(storage, lease=timedelta(seconds=0.6)) for _ in range(2))
    request = Request({"type": "http", "method": "POST", "path": "/", "headers": [], "query_string": b""})
    info = await a.create(request, length=10, metadata={"filename": "leased.bin"})

    async def b_takes_and_releases() -> None:
        await anyio.sleep(0.8)  # past A's lease
        async with b.lease(await b.load(info.id)):
            pass

    other = threading.Thread(target=anyio.run, args=(b_takes_and_releases,))
    with pytest.raises(UploadLocked, match="lost"):
        async with a.lease(await a.load(info.id)):
            await anyio.sleep(0.01)  # A's renewal is waiting for its turn
            other.start()
            time.sleep(1.5)  # frozen: no renewal runs
            other.join()
            # Awake: the overdue renewal runs now, and must find it lost (the one after it,
            # 0.2 s later, would find B's release in its way in any case).
            await anyio.sleep(0.05)
    async with b.lease(await b.load(info.id)):  # B (or anyone) can take it again
        pass
