"""Reliability item 3: every limit holds when the body was parsed before the storage ran.

A ``Form()`` parameter on the route (or a dependency awaiting ``request.form()``) makes
FastAPI read and spool the whole body first; the storage then gets the parsed form. The
same checks must refuse it, with the same answers, and store nothing.
"""

from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, Form, Request
from fastapi.testclient import TestClient

from filestore_fastapi import Config, FileData, LocalStorage
from tests.contract.conftest import ContractHarness

MiB = 1024 * 1024


def app_with_form_param(storage: Any) -> FastAPI:
    app = FastAPI()

    @app.post("/upload")
    async def upload(
        files: Annotated[list[FileData], Depends(storage)], note: Annotated[str, Form()] = ""
    ) -> list[str]:
        return [f.filename for f in files]

    return app


def app_with_form_dependency(storage: Any) -> FastAPI:
    async def read_form(request: Request) -> int:
        return len(await request.form())

    app = FastAPI()

    @app.post("/upload", dependencies=[Depends(read_form)])
    async def upload(files: Annotated[list[FileData], Depends(storage)]) -> list[str]:
        return [f.filename for f in files]

    return app


CASES = [
    # (config, files, text fields, status, words the message must contain)
    ({"max_body_size": MiB}, [("a.bin", 2 * MiB)], {}, 413, "max_body_size of 1048576"),
    ({"max_file_size": 1000}, [("a.bin", 1001)], {}, 413, "max_file_size of 1000"),
    ({}, [("a.bin", 1), ("b.bin", 1)], {}, 422, "count=1"),
    ({"max_fields": 1}, [("a.bin", 1)], {"note": "x", "other": "y"}, 413, "max_fields=1"),
    ({"max_parts": 2}, [("a.bin", 1)], {"note": "x", "other": "y"}, 413, "max_parts=2"),
    ({"max_field_size": 10}, [("a.bin", 1)], {"note": "x" * 11}, 413, "max_field_size of 10"),
    ({"max_form_memory": 300}, [("a.bin", 1)], {"note": "x" * 100}, 413, "max_form_memory of 300"),
    ({"allowed_extensions": [".png"]}, [("a.exe", 1)], {}, 415, "'.exe' is not allowed"),
    ({"allowed_content_types": ["image/png"]}, [("a.png", 1)], {}, 415, "is not allowed"),
    ({"min_file_size": 10}, [("a.bin", 9)], {}, 422, "min_file_size of 10"),
    ({"sanitize_filename": False}, [("../../etc/passwd", 1)], {}, 422, "not safe"),
]


@pytest.mark.parametrize("make_app", [app_with_form_param, app_with_form_dependency])
@pytest.mark.parametrize(("config", "files", "fields", "status", "words"), CASES)
def test_limits_hold_on_a_body_parsed_before_the_storage(
    hardening_local: ContractHarness,
    make_app: Any,
    config: dict[str, Any],
    files: list[tuple[str, int]],
    fields: dict[str, str],
    status: int,
    words: str,
) -> None:
    storage = hardening_local.make("file", **config)
    assert isinstance(storage, LocalStorage)
    client = TestClient(make_app(storage))
    sent = [("file", (name, b"x" * size, "application/octet-stream")) for name, size in files]
    reply = client.post("/upload", files=sent, data=fields)
    assert reply.status_code == status, reply.text
    assert words in reply.json()["detail"][0]["msg"]
    assert stored_names(storage) == [], "nothing of a refused request is stored"


def stored_names(storage: LocalStorage) -> list[str]:
    """Everything in the destination, hidden temp files included."""
    destination = Path(str(storage.config.destination))
    return sorted(path.name for path in destination.glob("*")) if destination.exists() else []


def test_a_parsed_body_within_the_limits_is_stored(hardening_local: ContractHarness) -> None:
    storage = hardening_local.make("file", max_body_size=MiB, max_file_size=1000)
    client = TestClient(app_with_form_param(storage))
    reply = client.post("/upload", files=[("file", ("a.bin", b"x" * 1000))], data={"note": "hi"})
    assert reply.status_code == 200, reply.text
    assert reply.json() == ["a.bin"]


def test_declared_length_is_checked_on_a_parsed_body_too(tmp_path: Path) -> None:
    storage = LocalStorage("file", config=Config(destination=str(tmp_path), max_body_size=100))
    client = TestClient(app_with_form_param(storage))
    reply = client.post("/upload", files=[("file", ("a.bin", b"x" * 200))])
    assert reply.status_code == 413
    assert "request body of" in reply.json()["detail"][0]["msg"]
