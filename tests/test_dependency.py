"""The public API as a route uses it: ``Depends(storage)``, ``FileData``, ``form_fields``."""

# No ``from __future__ import annotations``: FastAPI evaluates the routes' annotations at
# runtime, and they name storages that are local to each test.

import hashlib
import os
from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, File, Form, UploadFile
from fastapi.testclient import TestClient
from starlette.datastructures import ImmutableMultiDict

import filestore_fastapi
from filestore_fastapi import (
    Config,
    FileData,
    LocalStorage,
    MemoryStorage,
    Storage,
    UploadContext,
    form_fields,
)

from .test_multipart import CONTENT_TYPE, Part, encode, file_part
from .test_session import assert_error, single_route_app, stored_files

MULTIPART = {"content-type": CONTENT_TYPE}


def test_every_public_name_is_importable() -> None:
    for name in filestore_fastapi.__all__:
        assert getattr(filestore_fastapi, name) is not None, name
    from filestore_fastapi import Config, FileData, LocalStorage, MemoryStorage  # noqa: F401


@pytest.mark.parametrize("storage_class", [LocalStorage, MemoryStorage])
def test_every_backend_takes_the_same_arguments(storage_class: type[Storage]) -> None:
    config = Config(destination="uploads")
    # MemoryStorage holds every byte in memory: its files are limited unless the config says.
    own_defaults = {"max_file_size": 16 * 1024 * 1024} if storage_class is MemoryStorage else {}
    positional = storage_class("document", 3, False, config)
    keywords = storage_class(name="document", count=3, required=False, config=config)
    for storage in (positional, keywords):
        assert (storage.name, storage.count, storage.required, storage.config) == (
            "document",
            3,
            False,
            config.model_copy(update=own_defaults),
        )
    default = storage_class("document")
    assert (default.count, default.required, default.config) == (1, True, Config(**own_defaults))
    with pytest.raises(ValueError, match="count"):
        storage_class("document", count=0)


def test_the_issue_example_and_the_filedata_json_shape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    documents = LocalStorage(
        name="document", config=Config(destination="uploads/documents", base_url="/media/documents")
    )
    app = FastAPI()

    @app.post("/documents")
    async def upload(files: list[FileData] = Depends(documents)) -> list[FileData]:  # noqa: B008 (as in the issue)
        return files

    data = b"%PDF-1.7 fake"
    response = TestClient(app).post(
        "/documents", files={"document": ("my report #1 (\u00e9t\u00e9).PDF", data, "Application/PDF")}
    )
    assert response.status_code == 200, response.text
    [stored] = response.json()
    sent = "my report #1 (\u00e9t\u00e9).PDF"
    name = "my_report_1_\u00e9t\u00e9_.PDF"  # every character but letters, digits, . - _ becomes _
    assert stored == {
        "field_name": "document",
        "filename": name,
        "original_filename": sent,
        "content_type": "application/pdf",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "checksum_algorithm": "sha256",
        "checksum": hashlib.sha256(data).hexdigest(),
        "url": "/media/documents/my_report_1_%C3%A9t%C3%A9_.PDF",
        "storage": "local",
        "metadata": {"relative_path": name},  # relative to the destination, never absolute
    }
    assert "path" not in stored, "no server path in the JSON"
    assert (tmp_path / "uploads" / "documents" / name).read_bytes() == data


def test_without_base_url_there_is_no_url_and_a_missing_content_type_is_octet_stream(tmp_path: Path) -> None:
    storage = LocalStorage("document", config=Config(destination=tmp_path))
    body = encode([Part("document", b"abc", filename="a.txt")])  # no Content-Type header in the part
    response = TestClient(single_route_app(storage)).post("/upload", content=body, headers=MULTIPART)
    [stored] = response.json()["document"]
    assert stored["url"] is None
    assert stored["content_type"] == "application/octet-stream"


def test_memory_storage_hands_the_bytes_to_the_handler_but_not_to_json() -> None:
    images = MemoryStorage(name="image", count=3, config=Config(destination="images", base_url="/img"))
    app = FastAPI()
    seen: list[FileData] = []

    @app.post("/images")
    async def upload(files: Annotated[list[FileData], Depends(images)]) -> list[FileData]:
        seen.extend(files)
        return files

    response = TestClient(app).post(
        "/images",
        files=[("image", ("a.png", b"PNG-A", "image/png")), ("image", ("a.png", b"PNG-B", "image/png"))],
    )
    assert response.status_code == 200, response.text
    assert [f.file for f in seen] == [b"PNG-A", b"PNG-B"]
    assert [f.filename for f in seen] == ["images/a.png", "images/a-1.png"]
    assert not hasattr(images, "files"), "the bytes were the handler's, for the request only"
    for item in response.json():
        assert "file" not in item
        assert "path" not in item
        assert item["storage"] == "memory"
    assert [item["url"] for item in response.json()] == ["/img/images/a.png", "/img/images/a-1.png"]
    assert "PNG-A" not in repr(seen[0])


def test_form_fields_alone_reads_text_and_drains_files() -> None:
    app = FastAPI()

    @app.post("/fields")
    async def fields_only(
        fields: Annotated[ImmutableMultiDict[str, str], Depends(form_fields)],
    ) -> dict[str, Any]:
        return {"tags": fields.getlist("tag"), "title": fields["title"]}

    body = encode(
        [
            Part("title", b"Hello"),
            file_part("stray", "x.bin", os.urandom(1000)),
            Part("tag", b"a"),
            Part("tag", b"b"),
        ]
    )
    response = TestClient(app).post("/fields", content=body, headers=MULTIPART)
    assert response.json() == {"tags": ["a", "b"], "title": "Hello"}


def test_form_fields_declared_before_the_storage_still_shares_the_pass(tmp_path: Path) -> None:
    storage = LocalStorage("document", config=Config(destination=tmp_path))
    app = FastAPI()

    @app.post("/upload")
    async def upload(
        fields: Annotated[ImmutableMultiDict[str, str], Depends(form_fields)],
        files: Annotated[list[FileData], Depends(storage)],
    ) -> dict[str, Any]:
        return {"title": fields["title"], "files": [f.filename for f in files]}

    body = encode([Part("title", b"T"), file_part("document", "a.txt", b"abc")])
    assert TestClient(app).post("/upload", content=body, headers=MULTIPART).json() == {
        "title": "T",
        "files": ["a.txt"],
    }


def test_a_route_with_form_and_file_params_still_works(tmp_path: Path) -> None:
    """FastAPI parses the body first for Form()/File(); the storage then reads the parsed form."""
    storage = LocalStorage("document", count=2, config=Config(destination=tmp_path, max_file_size=10_000))
    app = FastAPI()

    @app.post("/upload")
    async def upload(
        title: Annotated[str, Form()],
        cover: Annotated[UploadFile, File()],
        files: Annotated[list[FileData], Depends(storage)],
    ) -> dict[str, Any]:
        return {"title": title, "cover": await cover.read(), "files": files}

    data = os.urandom(5000)
    client = TestClient(app)
    body = encode(
        [
            Part("title", b"Annual"),
            file_part("cover", "c.png", b"COVER", "image/png"),
            file_part("document", "a.bin", data),
            file_part("document", "b.bin", b"second"),
        ]
    )
    response = client.post("/upload", content=body, headers=MULTIPART)
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["title"], result["cover"]) == ("Annual", "COVER")
    assert [(f["filename"], f["size"]) for f in result["files"]] == [("a.bin", 5000), ("b.bin", 6)]
    assert result["files"][0]["sha256"] == hashlib.sha256(data).hexdigest()
    assert sorted(stored_files(tmp_path)) == ["a.bin", "b.bin"]

    # The rules still hold on that path, all or nothing included.
    too_big = encode(
        [
            Part("title", b"Annual"),
            file_part("cover", "c.png", b"COVER"),
            file_part("document", "ok.bin", b"fine"),
            file_part("document", "big.bin", b"x" * 20_000),
        ]
    )
    assert_error(client.post("/upload", content=too_big, headers=MULTIPART), 413, "document", "max_file_size")
    assert sorted(stored_files(tmp_path)) == ["a.bin", "b.bin"]


def test_storages_inside_sub_dependencies_share_the_pass(tmp_path: Path) -> None:
    avatar = LocalStorage("avatar", config=Config(destination=tmp_path))
    photos = MemoryStorage("photos", count=2)

    async def profile(avatar_files: Annotated[list[FileData], Depends(avatar)]) -> str:
        return avatar_files[0].filename

    app = FastAPI()

    @app.post("/profile")
    async def upload(
        avatar_name: Annotated[str, Depends(profile)], photo_files: Annotated[list[FileData], Depends(photos)]
    ) -> dict[str, Any]:
        return {"avatar": avatar_name, "photos": [f.filename for f in photo_files]}

    body = encode(
        [
            file_part("photos", "p1.png", b"1"),
            file_part("avatar", "me.png", b"me"),
            file_part("photos", "p2.png", b"2"),
        ]
    )
    response = TestClient(app).post("/profile", content=body, headers=MULTIPART)
    assert response.json() == {"avatar": "me.png", "photos": ["p1.png", "p2.png"]}


def test_one_storage_serves_many_requests_and_routes(tmp_path: Path) -> None:
    storage = LocalStorage("document", config=Config(destination=tmp_path))
    app = FastAPI()

    @app.post("/a")
    async def route_a(files: Annotated[list[FileData], Depends(storage)]) -> list[str]:
        return [f.filename for f in files]

    @app.post("/b")
    async def route_b(files: Annotated[list[FileData], Depends(storage)]) -> list[str]:
        return [f.filename for f in files]

    client = TestClient(app)
    assert client.post("/a", files={"document": ("1.txt", b"1")}).json() == ["1.txt"]
    assert client.post("/b", files={"document": ("2.txt", b"2")}).json() == ["2.txt"]
    assert_error(client.post("/a", files={"other": ("3.txt", b"3")}), 422, "document", "required")
    assert stored_files(tmp_path) == ["1.txt", "2.txt"]


def test_two_storages_for_one_field_on_a_route_are_refused() -> None:
    first, second = MemoryStorage("document"), MemoryStorage("document")
    app = FastAPI()

    @app.post("/upload")
    async def upload(
        a: Annotated[list[FileData], Depends(first)], b: Annotated[list[FileData], Depends(second)]
    ) -> None:
        raise AssertionError("never called")

    with pytest.raises(ValueError, match="same field name"):
        TestClient(app).post("/upload", files={"document": ("a.txt", b"a")})


@pytest.mark.parametrize("is_async", [False, True])
def test_a_callable_destination(tmp_path: Path, is_async: bool) -> None:
    def per_user(context: UploadContext) -> Path:
        return tmp_path / context.form.get("user", "anonymous") / context.field_name

    async def per_user_async(context: UploadContext) -> Path:
        return per_user(context)

    storage = LocalStorage("document", config=Config(destination=per_user_async if is_async else per_user))
    client = TestClient(single_route_app(storage))
    body = encode([Part("user", b"dana"), file_part("document", "cv.pdf", b"cv")])
    [stored] = client.post("/upload", content=body, headers=MULTIPART).json()["document"]
    assert stored["metadata"]["relative_path"] == "cv.pdf"  # the hook's folder is absolute: not shown
    client.post("/upload", files={"document": ("cv.pdf", b"cv")})
    assert stored_files(tmp_path) == ["anonymous/document/cv.pdf", "dana/document/cv.pdf"]


async def test_stored_files_can_be_read_back_and_deleted(tmp_path: Path) -> None:
    local = LocalStorage("avatar", config=Config(destination=tmp_path, chunk_size=3))
    memory = MemoryStorage("photo", config=Config(chunk_size=3))
    app = single_route_app(local, memory)
    body = encode(
        [file_part("avatar", "a.txt", b"avatar-bytes"), file_part("photo", "p.txt", b"photo-bytes")]
    )
    files = TestClient(app).post("/upload", content=body, headers=MULTIPART).json()
    chunks = [chunk async for chunk in local.open(files["avatar"][0]["filename"])]
    assert b"".join(chunks) == b"avatar-bytes"
    assert max(len(chunk) for chunk in chunks) <= 3
    await local.delete(files["avatar"][0]["filename"])
    assert stored_files(tmp_path) == []
    # A memory file was the handler's for the request only: nothing to read back or delete.
    with pytest.raises(FileNotFoundError):
        _ = [chunk async for chunk in memory.open(files["photo"][0]["filename"])]
    await memory.delete(files["photo"][0]["filename"])


def test_relative_path_is_under_the_folder_a_destination_hook_returned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    storage = LocalStorage("document", config=Config(destination=lambda context: "uploads/2026/11"))
    [stored] = (
        TestClient(single_route_app(storage))
        .post("/upload", files={"document": ("report.pdf", b"r")})
        .json()["document"]
    )
    assert stored["metadata"]["relative_path"] == "uploads/2026/11/report.pdf"
    assert (tmp_path / "uploads" / "2026" / "11" / "report.pdf").read_bytes() == b"r"
