"""The upload behaviour of issue 2, through routes as a user writes them.

Streaming tests drive the app with ``httpx.ASGITransport`` and a body generator that
records how far the app has read, which is how "rejected before the rest is read" and
"nothing was stored" are proven rather than assumed.
"""

# No ``from __future__ import annotations``: FastAPI evaluates the routes' annotations at
# runtime, and they name storages that are local to each test.

import asyncio
import hashlib
import inspect
import os
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, HTTPException
from fastapi.testclient import TestClient
from starlette.datastructures import ImmutableMultiDict
from starlette.requests import ClientDisconnect
from starlette.types import Message, Scope

from filestore_fastapi import (
    Config,
    FileData,
    LocalStorage,
    MemoryStorage,
    UploadContext,
    Writer,
    WriteRequest,
    form_fields,
)
from filestore_fastapi.backends.base import Chunk, StoredFile
from tests.asgi import post_scope
from tests.httpclient import httpx

from .test_multipart import BOUNDARY, CONTENT_TYPE, Part, encode, file_part

MULTIPART = {"content-type": CONTENT_TYPE}


def stored_files(directory: Path) -> list[str]:
    """Every file under ``directory``, temp files included, as sorted relative paths."""
    if not directory.exists():
        return []
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if not p.is_dir())


def single_route_app(*storages: Any, calls: list[Any] | None = None) -> FastAPI:
    """``POST /upload`` depending on each storage; records each handler call in ``calls``."""
    app = FastAPI()
    dependencies = {storage.name: storage for storage in storages}

    async def upload(**files: list[FileData]) -> dict[str, list[FileData]]:
        if calls is not None:
            calls.append(files)
        return files

    # A real signature, so FastAPI sees one Depends(...) parameter per storage.
    upload.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[list[FileData], Depends(storage)]
            )
            for name, storage in dependencies.items()
        ]
    )
    app.post("/upload")(upload)
    return app


def assert_error(response: httpx.Response, status: int, field: str | None, *words: str) -> None:
    """FastAPI's error shape, with a message that names the field and the limit."""
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["detail"]
    [error] = body["detail"]
    assert set(error) == {"loc", "msg", "type"}
    assert error["loc"] == (["body", field] if field else ["body"])
    for word in ((field,) if field else ()) + words:
        assert word in error["msg"], f"{word!r} not in {error['msg']!r}"


def upload_scope(*headers: tuple[bytes, bytes]) -> Scope:
    """A raw ASGI scope for ``POST /upload`` of a multipart body, to drive the app by hand."""
    return post_scope("/upload", [(b"content-type", CONTENT_TYPE.encode()), *headers])


class RecordingBody:
    """A request body sent chunk by chunk, remembering which chunks the app asked for."""

    def __init__(self, chunks: Sequence[bytes]) -> None:
        self.chunks = list(chunks)
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.sent += 1
            yield chunk

    @property
    def bytes_sent(self) -> int:
        return sum(len(chunk) for chunk in self.chunks[: self.sent])


def streamed(parts: Iterable[Part], data_chunk: int = 64 * 1024) -> list[bytes]:
    """A body as chunks: each part's head alone, then its data in ``data_chunk`` pieces."""
    chunks: list[bytes] = []
    for part in parts:
        chunks.append(part.head())
        chunks += [part.data[i : i + data_chunk] for i in range(0, len(part.data), data_chunk)]
        chunks.append(b"\r\n")
    chunks.append(f"--{BOUNDARY}--\r\n".encode())
    return chunks


async def post_streamed(app: FastAPI, body: RecordingBody, path: str = "/upload") -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.post(path, content=body.__aiter__(), headers=MULTIPART)


class RecordingStorage(MemoryStorage):
    """A MemoryStorage that remembers every writer it was asked to open."""

    def __init__(self, name: str, count: int = 1, required: bool = True, config: Config | None = None):
        super().__init__(name, count, required, config)
        self.opened: list[str] = []

    async def open_writer(self, target: WriteRequest) -> Writer:
        self.opened.append(target.filename)
        return await super().open_writer(target)


# 1. Streaming, one pass, one write


async def test_a_file_streams_into_a_temp_file_and_gets_its_name_only_when_complete(tmp_path: Path) -> None:
    destination = tmp_path / "docs"
    storage = LocalStorage("document", config=Config(destination=destination, chunk_size=64 * 1024))
    data = os.urandom(1024 * 1024)
    head = file_part("document", "big.bin", b"").head()
    observed: list[tuple[list[str], int]] = []

    async def body() -> AsyncIterator[bytes]:
        yield head
        for start in range(0, len(data), 128 * 1024):
            yield data[start : start + 128 * 1024]
            await asyncio.sleep(0.01)  # let the writer's thread finish its writev
            names = stored_files(destination)
            size = sum((destination / name).stat().st_size for name in names)
            observed.append((names, size))
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    transport = httpx.ASGITransport(app=single_route_app(storage))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post("/upload", content=body(), headers=MULTIPART)

    assert response.status_code == 200, response.text
    for number, (names, size) in enumerate(observed[:-1], start=1):
        assert len(names) == 1 and names[0].startswith(".upload-") and names[0].endswith(".part")
        # Written as it arrives: at most the parser's boundary look-behind is still held back.
        assert size >= number * 128 * 1024 - 200, f"only {size} bytes on disk after {number} chunks"
    assert stored_files(destination) == ["big.bin"]
    assert (destination / "big.bin").read_bytes() == data


def test_stored_bytes_size_and_sha256_match_what_was_sent(tmp_path: Path) -> None:
    storage = LocalStorage("document", config=Config(destination=tmp_path, chunk_size=100_000))
    data = os.urandom(3 * 1024 * 1024 + 17)
    response = TestClient(single_route_app(storage)).post(
        "/upload", files={"document": ("data.bin", data, "application/octet-stream")}
    )
    assert response.status_code == 200, response.text
    [stored] = response.json()["document"]
    assert stored["size"] == len(data)
    assert stored["sha256"] == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "data.bin").read_bytes() == data
    assert stored_files(tmp_path) == ["data.bin"]


# 2. Early rejection


async def test_content_length_over_max_body_size_is_413_before_any_body_byte_is_read(tmp_path: Path) -> None:
    storage = LocalStorage("document", config=Config(destination=tmp_path, max_body_size=1000))
    received: list[str] = []
    sent: list[Message] = []

    async def receive() -> Message:
        received.append("receive called")
        raise AssertionError("the body must not be read")

    async def send(message: Message) -> None:
        sent.append(message)

    await single_route_app(storage)(upload_scope((b"content-length", b"1001")), receive, send)

    assert received == []
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413
    detail = httpx.Response(413, content=b"".join(m.get("body", b"") for m in sent[1:])).json()["detail"]
    assert detail[0]["loc"] == ["body"]
    assert "max_body_size" in detail[0]["msg"] and "1000" in detail[0]["msg"]
    assert stored_files(tmp_path) == []


async def test_streamed_body_over_max_body_size_is_413_while_reading(tmp_path: Path) -> None:
    """Without a Content-Length (chunked upload) the limit is enforced as bytes arrive."""
    storage = LocalStorage("document", config=Config(destination=tmp_path, max_body_size=200_000))
    body = RecordingBody(streamed([file_part("document", "big.bin", os.urandom(2_000_000))], 50_000))
    response = await post_streamed(single_route_app(storage), body)
    assert_error(response, 413, None, "max_body_size", "200000")
    assert body.bytes_sent <= 200_000 + 50_000
    assert stored_files(tmp_path) == []


async def test_file_over_max_file_size_is_413_mid_stream_and_the_partial_is_deleted(tmp_path: Path) -> None:
    storage = LocalStorage("document", config=Config(destination=tmp_path, max_file_size=256 * 1024))
    body = RecordingBody(streamed([file_part("document", "big.bin", os.urandom(4 * 1024 * 1024))]))
    response = await post_streamed(single_route_app(storage), body)
    assert_error(response, 413, "document", "max_file_size", str(256 * 1024))
    assert body.sent <= 1 + 256 // 64 + 1, "the rest of the file must not be read"
    assert stored_files(tmp_path) == [], "no partial file, no .upload-*.part left"


@pytest.mark.parametrize(("size", "status"), [(1000, 200), (1001, 413)])
def test_max_file_size_is_inclusive(tmp_path: Path, size: int, status: int) -> None:
    storage = LocalStorage("document", config=Config(destination=tmp_path, max_file_size=1000))
    response = TestClient(single_route_app(storage)).post(
        "/upload", files={"document": ("a.bin", b"x" * size)}
    )
    assert response.status_code == status


async def test_a_part_beyond_count_is_422_as_soon_as_its_headers_arrive() -> None:
    storage = RecordingStorage("photo", count=2)
    parts = [file_part("photo", f"p{i}.png", os.urandom(100_000), "image/png") for i in range(3)]
    body = RecordingBody(streamed(parts, 50_000))
    third_head = body.chunks.index(parts[2].head())
    calls: list[Any] = []
    response = await post_streamed(single_route_app(storage, calls=calls), body)
    assert_error(response, 422, "photo", "count=2")
    assert body.sent == third_head + 1, "nothing after the third part's headers was read"
    assert storage.opened == ["p0.png", "p1.png"], "no writer was opened for the third file"
    assert calls == [], "and the first two never reached a handler"


@pytest.mark.parametrize(
    ("config", "part", "words"),
    [
        (Config(allowed_extensions=["png"]), file_part("photo", "x.exe", b"MZ" * 50_000), ["'.exe'", ".png"]),
        (
            Config(allowed_content_types=["image/*"]),
            file_part("photo", "x.png", b"MZ" * 50_000, "application/x-msdownload"),
            ["application/x-msdownload", "image/*"],
        ),
    ],
)
async def test_disallowed_extension_or_type_is_415_before_the_file_is_read(
    config: Config, part: Part, words: list[str]
) -> None:
    storage = RecordingStorage("photo", config=config)
    body = RecordingBody(streamed([part], 10_000))
    response = await post_streamed(single_route_app(storage), body)
    assert_error(response, 415, "photo", *words)
    assert body.sent == 1, "only the part's headers were read"
    assert storage.opened == []


@pytest.mark.parametrize(
    "headers",
    [{"content-type": "application/json"}, {"content-type": "application/x-www-form-urlencoded"}, {}],
)
def test_a_body_that_is_not_multipart_is_415(tmp_path: Path, headers: dict[str, str]) -> None:
    storage = LocalStorage("document", config=Config(destination=tmp_path))
    response = TestClient(single_route_app(storage)).post("/upload", content=b'{"a": 1}', headers=headers)
    assert_error(response, 415, None, "multipart/form-data")


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data", encode([file_part("document", "a.txt", b"abc")])),
        (CONTENT_TYPE, encode([file_part("document", "a.txt", b"abc")], boundary="another")),
        (CONTENT_TYPE, b"complete garbage"),
        (CONTENT_TYPE, b""),
    ],
)
def test_malformed_multipart_is_400(tmp_path: Path, content_type: str, body: bytes) -> None:
    storage = LocalStorage("document", config=Config(destination=tmp_path))
    response = TestClient(single_route_app(storage)).post(
        "/upload", content=body, headers={"content-type": content_type}
    )
    assert_error(response, 400, None)
    assert stored_files(tmp_path) == []


def test_a_body_truncated_mid_file_is_400_and_leaves_nothing(tmp_path: Path) -> None:
    storage = LocalStorage("document", count=2, config=Config(destination=tmp_path, chunk_size=1024))
    body = encode(
        [file_part("document", "first.bin", b"1" * 5000), file_part("document", "cut.bin", b"2" * 5000)]
    )
    response = TestClient(single_route_app(storage)).post("/upload", content=body[:-2000], headers=MULTIPART)
    assert_error(response, 400, None, "closing boundary")
    assert stored_files(tmp_path) == []


def test_a_missing_required_field_is_422() -> None:
    storage = MemoryStorage("document")
    client = TestClient(single_route_app(storage))
    assert_error(
        client.post("/upload", content=encode([Part("title", b"x")]), headers=MULTIPART),
        422,
        "document",
        "required",
    )
    # A browser sends an empty file input as a part with filename="": still missing.
    empty = encode([Part("document", b"", filename="", content_type="application/octet-stream")])
    assert_error(client.post("/upload", content=empty, headers=MULTIPART), 422, "document", "required")


def test_an_optional_field_may_be_missing() -> None:
    storage = MemoryStorage("document", required=False)
    empty = encode([Part("document", b"", filename="")])
    response = TestClient(single_route_app(storage)).post("/upload", content=empty, headers=MULTIPART)
    assert response.status_code == 200
    assert response.json() == {"document": []}


def test_a_file_below_min_file_size_is_422(tmp_path: Path) -> None:
    storage = LocalStorage("document", config=Config(destination=tmp_path, min_file_size=10))
    response = TestClient(single_route_app(storage)).post("/upload", files={"document": ("a.txt", b"short")})
    assert_error(response, 422, "document", "min_file_size", "10")
    assert stored_files(tmp_path) == []


@pytest.mark.parametrize(
    ("config", "parts", "field", "words"),
    [
        (Config(max_fields=2), [Part(f"t{i}", b"v") for i in range(3)], "t2", ["max_fields=2"]),
        (Config(max_field_size=10), [Part("comment", b"x" * 11)], "comment", ["max_field_size", "10"]),
        (Config(max_parts=3), [Part(f"t{i}", b"v") for i in range(4)], None, ["max_parts=3"]),
    ],
)
def test_request_wide_limits_are_413(
    tmp_path: Path, config: Config, parts: list[Part], field: str | None, words: list[str]
) -> None:
    storage = LocalStorage(
        "document", required=False, config=config.model_copy(update={"destination": tmp_path})
    )
    body = encode([file_part("document", "a.txt", b"abc"), *parts])
    response = TestClient(single_route_app(storage)).post("/upload", content=body, headers=MULTIPART)
    assert_error(response, 413, field, *words)
    assert stored_files(tmp_path) == []


def test_a_filter_message_is_the_422_message(tmp_path: Path) -> None:
    def no_drafts(context: UploadContext) -> bool | str:
        return "drafts are not accepted" if "draft" in context.filename else True

    storage = LocalStorage("document", config=Config(destination=tmp_path, filters=no_drafts))
    client = TestClient(single_route_app(storage))
    assert client.post("/upload", files={"document": ("final.txt", b"ok")}).status_code == 200
    response = client.post("/upload", files={"document": ("draft.txt", b"no")})
    assert_error(response, 422, "document", "drafts are not accepted")
    assert stored_files(tmp_path) == ["final.txt"]


# 3. All or nothing per request


def test_a_rejected_second_file_removes_the_first(tmp_path: Path) -> None:
    calls: list[Any] = []
    storage = LocalStorage("document", count=2, config=Config(destination=tmp_path, max_file_size=1000))
    body = encode([file_part("document", "ok.txt", b"fine"), file_part("document", "big.txt", b"x" * 5000)])
    response = TestClient(single_route_app(storage, calls=calls)).post(
        "/upload", content=body, headers=MULTIPART
    )
    assert_error(response, 413, "document", "max_file_size")
    assert calls == [], "the handler is not called"
    assert stored_files(tmp_path) == []


def test_all_or_nothing_across_a_local_and_a_memory_field(tmp_path: Path) -> None:
    calls: list[Any] = []
    avatar = LocalStorage("avatar", config=Config(destination=tmp_path))
    photos = MemoryStorage("photos", count=3, config=Config(allowed_content_types=["image/*"]))
    body = encode(
        [
            file_part("avatar", "me.png", b"avatar", "image/png"),
            file_part("photos", "one.png", b"one", "image/png"),
            file_part("photos", "two.txt", b"two", "text/plain"),
        ]
    )
    app = single_route_app(avatar, photos, calls=calls)
    response = TestClient(app).post("/upload", content=body, headers=MULTIPART)
    assert_error(response, 415, "photos", "text/plain")
    assert calls == [], "no file of the memory field escaped either"
    assert stored_files(tmp_path) == []


def test_a_missing_required_field_removes_the_other_fields_files(tmp_path: Path) -> None:
    avatar = LocalStorage("avatar", config=Config(destination=tmp_path))
    photos = MemoryStorage("photos", count=3)
    body = encode([file_part("avatar", "me.png", b"avatar", "image/png")])
    response = TestClient(single_route_app(avatar, photos)).post("/upload", content=body, headers=MULTIPART)
    assert_error(response, 422, "photos", "required")
    assert stored_files(tmp_path) == []


def test_a_rejected_request_keeps_the_file_it_would_have_overwritten(tmp_path: Path) -> None:
    (tmp_path / "doc.pdf").write_bytes(b"precious")
    storage = LocalStorage(
        "document", count=2, config=Config(destination=tmp_path, overwrite=True, max_file_size=10)
    )
    body = encode([file_part("document", "doc.pdf", b"new"), file_part("document", "big.pdf", b"x" * 100)])
    response = TestClient(single_route_app(storage)).post("/upload", content=body, headers=MULTIPART)
    assert_error(response, 413, "document", "max_file_size")
    assert stored_files(tmp_path) == ["doc.pdf"]
    assert (tmp_path / "doc.pdf").read_bytes() == b"precious"


def test_a_request_fastapi_rejects_after_the_upload_leaves_nothing(tmp_path: Path) -> None:
    storage = LocalStorage("document", config=Config(destination=tmp_path))
    app = FastAPI()

    @app.post("/upload")
    async def upload(page: int, files: Annotated[list[FileData], Depends(storage)]) -> None:
        raise AssertionError("never called")

    response = TestClient(app).post("/upload?page=first", files={"document": ("a.txt", b"abc")})
    assert response.status_code == 422
    assert stored_files(tmp_path) == []


def test_a_handler_that_raises_leaves_nothing_and_one_that_returns_keeps_its_files(tmp_path: Path) -> None:
    storage = LocalStorage("document", config=Config(destination=tmp_path))
    app = FastAPI()

    @app.post("/upload")
    async def upload(refuse: bool, files: Annotated[list[FileData], Depends(storage)]) -> int:
        assert stored_files(tmp_path) == ["a.txt"]  # visible to the handler
        if refuse:
            raise HTTPException(status_code=409, detail="a ticket with that title exists")
        return len(files)

    client = TestClient(app)
    refused = client.post("/upload?refuse=true", files={"document": ("a.txt", b"abc")})
    assert refused.status_code == 409
    assert stored_files(tmp_path) == []
    accepted = client.post("/upload?refuse=false", files={"document": ("a.txt", b"abc")})
    assert accepted.json() == 1
    assert stored_files(tmp_path) == ["a.txt"]


class FailingStorage(MemoryStorage):
    """A backend whose writes fail, with an error text that must not reach the client."""

    async def open_writer(self, target: WriteRequest) -> Writer:
        class Broken(Writer):
            async def write(self, chunk: Chunk) -> None:
                raise OSError("disk full at /secret/mount/point")

            async def commit(self) -> StoredFile:
                raise AssertionError("never reached")

            async def abort(self) -> None:
                pass

        return Broken()


def test_a_backend_failure_is_500_without_leaking_and_rolls_back(tmp_path: Path) -> None:
    calls: list[Any] = []
    avatar = LocalStorage("avatar", config=Config(destination=tmp_path))
    broken = FailingStorage("attachment")
    body = encode([file_part("avatar", "me.png", b"avatar"), file_part("attachment", "a.bin", b"data")])
    response = TestClient(single_route_app(avatar, broken, calls=calls)).post(
        "/upload", content=body, headers=MULTIPART
    )
    assert response.status_code == 500
    # Generic on purpose (docs/errors.md): the field is in "loc", the backend's text nowhere.
    assert response.json() == {
        "detail": [
            {"loc": ["body", "attachment"], "msg": "the file could not be stored", "type": "storage_error"}
        ]
    }
    assert calls == []
    assert stored_files(tmp_path) == []


def test_a_failing_metadata_hook_rolls_back(tmp_path: Path) -> None:
    def broken(context: UploadContext) -> dict[str, Any]:
        raise RuntimeError("hook bug")

    storage = LocalStorage("document", config=Config(destination=tmp_path, metadata=broken))
    response = TestClient(single_route_app(storage)).post("/upload", files={"document": ("a.txt", b"abc")})
    assert response.status_code == 500
    assert "hook bug" not in response.text
    assert stored_files(tmp_path) == []


async def test_a_client_disconnect_mid_file_leaves_nothing(tmp_path: Path) -> None:
    storage = LocalStorage("document", count=2, config=Config(destination=tmp_path, chunk_size=1024))
    first = encode([file_part("document", "done.bin", b"1" * 3000)])[: -len(f"--{BOUNDARY}--\r\n")]
    messages: list[Message] = [
        {"type": "http.request", "body": first, "more_body": True},
        {
            "type": "http.request",
            "body": file_part("document", "cut.bin", b"").head() + b"2" * 5000,
            "more_body": True,
        },
        {"type": "http.disconnect"},
    ]

    async def receive() -> Message:
        return messages.pop(0)

    async def send(message: Message) -> None:
        pass

    with pytest.raises(ClientDisconnect):  # the server, not the app, deals with a client that is gone
        await single_route_app(storage)(upload_scope(), receive, send)
    assert messages == []
    assert stored_files(tmp_path) == []


# 4. Safe names


def test_traversal_in_a_client_name_stays_inside_the_destination(tmp_path: Path) -> None:
    destination = tmp_path / "uploads"
    storage = LocalStorage("document", config=Config(destination=destination))
    response = TestClient(single_route_app(storage)).post(
        "/upload", files={"document": ("../../escape.txt", b"abc")}
    )
    assert response.status_code == 200
    [stored] = response.json()["document"]
    assert stored["filename"] == "escape.txt"
    assert stored["original_filename"] == "../../escape.txt"
    assert stored_files(tmp_path) == ["uploads/escape.txt"]


def test_collisions_get_a_numeric_suffix(tmp_path: Path) -> None:
    storage = LocalStorage("document", count=2, config=Config(destination=tmp_path))
    client = TestClient(single_route_app(storage))
    names = []
    for content in (b"1", b"2", b"3"):
        response = client.post("/upload", files={"document": ("doc.pdf", content)})
        names += [f["filename"] for f in response.json()["document"]]
    both = encode([file_part("document", "doc.pdf", b"4"), file_part("document", "doc.pdf", b"5")])
    names += [
        f["filename"] for f in client.post("/upload", content=both, headers=MULTIPART).json()["document"]
    ]
    assert names == ["doc.pdf", "doc-1.pdf", "doc-2.pdf", "doc-3.pdf", "doc-4.pdf"]
    assert [(tmp_path / name).read_bytes() for name in names] == [b"1", b"2", b"3", b"4", b"5"]


async def test_concurrent_uploads_of_one_name_never_overwrite_each_other(tmp_path: Path) -> None:
    storage = LocalStorage("document", config=Config(destination=tmp_path))
    transport = httpx.ASGITransport(app=single_route_app(storage))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        responses = await asyncio.gather(
            *(
                client.post("/upload", files={"document": ("same.txt", f"upload {i}".encode())})
                for i in range(20)
            )
        )
    stored = [response.json()["document"][0] for response in responses]
    assert len({f["filename"] for f in stored}) == 20
    for i, f in enumerate(stored):
        assert (tmp_path / f["filename"]).read_bytes() == f"upload {i}".encode()
    assert len(stored_files(tmp_path)) == 20


def test_overwrite_replaces_the_existing_file(tmp_path: Path) -> None:
    storage = LocalStorage("document", config=Config(destination=tmp_path, overwrite=True))
    client = TestClient(single_route_app(storage))
    client.post("/upload", files={"document": ("doc.pdf", b"old")})
    response = client.post("/upload", files={"document": ("doc.pdf", b"new")})
    assert response.json()["document"][0]["filename"] == "doc.pdf"
    assert stored_files(tmp_path) == ["doc.pdf"]
    assert (tmp_path / "doc.pdf").read_bytes() == b"new"


def test_destination_directories_are_created(tmp_path: Path) -> None:
    storage = LocalStorage("document", config=Config(destination=tmp_path / "a" / "b" / "c"))
    response = TestClient(single_route_app(storage)).post("/upload", files={"document": ("x.txt", b"x")})
    assert response.status_code == 200
    assert stored_files(tmp_path) == ["a/b/c/x.txt"]


def test_without_sanitising_an_unsafe_name_is_422_and_nothing_is_stored(tmp_path: Path) -> None:
    storage = LocalStorage("document", config=Config(destination=tmp_path / "d", sanitize_filename=False))
    client = TestClient(single_route_app(storage))
    response = client.post("/upload", files={"document": ("../x.txt", b"x")})
    assert_error(response, 422, "document", "not safe")
    assert stored_files(tmp_path) == []
    assert client.post("/upload", files={"document": ("Good_Name.txt", b"x")}).status_code == 200
    assert stored_files(tmp_path) == ["d/Good_Name.txt"]


# 5. Undeclared file fields are drained; text fields are kept


async def test_file_parts_of_undeclared_fields_are_drained_not_stored(tmp_path: Path) -> None:
    calls: list[Any] = []
    storage = LocalStorage("document", config=Config(destination=tmp_path))
    parts = [
        file_part("unexpected", "junk.bin", os.urandom(300_000)),
        file_part("document", "a.txt", b"keep"),
        file_part("other", "more.bin", b"junk"),
    ]
    body = RecordingBody(streamed(parts))
    response = await post_streamed(single_route_app(storage, calls=calls), body)
    assert response.status_code == 200
    assert [f.filename for f in calls[0]["document"]] == ["a.txt"]
    assert body.sent == len(body.chunks), "the whole body was read"
    assert stored_files(tmp_path) == ["a.txt"]


def test_text_fields_reach_the_handler_and_the_hooks(tmp_path: Path) -> None:
    seen: list[dict[str, str]] = []

    def destination(context: UploadContext) -> Path:
        seen.append(dict(context.form))
        return tmp_path / context.form["user"]

    storage = LocalStorage("document", count=2, config=Config(destination=destination))
    app = FastAPI()

    @app.post("/upload")
    async def upload(
        files: Annotated[list[FileData], Depends(storage)],
        fields: Annotated[ImmutableMultiDict[str, str], Depends(form_fields)],
    ) -> dict[str, Any]:
        return {"files": [f.filename for f in files], "fields": fields.multi_items()}

    body = encode(
        [
            Part("user", b"alice"),
            Part("tag", "caf\u00e9".encode()),
            file_part("document", "one.txt", b"1"),
            Part("tag", b"late"),
            file_part("document", "two.txt", b"2"),
            Part("after", b"last"),
        ]
    )
    response = TestClient(app).post("/upload", content=body, headers=MULTIPART)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "files": ["one.txt", "two.txt"],
        "fields": [["user", "alice"], ["tag", "caf\u00e9"], ["tag", "late"], ["after", "last"]],
    }
    # Hooks see the text fields sent before the file (last value wins).
    assert seen == [{"user": "alice", "tag": "caf\u00e9"}, {"user": "alice", "tag": "late"}]
    assert stored_files(tmp_path) == ["alice/one.txt", "alice/two.txt"]


def test_filename_filters_and_metadata_hooks_through_a_route(tmp_path: Path) -> None:
    async def filename(context: UploadContext) -> str:
        return f"{context.form['user']}-{context.filename}"

    async def only_members(context: UploadContext) -> bool | str:
        return context.form.get("user") in {"erin"} or "members only"

    def metadata(context: UploadContext) -> dict[str, Any]:
        return {"owner": context.form["user"], "type": context.content_type}

    config = Config(destination=tmp_path, filename=filename, filters=only_members, metadata=metadata)
    client = TestClient(single_route_app(LocalStorage("document", config=config)))
    body = encode([Part("user", b"erin"), file_part("document", "cv.PDF", b"cv", "Application/PDF")])
    [stored] = client.post("/upload", content=body, headers=MULTIPART).json()["document"]
    assert stored["filename"] == "erin-cv.PDF"
    assert stored["metadata"]["relative_path"] == "erin-cv.PDF"  # the hook adds to what local sets
    assert {k: v for k, v in stored["metadata"].items() if k != "relative_path"} == {
        "owner": "erin",
        "type": "application/pdf",
    }
    body = encode([Part("user", b"frank"), file_part("document", "cv.pdf", b"cv")])
    assert_error(client.post("/upload", content=body, headers=MULTIPART), 422, "document", "members only")
    assert stored_files(tmp_path) == ["erin-cv.PDF"]


# 6. Several storages, one pass


def test_the_strictest_request_limit_of_the_route_applies(tmp_path: Path) -> None:
    lenient = LocalStorage("avatar", config=Config(destination=tmp_path))
    strict = MemoryStorage("photos", required=False, config=Config(max_body_size=500))
    body = encode([file_part("avatar", "me.png", b"x" * 1000)])
    response = TestClient(single_route_app(lenient, strict)).post("/upload", content=body, headers=MULTIPART)
    assert_error(response, 413, None, "max_body_size", "500")
    assert stored_files(tmp_path) == []


async def test_several_storages_share_one_pass_over_the_body(tmp_path: Path) -> None:
    calls: list[Any] = []
    avatar = LocalStorage("avatar", config=Config(destination=tmp_path))
    photos = MemoryStorage("photos", count=3)
    photo_data = [os.urandom(70_000) for _ in range(3)]
    parts = [
        file_part("photos", "1.png", photo_data[0], "image/png"),
        file_part("avatar", "me.png", b"avatar bytes", "image/png"),
        file_part("photos", "2.png", photo_data[1], "image/png"),
        file_part("photos", "3.png", photo_data[2], "image/png"),
    ]
    body = RecordingBody(streamed(parts))
    response = await post_streamed(single_route_app(avatar, photos, calls=calls), body)
    assert response.status_code == 200, response.text
    [files] = calls
    assert [f.filename for f in files["avatar"]] == ["me.png"]
    assert [f.file for f in files["photos"]] == photo_data
    assert body.sent == len(body.chunks)
    assert stored_files(tmp_path) == ["me.png"]
    assert [f.filename for f in files["photos"]] == ["1.png", "2.png", "3.png"]
