"""The example app `make run` serves: documents on local disk, images in memory."""

from __future__ import annotations

import importlib
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
