"""The behaviour every backend promises, checked through a FastAPI app as a user would see it.

Each test runs once per harness (see ``conftest.py``). Bodies reach the app in 64 KiB
messages, as from a real server, so limits trip while a file is being written.

No ``from __future__ import annotations``: FastAPI must evaluate the routes' ``Depends``
annotations, which name a storage local to ``Bench.route``.
"""

import hashlib
import os
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from filestore_fastapi import FileData, Storage
from tests.httpclient import httpx

from .conftest import KEEPS_NOTHING

if TYPE_CHECKING:
    from .conftest import ContractHarness

T = TypeVar("T")
KiB = 1024
MiB = 1024 * KiB
DELIVERY_SIZE = 64 * KiB
# Small pieces make the cloud writers upload several parts/blocks/chunks per file;
# 5 MiB is S3's smallest part and 256 KiB the granule of a GCS resumable upload.
SMALL_PARTS: dict[str, Any] = {"part_size": 5 * MiB, "chunk_size": 256 * KiB}
#: Stores that write a file whole, not in parts: ``part_size`` is no key of theirs.
NO_PARTS = {"local", "memory"}
#: Stores with no notion of a content type; FileData.content_type still carries it.
KEEPS_NO_CONTENT_TYPE = {"local", "memory"}

#: (form field, filename, bytes, content type)
Part = tuple[str, str, bytes, str]


class Rechunk:
    """Deliver each request body in ``size``-byte ``http.request`` messages, as uvicorn does.

    TestClient hands the app the whole body in one message; a backend would then see a
    rejected file before its first byte, and never an abort after parts were written.
    """

    def __init__(self, app: ASGIApp, size: int) -> None:
        self.app = app
        self.size = size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        pending: deque[Message] = deque()

        async def receive_in_pieces() -> Message:
            if not pending:
                message = await receive()
                if message["type"] != "http.request":
                    return message
                body: bytes = message.get("body", b"")
                more: bool = message.get("more_body", False)
                starts = range(0, len(body), self.size) or range(1)
                for start in starts:
                    last = start + self.size >= len(body)
                    piece = body[start : start + self.size]
                    pending.append({"type": "http.request", "body": piece, "more_body": more or not last})
            return pending.popleft()

        await self.app(scope, receive_in_pieces, send)


@dataclass
class Bench:
    """One app and TestClient per test; routes are added per storage set."""

    harness: "ContractHarness"
    app: FastAPI
    client: TestClient
    received: list[list[FileData]] = field(default_factory=list)
    """What each handler call received; empty when every request was refused."""

    def route(self, storage: Storage, other: Storage | None = None) -> str:
        path = f"/upload/{len(self.app.routes)}"
        received = self.received
        if other is None:

            @self.app.post(path)
            async def one(files: Annotated[list[FileData], Depends(storage)]) -> list[str]:
                received.append(files)
                return [f.filename for f in files]

        else:

            @self.app.post(path)
            async def two(
                first: Annotated[list[FileData], Depends(storage)],
                second: Annotated[list[FileData], Depends(other)],
            ) -> list[str]:
                received.append(first + second)
                return [f.filename for f in first + second]

        return path

    def post(self, path: str, *parts: Part, text: dict[str, str] | None = None) -> httpx.Response:
        files: list[tuple[str, tuple[str | None, bytes, str | None]]] = [
            (name, (None, value.encode(), None)) for name, value in (text or {}).items()
        ]
        files += [(name, (filename, data, ctype)) for name, filename, data, ctype in parts]
        response: httpx.Response = self.client.post(path, files=files)
        return response

    def upload(self, storage: Storage, *parts: Part) -> list[FileData]:
        """Post ``parts`` to a new route of ``storage``, expect 200, return the handler's files."""
        response = self.post(self.route(storage), *parts)
        assert response.status_code == 200, response.text
        files = self.received[-1]
        assert response.json() == [f.filename for f in files]
        return files

    def run(self, function: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Await on the app's own event loop, where the storage's clients live."""
        assert self.client.portal is not None
        return self.client.portal.call(function, *args)

    def read_back(self, storage: Storage, file: FileData) -> bytes:
        return self.run(self.harness.read_back, storage, file)

    def leftovers(self, storage: Storage) -> list[str]:
        return self.run(self.harness.leftovers, storage)

    def small_parts(self) -> dict[str, Any]:
        """``SMALL_PARTS``, less the keys this store does not take (a config refuses them)."""
        if self.harness.name in NO_PARTS:
            return {key: value for key, value in SMALL_PARTS.items() if key != "part_size"}
        return SMALL_PARTS

    def kept(self, count: int) -> int:
        """How many objects a store holds after ``count`` were stored: 0 if it keeps none."""
        return 0 if self.harness.name in KEEPS_NOTHING else count

    def opened(self, storage: Storage, key: str) -> bytes:
        async def collect() -> bytes:
            return b"".join([chunk async for chunk in storage.open(key)])

        return self.run(collect)


@pytest.fixture
def bench(harness: "ContractHarness") -> Iterator[Bench]:
    app = FastAPI()
    with TestClient(Rechunk(app, DELIVERY_SIZE)) as client:
        yield Bench(harness, app, client)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_single_file_is_stored_with_its_description(bench: Bench) -> None:
    storage = bench.harness.make("doc")
    data = os.urandom(3000)

    [file] = bench.upload(storage, ("doc", "hello.txt", data, "text/plain"))

    assert file.field_name == "doc"
    assert file.original_filename == "hello.txt"
    assert PurePosixPath(file.filename).name == "hello.txt"
    assert file.content_type == "text/plain"
    assert file.size == len(data)
    assert file.sha256 == sha256(data)
    assert file.storage == bench.harness.name
    assert sha256(bench.read_back(storage, file)) == sha256(data)
    assert len(bench.leftovers(storage)) == bench.kept(1)


def test_count_files_are_all_stored(bench: Bench) -> None:
    storage = bench.harness.make("docs", count=3)
    contents = [os.urandom(100 + n) for n in range(3)]
    parts = [("docs", f"f{n}.bin", data, "application/pdf") for n, data in enumerate(contents)]

    files = bench.upload(storage, *parts)

    assert [f.original_filename for f in files] == ["f0.bin", "f1.bin", "f2.bin"]
    assert [bench.read_back(storage, f) for f in files] == contents
    assert len(bench.leftovers(storage)) == bench.kept(3)


def test_one_file_over_count_refuses_the_request_and_keeps_nothing(bench: Bench) -> None:
    storage = bench.harness.make("docs", count=2)
    parts = [("docs", f"f{n}.bin", os.urandom(50_000), "application/octet-stream") for n in range(3)]

    response = bench.post(bench.route(storage), *parts)

    assert response.status_code == 422, response.text
    assert bench.received == []
    assert bench.leftovers(storage) == []


def test_missing_required_field_is_422(bench: Bench) -> None:
    storage = bench.harness.make("doc")

    response = bench.post(bench.route(storage), text={"note": "no file here"})

    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "doc"]
    assert bench.received == []
    assert bench.leftovers(storage) == []


def test_missing_optional_field_gives_an_empty_list(bench: Bench) -> None:
    storage = bench.harness.make("doc", required=False)

    response = bench.post(bench.route(storage), text={"note": "no file here"})

    assert response.status_code == 200, response.text
    assert bench.received == [[]]
    assert bench.leftovers(storage) == []


def test_file_over_max_file_size_is_413_mid_stream_and_nothing_is_left(bench: Bench) -> None:
    # Over one part_size before the limit trips, so part-wise backends must abort real parts.
    storage = bench.harness.make("doc", max_file_size=6 * MiB, **bench.small_parts())

    response = bench.post(bench.route(storage), ("doc", "big.bin", os.urandom(10 * MiB), "video/mp4"))

    assert response.status_code == 413, response.text
    assert bench.received == []
    assert bench.leftovers(storage) == []


@pytest.mark.parametrize(
    ("config", "part", "status"),
    [
        ({"allowed_extensions": [".txt", "md"]}, ("doc", "run.exe", b"MZ" * 500, "text/plain"), 415),
        ({"allowed_content_types": ["image/*"]}, ("doc", "a.png", b"x" * 1000, "text/plain"), 415),
        ({"min_file_size": 2000}, ("doc", "tiny.txt", b"x" * 1999, "text/plain"), 422),
    ],
    ids=["allowed_extensions", "allowed_content_types", "min_file_size"],
)
def test_file_breaking_a_rule_is_refused_and_nothing_is_left(
    bench: Bench, config: dict[str, Any], part: Part, status: int
) -> None:
    storage = bench.harness.make("doc", **config)

    response = bench.post(bench.route(storage), part)

    assert response.status_code == status, response.text
    assert bench.received == []
    assert bench.leftovers(storage) == []


@pytest.mark.parametrize(
    ("config", "part"),
    [
        ({"allowed_extensions": [".txt"]}, ("doc", "a.txt", b"fine", "text/plain")),
        ({"allowed_content_types": ["image/*"]}, ("doc", "a.png", b"\x89PNG", "image/png")),
        ({"min_file_size": 4}, ("doc", "a.txt", b"four", "text/plain")),
    ],
    ids=["allowed_extensions", "allowed_content_types", "min_file_size"],
)
def test_file_within_the_rules_is_stored(bench: Bench, config: dict[str, Any], part: Part) -> None:
    storage = bench.harness.make("doc", **config)

    [file] = bench.upload(storage, part)

    assert bench.read_back(storage, file) == part[2]


def test_second_field_refused_removes_the_first_fields_file(bench: Bench) -> None:
    first = bench.harness.make("avatar")
    second = bench.harness.make("resume", allowed_extensions=[".pdf"])
    path = bench.route(first, second)

    response = bench.post(
        path,
        ("avatar", "me.png", os.urandom(300 * KiB), "image/png"),
        ("resume", "cv.docx", os.urandom(1000), "application/octet-stream"),
    )

    assert response.status_code == 415, response.text
    assert bench.received == []
    assert bench.leftovers(first) == []
    assert bench.leftovers(second) == []


def test_second_file_refused_removes_the_first_file(bench: Bench) -> None:
    storage = bench.harness.make("docs", count=2, max_file_size=1 * MiB, **bench.small_parts())

    response = bench.post(
        bench.route(storage),
        ("docs", "small.bin", os.urandom(10 * KiB), "application/octet-stream"),
        ("docs", "large.bin", os.urandom(3 * MiB), "application/octet-stream"),
    )

    assert response.status_code == 413, response.text
    assert bench.received == []
    assert bench.leftovers(storage) == []


def test_same_name_twice_stores_both_under_distinct_names(bench: Bench) -> None:
    storage = bench.harness.make("docs", count=2)
    contents = [os.urandom(1000) for _ in range(3)]

    together = bench.upload(storage, *[("docs", "same.txt", data, "text/plain") for data in contents[:2]])
    [later] = bench.upload(storage, ("docs", "same.txt", contents[2], "text/plain"))

    files = [*together, later]
    names = [f.filename for f in files]
    assert PurePosixPath(names[0]).name == "same.txt"
    if bench.harness.name in KEEPS_NOTHING:
        # Unique within a request; once it is over the name is free again.
        assert len(set(names[:2])) == 2 and names[2] == names[0], names
    else:
        assert len(set(names)) == 3, names
    assert all(name.endswith(".txt") for name in names), names
    assert [bench.read_back(storage, f) for f in files] == contents
    assert len(bench.leftovers(storage)) == bench.kept(3)


def test_overwrite_replaces_a_file_of_the_same_name(bench: Bench) -> None:
    if bench.harness.name in KEEPS_NOTHING:
        pytest.skip(f"the {bench.harness.name} store keeps no file to replace")
    storage = bench.harness.make("doc", overwrite=True)
    old, new = os.urandom(2000), os.urandom(1000)

    [first] = bench.upload(storage, ("doc", "same.txt", old, "text/plain"))
    [second] = bench.upload(storage, ("doc", "same.txt", new, "text/plain"))

    assert second.filename == first.filename
    assert bench.read_back(storage, first) == new
    assert len(bench.leftovers(storage)) == 1


def test_delete_removes_the_stored_object(bench: Bench) -> None:
    if bench.harness.name in KEEPS_NOTHING:
        pytest.skip(f"the {bench.harness.name} store keeps no object to delete")
    storage = bench.harness.make("doc")
    [file] = bench.upload(storage, ("doc", "gone.txt", b"soon gone", "text/plain"))
    assert bench.read_back(storage, file) == b"soon gone"

    bench.run(storage.delete, file)

    with pytest.raises(Exception):  # noqa: B017 - each store raises its own "not found"
        bench.read_back(storage, file)
    assert bench.leftovers(storage) == []


def test_open_streams_back_the_bytes_sent(bench: Bench) -> None:
    storage = bench.harness.make("doc", chunk_size=256 * KiB)
    data = os.urandom(MiB + 123)

    [file] = bench.upload(storage, ("doc", "round.bin", data, "application/octet-stream"))

    if bench.harness.name in KEEPS_NOTHING:
        with pytest.raises(FileNotFoundError):  # the not-found of every store
            bench.opened(storage, file.filename)
        return
    assert bench.opened(storage, file.filename) == data


def test_content_type_is_stored_with_the_object(bench: Bench) -> None:
    if bench.harness.name in KEEPS_NO_CONTENT_TYPE:
        pytest.skip(f"the {bench.harness.name} store keeps no content type")
    storage = bench.harness.make("doc")

    # A name that does not imply the type, so a type guessed from it would not pass.
    [file] = bench.upload(storage, ("doc", "photo.bin", b"\x89PNG\r\n", "image/png"))

    assert bench.run(bench.harness.stored_content_type, storage, file) == "image/png"


def test_file_of_many_parts_round_trips(bench: Bench) -> None:
    storage = bench.harness.make("doc", **bench.small_parts())
    data = os.urandom(12 * MiB + 7)

    [file] = bench.upload(storage, ("doc", "large.bin", data, "application/octet-stream"))

    assert file.size == len(data)
    assert file.sha256 == sha256(data)
    assert sha256(bench.read_back(storage, file)) == sha256(data)
    assert len(bench.leftovers(storage)) == bench.kept(1)
