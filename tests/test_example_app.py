"""The example app `make run` serves: documents on local disk (multipart or tus), images in memory."""

from __future__ import annotations

import base64
import hashlib
import importlib
import os
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TestClient:
    monkeypatch.setenv("FILESTORE_BACKEND", "local")
    monkeypatch.setenv("FILESTORE_DESTINATION", str(tmp_path / "documents"))
    sys.modules.pop("example_app.main", None)
    main = importlib.import_module("example_app.main")
    return TestClient(main.app)


def test_documents_go_to_disk_and_download_back(client: TestClient, tmp_path: Path) -> None:
    response = client.post("/documents", files={"document": ("notes.txt", b"hello", "text/plain")})
    assert response.status_code == 200
    (stored,) = response.json()
    assert (tmp_path / "documents" / stored["name"]).read_bytes() == b"hello"
    assert client.get(stored["download_url"]).content == b"hello"


def test_images_stay_in_memory_and_must_be_images(client: TestClient, tmp_path: Path) -> None:
    response = client.post("/images", files={"image": ("dot.png", b"\x89PNG\r\n", "image/png")})
    assert response.status_code == 200
    assert response.json()[0]["storage"] == "memory"
    assert "file" not in response.json()[0]
    refused = client.post("/images", files={"image": ("dot.txt", b"text", "text/plain")})
    assert refused.status_code == 415
    assert not (tmp_path / "documents").exists() or not any((tmp_path / "documents").iterdir())


TUS = {"Tus-Resumable": "1.0.0"}


def tus_metadata(**values: str) -> str:
    return ",".join(f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in values.items())


def test_resumable_uploads_land_beside_the_documents(client: TestClient, tmp_path: Path) -> None:
    settings = client.get("/api/settings").json()
    endpoint = settings["resumable_endpoint"]
    assert endpoint == "/uploads/resumable"
    data = os.urandom(70_000)
    created = client.post(
        endpoint,
        headers={**TUS, "Upload-Length": str(len(data)), "Upload-Metadata": tus_metadata(filename="big.pdf")},
    )
    assert created.status_code == 201, created.text
    url = created.headers["Location"]
    for offset in (0, 30_000):
        piece = data[offset : offset + 30_000] if offset == 0 else data[offset:]
        headers = {**TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": str(offset)}
        assert client.patch(url, content=piece, headers=headers).status_code == 204
    stored = client.get(url).json()  # what the page shows once tus-js-client is done
    assert stored["filename"] == "big.pdf" and stored["url"] == "/media/documents/big.pdf"
    assert stored["sha256"] == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "documents" / "big.pdf").read_bytes() == data
    assert client.get(stored["url"]).content == data
    # The same limits as /documents: an .exe is refused at creation.
    refused = client.post(
        endpoint, headers={**TUS, "Upload-Length": "10", "Upload-Metadata": tus_metadata(filename="x.exe")}
    )
    assert refused.status_code == 415


def test_the_resumable_state_is_never_served_as_a_file(client: TestClient, tmp_path: Path) -> None:
    created = client.post(
        "/uploads/resumable",
        headers={**TUS, "Upload-Length": "10", "Upload-Metadata": tus_metadata(filename="a.txt")},
    )
    upload_id = created.headers["Location"].rsplit("/", 1)[1]
    assert (tmp_path / "documents" / ".tus" / upload_id / "info").is_file()
    assert client.get(f"/media/documents/.tus/{upload_id}/info").status_code == 404
    assert client.get(f"/files/.tus/{upload_id}/info").status_code == 404  # the route every backend has


def test_tus_js_client_is_served_from_npm_or_explained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dist = tmp_path / "dist"
    monkeypatch.setenv("FILESTORE_TUS_JS_DIST", str(dist))
    monkeypatch.setenv("FILESTORE_DESTINATION", str(tmp_path / "documents"))
    sys.modules.pop("example_app.main", None)
    client = TestClient(importlib.import_module("example_app.main").app)
    missing = client.get("/vendor/tus.min.js")
    assert missing.status_code == 404 and "npm" in missing.text
    assert client.get("/api/settings").json()["resumable_client"] is False
    dist.mkdir()
    (dist / "tus.min.js").write_text("var tus = {};")
    served = client.get("/vendor/tus.min.js")
    assert served.status_code == 200 and served.text == "var tus = {};"
    assert served.headers["content-type"].startswith("text/javascript")
    assert client.get("/api/settings").json()["resumable_client"] is True


def test_a_patch_sent_as_post_with_the_override_header_is_a_patch(client: TestClient) -> None:
    """tus 1.0: ``X-HTTP-Method-Override`` is the request's method (tus-js-client's
    ``overridePatchMethod``, for proxies and browsers that refuse PATCH)."""
    created = client.post(
        "/uploads/resumable",
        headers={**TUS, "Upload-Length": "5", "Upload-Metadata": tus_metadata(filename="o.txt")},
    )
    url = created.headers["Location"]
    headers = {**TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
    sent = client.post(url, content=b"hello", headers={**headers, "X-HTTP-Method-Override": "PATCH"})
    assert sent.status_code == 204, sent.text
    assert sent.headers["Upload-Offset"] == "5"
    assert client.get(url).json()["sha256"] == hashlib.sha256(b"hello").hexdigest()
    assert client.post(url, headers=TUS).status_code == 405  # a POST without it is still no method here
