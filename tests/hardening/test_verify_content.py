"""Item 7: ``verify_content=True`` judges a file by its first bytes, and refuses (415) a
file whose real type is not allowed before the backend stores or even opens anything."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import sys
import zipfile
import zlib
from pathlib import Path

import pytest

from filestore_fastapi import Config, FileData, LocalStorage
from tests.contract.conftest import KEEPS_NOTHING, ContractHarness

from .routes import upload_app
from .support import asgi_post, cut, file_part, form


def png(width: int = 2, height: int = 2) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def zip_archive() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("payload.sh", "#!/bin/sh\necho owned\n")
    return buffer.getvalue()


PE_EXE = (
    b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + bytes(48) + b"This program cannot be run"
)
ELF = b"\x7fELF\x02\x01\x01\x00" + bytes(8) + b"\x02\x00\x3e\x00" + bytes(200)
PDF = b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\n"
HTML = b"<!doctype html><script>alert(document.cookie)</script>"
CSV = "name,city\nJosé,Zürich\n".encode()

# (id, filename, declared type, content, allowed types, expected status)
CASES = [
    ("pe-exe-as-png", "photo.png", "image/png", PE_EXE, ("image/png",), 415),
    ("elf-as-png", "photo.png", "image/png", ELF, ("image/*",), 415),
    ("zip-as-jpeg", "photo.jpg", "image/jpeg", zip_archive(), ("image/jpeg",), 415),
    ("pdf-as-png", "scan.png", "image/png", PDF, ("image/png",), 415),
    ("html-as-png", "photo.png", "image/png", HTML, ("image/png",), 415),
    ("png-as-text", "notes.txt", "text/plain", png(), ("text/plain",), 415),
    ("empty-as-png", "photo.png", "image/png", b"", ("image/png",), 415),
    ("exe-as-text", "readme.txt", "text/plain", PE_EXE, ("text/*",), 415),
    ("real-png", "photo.png", "image/png", png(), ("image/png",), 200),
    ("real-png-wildcard", "photo.png", "image/png", png(64, 64), ("image/*",), 200),
    ("real-pdf", "doc.pdf", "application/pdf", PDF, ("application/pdf",), 200),
    ("real-csv", "cities.csv", "text/csv", CSV, ("text/*",), 200),
    ("text-declared-binary", "notes.bin", "application/octet-stream", CSV, ("text/plain",), 415),
    ("zip-allowed", "bundle.zip", "application/zip", zip_archive(), ("application/zip",), 200),
]


@pytest.mark.parametrize(
    ("filename", "declared", "content", "allowed", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
async def test_real_type_decides(
    harness: ContractHarness,
    filename: str,
    declared: str,
    content: bytes,
    allowed: tuple[str, ...],
    expected: int,
) -> None:
    storage = harness.make("file", verify_content=True, allowed_content_types=allowed)
    body = form(file_part("file", filename, content, declared))

    reply = await asgi_post(upload_app(storage), cut(body, range(0, len(body), 7)))

    assert reply.status == expected, reply.body
    if expected == 200:
        (stored,) = reply.json()["files"]
        assert stored["sha256"] == hashlib.sha256(content).hexdigest()
        if harness.name not in KEEPS_NOTHING:  # memory: the bytes were the handler's, kept nowhere
            assert await harness.read_back(storage, FileData.model_validate(stored)) == content
            assert await harness.leftovers(storage) == [stored["filename"]]
    else:
        assert "is not allowed" in reply.json()["detail"][0]["msg"]
        assert await harness.leftovers(storage) == []


async def test_refused_before_the_backend_opens_anything(tmp_path: Path) -> None:
    destination = tmp_path / "never-created"
    storage = LocalStorage(
        "file", config=Config(destination=destination, verify_content=True, allowed_content_types="image/png")
    )

    reply = await asgi_post(upload_app(storage), form(file_part("file", "photo.png", PE_EXE, "image/png")))

    assert reply.status == 415
    assert not destination.exists()  # LocalStorage creates it when it opens a writer


async def test_a_large_file_streams_through_intact_in_tiny_chunks(tmp_path: Path) -> None:
    content = png() + os.urandom(300_000)  # the signature, then far more than the held bytes
    storage = LocalStorage(
        "file", config=Config(destination=tmp_path, verify_content=True, allowed_content_types="image/png")
    )
    body = form(file_part("file", "big.png", content, "image/png"))

    reply = await asgi_post(
        upload_app(storage), cut(body, [*range(0, 9000, 3), *range(9000, len(body), 4099)])
    )

    assert reply.status == 200, reply.body
    (stored,) = reply.json()["files"]
    assert (tmp_path / stored["filename"]).read_bytes() == content


async def test_a_refused_second_file_rolls_back_the_first(harness: ContractHarness) -> None:
    storage = harness.make("file", count=2, verify_content=True, allowed_content_types=["image/png"])
    body = form(file_part("file", "a.png", png(), "image/png"), file_part("file", "b.png", ELF, "image/png"))

    reply = await asgi_post(upload_app(storage), body)

    assert reply.status == 415
    assert await harness.leftovers(storage) == []


async def test_without_verify_content_only_the_declared_type_counts(tmp_path: Path) -> None:
    """The check is opt-in: this is exactly the hole ``verify_content`` closes."""
    storage = LocalStorage("file", config=Config(destination=tmp_path, allowed_content_types="image/png"))

    reply = await asgi_post(upload_app(storage), form(file_part("file", "photo.png", PE_EXE, "image/png")))

    assert reply.status == 200


def test_verify_content_needs_allowed_types() -> None:
    with pytest.raises(ValueError, match="allowed_content_types"):
        Config(verify_content=True)


def test_a_missing_sniffer_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "filetype", None)  # makes ``import filetype`` fail
    with pytest.raises(ImportError, match=r"filestore-fastapi\[sniff\]"):
        Config(verify_content=True, allowed_content_types="image/png")
