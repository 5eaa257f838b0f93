"""tus uploads into every backend (``tus_router``), through FastAPI's TestClient: pieces
resumed, completed, terminated, expired, concatenated; what the store holds after each.

The state is checked in the store itself (``harness.leftovers``): an upload that is
terminated or expired leaves nothing; a completed one leaves its file and, until it
expires, its small state objects (``info``, ``done``, the released lease), no piece.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import anyio
from fastapi import FastAPI
from fastapi.testclient import TestClient

from filestore_fastapi import FileData, Storage, tus_router

from .conftest import KEEPS_NOTHING, ContractHarness

TUS = {"Tus-Resumable": "1.0.0"}
CHUNK = {**TUS, "Content-Type": "application/offset+octet-stream"}
MiB = 1024 * 1024


def encoded(**values: str) -> str:
    return ",".join(f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in values.items())


@contextmanager
def tus_client(storage: Storage, completed: list[FileData], **options: Any) -> Iterator[TestClient]:
    app = FastAPI()
    app.include_router(tus_router(storage, prefix="/files", on_complete=completed.append, **options))
    with TestClient(app) as client:
        yield client


def create(client: TestClient, length: int | None, name: str = "movie.bin", **headers: str) -> str:
    sent = {**TUS, "Upload-Metadata": encoded(filename=name, filetype="application/octet-stream"), **headers}
    if length is None:
        sent["Upload-Defer-Length"] = "1"
    else:
        sent["Upload-Length"] = str(length)
    reply = client.post("/files", headers=sent)
    assert reply.status_code == 201, reply.text
    return str(reply.headers["Location"])


def patch(client: TestClient, url: str, offset: int, data: bytes, **headers: str) -> Any:
    return client.patch(url, content=data, headers={**CHUNK, "Upload-Offset": str(offset), **headers})


def hidden(names: list[str]) -> list[str]:
    return [name for name in names if "/.tus/" in f"/{name}"]


def state_names(names: list[str]) -> set[str]:
    """The kinds of state objects (``info``, ``done``, ``lock``, ``data``) in ``.tus/<id>/``;
    a file system's folders are no objects."""
    inside = (f"/{name}".split("/.tus/", 1)[1] for name in hidden(names))
    return {path.rsplit("/", 1)[-1].split("-", 1)[0] for path in inside if "/" in path}


async def stored_bytes(harness: ContractHarness, storage: Storage, file: FileData) -> bytes:
    if harness.name in KEEPS_NOTHING:
        assert file.file is not None
        return file.file
    return await harness.read_back(storage, file)


def test_pieces_of_any_size_resume_and_complete_into_one_object(harness: ContractHarness) -> None:
    storage = harness.make("video")
    data = os.urandom(6 * MiB + 12345)
    completed: list[FileData] = []
    with tus_client(storage, completed) as client:
        url = create(client, len(data))
        cuts = [0, 1, 700_000, 5 * MiB + 3, len(data)]
        for start, end in itertools.pairwise(cuts):
            reply = patch(client, url, start, data[start:end])
            assert reply.status_code == 204, reply.text
            assert client.head(url, headers=TUS).headers["Upload-Offset"] == str(end)
        result = client.get(url).json()
    [file] = completed
    assert file.size == len(data) and file.sha256 == hashlib.sha256(data).hexdigest()
    assert result["sha256"] == file.sha256 and result["filename"] == file.filename
    assert anyio.run(stored_bytes, harness, storage, file) == data
    if harness.name not in KEEPS_NOTHING:
        left = anyio.run(harness.leftovers, storage)
        assert not any("data-" in name for name in left), left
        assert state_names(left) <= {"info", "done", "lock"}, left


def test_a_terminated_upload_leaves_nothing(harness: ContractHarness) -> None:
    storage = harness.make("video")
    with tus_client(storage, []) as client:
        url = create(client, 3 * MiB)
        assert patch(client, url, 0, os.urandom(MiB)).status_code == 204
        assert client.delete(url, headers=TUS).status_code == 204
        assert client.head(url, headers=TUS).status_code == 404
        assert patch(client, url, MiB, b"more").status_code == 404
    assert anyio.run(harness.leftovers, storage) == []
    if harness.name == "memory":
        assert anyio.run(storage.list_objects, "") == []


def test_a_checksum_mismatch_discards_the_piece_and_keeps_the_offset(harness: ContractHarness) -> None:
    storage = harness.make("video")
    data = os.urandom(2 * MiB)
    completed: list[FileData] = []
    with tus_client(storage, completed) as client:
        url = create(client, len(data))
        wrong = base64.b64encode(hashlib.sha1(b"other").digest()).decode()
        reply = patch(client, url, 0, data[:MiB], **{"Upload-Checksum": f"sha1 {wrong}"})
        assert reply.status_code == 460
        assert client.head(url, headers=TUS).headers["Upload-Offset"] == "0"
        for start in (0, MiB):
            piece = data[start : start + MiB]
            digest = base64.b64encode(hashlib.sha256(piece).digest()).decode()
            assert (
                patch(client, url, start, piece, **{"Upload-Checksum": f"sha256 {digest}"}).status_code == 204
            )
    [file] = completed
    assert anyio.run(stored_bytes, harness, storage, file) == data


def test_deferred_length_is_told_by_a_later_patch(harness: ContractHarness) -> None:
    storage = harness.make("video")
    data = os.urandom(MiB + 7)
    completed: list[FileData] = []
    with tus_client(storage, completed) as client:
        url = create(client, None)
        assert client.head(url, headers=TUS).headers["Upload-Defer-Length"] == "1"
        assert patch(client, url, 0, data[:MiB]).status_code == 204
        assert completed == []
        reply = patch(client, url, MiB, data[MiB:], **{"Upload-Length": str(len(data))})
        assert reply.status_code == 204, reply.text
    [file] = completed
    assert anyio.run(stored_bytes, harness, storage, file) == data


def test_partial_uploads_concatenate_in_order_and_are_removed(harness: ContractHarness) -> None:
    storage = harness.make("video")
    parts = [os.urandom(MiB + 1), os.urandom(3), os.urandom(2 * MiB)]
    completed: list[FileData] = []
    with tus_client(storage, completed) as client:
        urls = []
        for part in parts:
            url = create(client, len(part), **{"Upload-Concat": "partial"})
            assert patch(client, url, 0, part).status_code == 204
            urls.append(url)
        assert completed == [], "a partial upload is no file"
        reply = client.post(
            "/files",
            headers={
                **TUS,
                "Upload-Concat": "final;" + " ".join(urls),
                "Upload-Metadata": encoded(filename="whole.bin"),
            },
        )
        assert reply.status_code == 201, reply.text
        final = reply.headers["Location"]
        head = client.head(final, headers=TUS)
        assert head.headers["Upload-Offset"] == head.headers["Upload-Length"] == str(sum(map(len, parts)))
        assert head.headers["Upload-Concat"].startswith("final;")
        assert patch(client, final, 0, b"x").status_code == 403
        assert all(client.head(url, headers=TUS).status_code == 404 for url in urls)
    [file] = completed
    assert anyio.run(stored_bytes, harness, storage, file) == b"".join(parts)
    if harness.name not in KEEPS_NOTHING:
        left = anyio.run(harness.leftovers, storage)
        assert not any("data-" in name for name in left), left


def test_expired_uploads_are_gone_and_cleanup_removes_them(harness: ContractHarness) -> None:
    storage = harness.make("video")
    with tus_client(storage, [], expires_after=timedelta(seconds=-1)) as client:
        url = create(client, 2 * MiB)
        assert patch(client, url, 0, os.urandom(MiB)).status_code == 410
        assert client.head(url, headers=TUS).status_code == 410
    removed = anyio.run(storage.cleanup)
    assert removed >= 1
    assert hidden(anyio.run(harness.leftovers, storage)) == []


def test_whole_part_pieces_seen_by_one_instance_are_joined_in_the_store(harness: ContractHarness) -> None:
    """Pieces of 5 MiB and more (S3's smallest part) and one instance that saw every byte:
    the completion joins them inside the store where the backend can (``Composing``)."""
    storage = harness.make("video")
    data = os.urandom(10 * MiB + 4321)
    completed: list[FileData] = []
    with tus_client(storage, completed) as client:
        url = create(client, len(data))
        for start in (0, 5 * MiB, 10 * MiB):
            assert patch(client, url, start, data[start : start + 5 * MiB]).status_code == 204
        assert client.get(url).json()["sha256"] == hashlib.sha256(data).hexdigest()
    [file] = completed
    assert file.sha256 == hashlib.sha256(data).hexdigest()
    assert anyio.run(stored_bytes, harness, storage, file) == data
    if harness.name not in KEEPS_NOTHING:
        left = anyio.run(harness.leftovers, storage)
        assert not any("data-" in name or ".upload-" in name for name in left), left


def test_forty_small_pieces_complete_in_order(harness: ContractHarness) -> None:
    """More pieces than one GCS compose joins (32), each smaller than an S3 part."""
    storage = harness.make("video")
    data = os.urandom(40 * 10_000)
    completed: list[FileData] = []
    with tus_client(storage, completed) as client:
        url = create(client, len(data))
        for start in range(0, len(data), 10_000):
            assert patch(client, url, start, data[start : start + 10_000]).status_code == 204
    [file] = completed
    assert file.sha256 == hashlib.sha256(data).hexdigest()
    assert anyio.run(stored_bytes, harness, storage, file) == data
    if harness.name not in KEEPS_NOTHING:
        left = anyio.run(harness.leftovers, storage)
        assert not any("data-" in name or ".upload-" in name for name in left), left
