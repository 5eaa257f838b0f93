"""Plain Starlette: ``receive`` in the endpoint, ``exception_handlers`` on the app.

Refusals answer as on FastAPI (with the handlers) or at least with their status (without);
an endpoint that raises after ``receive`` keeps no file; on a real uvicorn too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from filestore_fastapi import Config, FileData, LocalStorage, exception_handlers, receive
from tests.e2e.server import run_uvicorn
from tests.httpclient import httpx


def storages(root: Path) -> tuple[LocalStorage, LocalStorage]:
    documents = LocalStorage(
        "document",
        count=2,
        config=Config(destination=str(root / "documents"), max_file_size=100, allowed_extensions=[".pdf"]),
    )
    images = LocalStorage("image", required=False, config=Config(destination=str(root / "images")))
    return documents, images


def starlette_app(root: Path, *, handlers: bool = True, then: Exception | None = None) -> Starlette:
    documents, images = storages(root)

    async def upload(request: Request) -> JSONResponse:
        files = await receive(request, documents, images)
        if then is not None:
            raise then
        return JSONResponse({name: [f.filename for f in got] for name, got in files.items()})

    routes = [Route("/upload", upload, methods=["POST"])]
    return Starlette(routes=routes, exception_handlers=exception_handlers if handlers else None)


def fastapi_app(root: Path) -> FastAPI:
    documents, images = storages(root)
    app = FastAPI()

    @app.post("/upload")
    async def upload(
        docs: list[FileData] = Depends(documents),  # noqa: B008
        imgs: list[FileData] = Depends(images),  # noqa: B008
    ) -> dict[str, list[str]]:
        return {"document": [f.filename for f in docs], "image": [f.filename for f in imgs]}

    return app


def stored(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_receive_stores_every_field_of_the_body(tmp_path: Path) -> None:
    client = TestClient(starlette_app(tmp_path))
    files = [("document", ("a.pdf", b"A")), ("document", ("b.pdf", b"B")), ("image", ("c.png", b"C"))]
    reply = client.post("/upload", files=files)
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"document": ["a.pdf", "b.pdf"], "image": ["c.png"]}
    assert stored(tmp_path) == ["documents/a.pdf", "documents/b.pdf", "images/c.png"]


REFUSALS = [
    ([("document", ("a.pdf", b"x" * 101))], 413),
    ([("document", ("a.exe", b"x"))], 415),
    ([("image", ("c.png", b"C"))], 422),  # the required document is missing
    ([("document", (f"{n}.pdf", b"x")) for n in range(3)], 422),  # count=2
]


@pytest.mark.parametrize(("files", "status"), REFUSALS)
def test_refusals_answer_as_on_fastapi(tmp_path: Path, files: list[Any], status: int) -> None:
    plain = TestClient(starlette_app(tmp_path / "plain")).post("/upload", files=files)
    fastapi = TestClient(fastapi_app(tmp_path / "fastapi")).post("/upload", files=files)
    assert plain.status_code == fastapi.status_code == status
    assert plain.json() == fastapi.json()
    assert plain.headers["content-type"] == "application/json"
    assert stored(tmp_path) == []


@pytest.mark.parametrize(("files", "status"), REFUSALS)
def test_refusals_keep_their_status_without_the_handlers(
    tmp_path: Path, files: list[Any], status: int
) -> None:
    client = TestClient(starlette_app(tmp_path, handlers=False), raise_server_exceptions=False)
    reply = client.post("/upload", files=files)
    assert reply.status_code == status, "not a 500"
    assert reply.json()["detail"][0]["loc"][0] == "body"  # the same detail, as text
    assert stored(tmp_path) == []


@pytest.mark.parametrize(
    ("error", "status"), [(HTTPException(403, "not yours"), 403), (RuntimeError("bug"), 500)]
)
def test_an_endpoint_raising_after_receive_keeps_no_file(
    tmp_path: Path, error: Exception, status: int
) -> None:
    client = TestClient(starlette_app(tmp_path, then=error), raise_server_exceptions=False)
    reply = client.post("/upload", files=[("document", ("a.pdf", b"A")), ("image", ("c.png", b"C"))])
    assert reply.status_code == status
    assert stored(tmp_path) == []


def test_receive_needs_a_storage(tmp_path: Path) -> None:
    async def upload(request: Request) -> JSONResponse:
        await receive(request)
        return JSONResponse({})

    app = Starlette(routes=[Route("/upload", upload, methods=["POST"])])
    with pytest.raises(TypeError, match="at least one storage"):
        TestClient(app).post("/upload", files=[("document", ("a.pdf", b"A"))])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("starlette")
    with run_uvicorn("tests.e2e.apps.starlette_app:app", {"UPLOAD_DIR": str(root)}) as running:
        yield running.url, root


def test_on_uvicorn_receive_stores_and_refusals_are_4xx(server: tuple[str, Path]) -> None:
    url, root = server
    files = [("document", ("a.pdf", b"A")), ("image", ("c.png", b"C"))]
    reply = httpx.post(url + "/upload", files=files)
    assert reply.status_code == 200, reply.text
    assert [f["filename"] for f in reply.json()["document"]] == ["a.pdf"]
    assert (root / "documents" / "a.pdf").read_bytes() == b"A"

    too_big = httpx.post(url + "/upload", files=[("document", ("big.pdf", b"x" * (2 * 1024 * 1024)))])
    assert too_big.status_code == 413
    assert too_big.json()["detail"][0]["loc"] == ["body", "document"]
    assert not (root / "documents" / "big.pdf").exists()


def test_on_uvicorn_an_endpoint_that_raises_keeps_no_file(server: tuple[str, Path]) -> None:
    url, root = server
    reply = httpx.post(url + "/fail", files=[("document", ("gone.pdf", b"G"))])
    assert reply.status_code == 500
    assert not (root / "documents" / "gone.pdf").exists()
