"""The upload fields of a route, in ``/openapi.json`` as FastAPI shows its own ``File()`` params.

No ``from __future__ import annotations``: FastAPI must evaluate the routes' annotations,
which name storages local to each test.
"""

import asyncio
import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, Depends, FastAPI, File, Form, UploadFile
from pydantic import BaseModel, Field

from filestore_fastapi import (
    Config,
    FileData,
    FormModel,
    LocalStorage,
    MemoryStorage,
    UploadContext,
    add_upload_bodies,
    install_openapi,
)
from tests.httpclient import httpx

Files = list[FileData]


def body_of(schema: dict[str, Any], path: str, method: str = "post") -> dict[str, Any]:
    """The component a route's multipart body refers to."""
    body = schema["paths"][path][method]["requestBody"]
    ref = body["content"]["multipart/form-data"]["schema"]["$ref"]
    component: dict[str, Any] = schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    return component


def without_binary_format(schema: Any) -> Any:
    """FastAPI's own schema has no ``format: binary`` (see ``_mark_binary``); ours adds it."""
    if isinstance(schema, dict):
        return {k: without_binary_format(v) for k, v in schema.items() if (k, v) != ("format", "binary")}
    if isinstance(schema, list):
        return [without_binary_format(item) for item in schema]
    return schema


def test_a_storage_shows_exactly_as_fastapi_file_params() -> None:
    ours, theirs = FastAPI(), FastAPI()
    install_openapi(ours)
    documents = MemoryStorage("document", count=3)
    avatar = MemoryStorage("avatar", required=False)

    @ours.post("/upload")
    async def upload(
        docs: Annotated[Files, Depends(documents)], pic: Annotated[Files, Depends(avatar)]
    ) -> int:
        return len(docs) + len(pic)

    @theirs.post("/upload", name="upload")  # the same name gives the same operation id
    async def native_upload(
        document: Annotated[list[UploadFile], File(max_length=3)],
        avatar: UploadFile = File(None),  # noqa: B008  # FastAPI's optional file without anyOf
    ) -> int:
        return 0

    schema, reference = ours.openapi(), theirs.openapi()
    assert without_binary_format(schema) == reference
    body = body_of(schema, "/upload")
    assert body["properties"]["document"] == {
        "type": "array",
        "items": {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream"},
        "maxItems": 3,
        "title": "Document",
    }
    assert body["properties"]["avatar"]["type"] == "string"
    assert body["properties"]["avatar"]["format"] == "binary"
    assert body["required"] == ["document"]
    assert schema["paths"]["/upload"]["post"]["requestBody"]["required"] is True


def test_storages_in_sub_dependencies_and_route_dependencies_and_routers() -> None:
    app = FastAPI()
    install_openapi(app)
    scans = MemoryStorage("scan", count=2)
    cover = MemoryStorage("cover", required=False)
    audit = MemoryStorage("audit")

    async def scanned(files: Annotated[Files, Depends(scans)]) -> int:
        return len(files)

    async def checked(
        count: Annotated[int, Depends(scanned)], extra: Annotated[Files, Depends(cover)]
    ) -> int:
        return count + len(extra)

    router = APIRouter()

    @router.post("/batches/{batch}", dependencies=[Depends(audit)])
    async def create(batch: int, count: Annotated[int, Depends(checked)]) -> int:
        return count

    app.include_router(router, prefix="/v1")

    schema = app.openapi()
    operation = schema["paths"]["/v1/batches/{batch}"]["post"]
    body = body_of(schema, "/v1/batches/{batch}")
    assert list(body["properties"]) == ["audit", "scan", "cover"]  # FastAPI's order for body params
    assert body["properties"]["scan"]["maxItems"] == 2
    assert body["required"] == ["audit", "scan"]
    assert [p["name"] for p in operation["parameters"]] == ["batch"]  # FastAPI's own part is kept


def test_routes_without_storages_are_left_exactly_as_fastapi_made_them() -> None:
    plain, installed = FastAPI(), FastAPI()
    install_openapi(installed)
    storage = MemoryStorage("file")
    for app in (plain, installed):

        @app.get("/items/{item}")
        async def read(item: int, q: str | None = None) -> dict[str, int]:
            return {"item": item}

        @app.post("/hidden", include_in_schema=False)
        async def hidden(files: Annotated[Files, Depends(storage)]) -> int:
            return len(files)

    assert installed.openapi() == plain.openapi()


class Meta(BaseModel):
    title: str = Field(description="Shown with the file.")
    tags: list[str] = []
    pages: int | None = None


def test_form_model_fields_are_documented_beside_the_files() -> None:
    app = FastAPI()
    install_openapi(app)
    storage = MemoryStorage("file")

    @app.post("/upload")
    async def upload(
        files: Annotated[Files, Depends(storage)], meta: Annotated[Meta, Depends(FormModel(Meta))]
    ) -> Meta:
        return meta

    body = body_of(app.openapi(), "/upload")
    assert list(body["properties"]) == ["file", "title", "tags", "pages"]
    assert body["required"] == ["file", "title"]
    assert body["properties"]["title"] == {
        "type": "string",
        "title": "Title",
        "description": "Shown with the file.",
    }
    assert body["properties"]["tags"]["type"] == "array"
    assert body["properties"]["tags"]["items"] == {"type": "string"}


def test_a_form_model_alone_is_a_multipart_body() -> None:
    app = FastAPI()
    install_openapi(app)

    @app.post("/notes")
    async def note(meta: Annotated[Meta, Depends(FormModel(Meta))]) -> Meta:
        return meta

    schema = app.openapi()
    assert list(schema["paths"]["/notes"]["post"]["requestBody"]["content"]) == ["multipart/form-data"]
    assert body_of(schema, "/notes")["required"] == ["title"]


async def test_form_model_validates_text_fields_like_fastapi_forms(tmp_path: Path) -> None:
    app = FastAPI()
    storage = LocalStorage("file", config=Config(destination=tmp_path))

    @app.post("/upload")
    async def upload(
        files: Annotated[Files, Depends(storage)], meta: Annotated[Meta, Depends(FormModel(Meta))]
    ) -> dict[str, Any]:
        return {"meta": meta.model_dump(), "stored": [f.filename for f in files]}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        # The file is stored before the text fields are validated, and removed on a 422.
        missing = await client.post("/upload", data={"pages": "many"}, files={"file": ("a.txt", b"x")})
        assert sorted(p.name for p in tmp_path.iterdir()) == []
        fields = {"title": "Q3", "tags": ["a", "b"], "pages": ""}
        ok = await client.post("/upload", data=fields, files={"file": ("b.txt", b"y")})

    assert missing.status_code == 422
    problems = {tuple(error["loc"]): error["type"] for error in missing.json()["detail"]}
    assert problems == {("body", "title"): "missing", ("body", "pages"): "int_parsing"}
    assert ok.status_code == 200, ok.text
    assert ok.json() == {"meta": {"title": "Q3", "tags": ["a", "b"], "pages": None}, "stored": ["b.txt"]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.txt"]


async def test_the_documented_route_still_streams() -> None:
    """The route sees its file's first bytes while the client has not finished sending:
    had FastAPI parsed the form first, the body below would wait forever (and time out)."""
    headers_seen = asyncio.Event()

    def note_headers(context: UploadContext) -> bool:
        headers_seen.set()
        return True

    app = FastAPI()
    install_openapi(app)
    storage = MemoryStorage("file", config=Config(filters=note_headers))

    @app.post("/upload")
    async def upload(files: Annotated[Files, Depends(storage)]) -> list[int]:
        return [f.size for f in files]

    assert "requestBody" in app.openapi()["paths"]["/upload"]["post"]
    boundary = "streaming-proof"
    chunk = b"z" * 65536

    async def body() -> AsyncIterator[bytes]:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n'
        ).encode() + chunk
        await asyncio.wait_for(headers_seen.wait(), timeout=5)  # the server is working already
        for _ in range(63):
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post(
            "/upload", content=body(), headers={"content-type": f"multipart/form-data; boundary={boundary}"}
        )
    assert response.status_code == 200, response.text
    assert response.json() == [64 * 65536]


def test_a_request_body_the_route_declares_itself_is_kept() -> None:
    app = FastAPI()
    install_openapi(app)
    storage = MemoryStorage("file")
    declared = {"content": {"multipart/form-data": {"schema": {"type": "object", "description": "by hand"}}}}

    @app.post("/upload", openapi_extra={"requestBody": declared})
    async def upload(files: Annotated[Files, Depends(storage)]) -> int:
        return len(files)

    assert app.openapi()["paths"]["/upload"]["post"]["requestBody"] == declared


def test_fastapi_form_params_on_the_same_route_share_one_body() -> None:
    app = FastAPI()
    install_openapi(app)
    storage = MemoryStorage("file")

    @app.post("/upload")
    async def upload(note: Annotated[str, Form()], files: Annotated[Files, Depends(storage)]) -> int:
        return len(files)

    schema = app.openapi()
    content = schema["paths"]["/upload"]["post"]["requestBody"]["content"]
    assert list(content) == ["multipart/form-data"]
    body = body_of(schema, "/upload")
    assert list(body["properties"]) == ["note", "file"]
    assert body["required"] == ["note", "file"]


def test_installing_twice_or_after_a_first_schema_changes_nothing() -> None:
    app = FastAPI()
    storage = MemoryStorage("file", count=2)

    @app.put("/upload")
    async def upload(files: Annotated[Files, Depends(storage)]) -> int:
        return len(files)

    before = copy.deepcopy(app.openapi())  # cached by FastAPI before the install
    assert "requestBody" not in before["paths"]["/upload"]["put"]
    install_openapi(app)
    once = copy.deepcopy(app.openapi())
    install_openapi(app)
    assert app.openapi() == once
    assert body_of(once, "/upload", "put")["properties"]["file"]["maxItems"] == 2
    assert add_upload_bodies(copy.deepcopy(once), app.routes) == once


@pytest.mark.parametrize("name", ["my-file", "class", "files[]"])
def test_field_names_that_are_not_python_identifiers(name: str) -> None:
    app = FastAPI()
    install_openapi(app)
    storage = MemoryStorage(name)

    @app.post("/upload")
    async def upload(files: Annotated[Files, Depends(storage)]) -> int:
        return len(files)

    assert list(body_of(app.openapi(), "/upload")["properties"]) == [name]


def test_two_storages_declaring_one_field_fail_at_install_naming_field_and_route() -> None:
    first, second = MemoryStorage("doc"), MemoryStorage("doc", required=False)
    app = FastAPI()

    @app.post("/docs/upload")
    async def upload(
        a: list[FileData] = Depends(first),  # noqa: B008
        b: list[FileData] = Depends(second),  # noqa: B008
    ) -> int:
        return len(a) + len(b)

    with pytest.raises(ValueError, match=r"route POST /docs/upload: .* both declare the field 'doc'"):
        install_openapi(app)


def test_a_route_added_after_install_is_checked_when_the_schema_is_built() -> None:
    app = FastAPI()
    install_openapi(app)
    first, second = MemoryStorage("doc"), MemoryStorage("doc")

    @app.post("/late")
    async def late(
        a: list[FileData] = Depends(first),  # noqa: B008
        b: list[FileData] = Depends(second),  # noqa: B008
    ) -> int:
        return 0

    with pytest.raises(ValueError, match="both declare the field 'doc'"):
        app.openapi()


def test_one_storage_used_twice_on_a_route_is_fine() -> None:
    storage = MemoryStorage("doc")
    app = FastAPI()

    @app.post("/twice", dependencies=[Depends(storage)])
    async def twice(a: list[FileData] = Depends(storage)) -> int:  # noqa: B008
        return len(a)

    install_openapi(app)
    assert "/twice" in app.openapi()["paths"]
