"""Item 4: the client vanishes mid-upload. Real uvicorn, raw sockets.

The handler is never called, and once the server notices, nothing remains: no file, no
temp file, no file committed earlier in the same request, no unfinished S3 multipart
upload, no uncommitted Azure blocks, no GCS object. Each test first waits until the
upload is visibly in progress (a temp file, an open multipart upload, staged blocks),
so the clean-up is proven rather than assumed.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from filestore_fastapi import Storage
from tests.contract.conftest import ContractHarness
from tests.e2e.server import Server, run_uvicorn
from tests.httpclient import httpx

from .support import BOUNDARY, content_type, file_part, form, request_head, wait_until

MiB = 1024 * 1024
T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def opening(field: str, filename: str) -> bytes:
    """A body up to and including the headers of one file part."""
    return b"--" + BOUNDARY.encode() + b"\r\n" + file_part(field, filename, b"")


class Dropper:
    """A client that sends part of a body and then disappears, abruptly (RST) or not (FIN)."""

    def __init__(self, server: Server, declared_length: int) -> None:
        address = server.url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((address[0], int(address[1])), timeout=30)
        headers = {"Content-Type": content_type(), "Content-Length": str(declared_length)}
        self.sock.sendall(request_head("/upload", headers))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def drop(self, abrupt: bool) -> None:
        if abrupt:  # linger 0: close() sends RST, as a crashed client or a pulled cable would look
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


def calls(server: Server) -> int:
    count: int = httpx.get(server.url + "/calls").json()
    return count


def serves_next(server: Server) -> None:
    body = form(file_part("file", "next.txt", b"next"))
    response = httpx.post(server.url + "/upload", content=body, headers={"content-type": content_type()})
    assert response.status_code == 200, response.text


def local_server(destination: Path) -> Any:
    env = {
        "HARDENING_BACKEND": "local",
        "HARDENING_CONFIG": json.dumps({"destination": str(destination), "chunk_size": 64 * 1024}),
    }
    return run_uvicorn("tests.hardening.apps.upload_app:app", env)


@pytest.fixture(scope="module")
def local_once(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    destination = tmp_path_factory.mktemp("disconnects") / "uploads"
    with local_server(destination) as server:
        yield server, destination


@pytest.fixture
def local(local_once: tuple[Server, Path]) -> tuple[Server, Path]:
    """The shared server, its destination emptied of the previous test's files."""
    for name in entries(local_once[1]):
        (local_once[1] / name).unlink()
    return local_once


def entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def temp_files(directory: Path) -> list[str]:
    return [name for name in entries(directory) if name.startswith(".upload-")]


@pytest.mark.parametrize("abrupt", [True, False], ids=["rst", "fin"])
def test_drop_mid_file_leaves_nothing_locally(local: tuple[Server, Path], abrupt: bool) -> None:
    server, destination = local
    before = calls(server)
    client = Dropper(server, declared_length=100 * MiB)
    client.send(opening("file", "big.bin"))
    client.send(b"\xab" * (3 * MiB))
    assert wait_until(lambda: bool(temp_files(destination))), "the upload never started"

    client.drop(abrupt)

    assert wait_until(lambda: entries(destination) == []), entries(destination)
    assert calls(server) == before
    serves_next(server)
    assert [name for name in entries(destination) if not name.startswith("next")] == []


def test_drop_in_second_file_removes_the_first_too(local: tuple[Server, Path]) -> None:
    server, destination = local
    before = calls(server)
    # Larger than the server's chunk_size, so that the first file reaches the disk.
    first = b"--" + BOUNDARY.encode() + b"\r\n" + file_part("file", "first.bin", b"\x01" * 200_000) + b"\r\n"
    client = Dropper(server, declared_length=50 * MiB)
    client.send(first + opening("file", "second.bin") + b"\xcd" * MiB)
    # The first file is complete (committed, or a temp file until the body is valid), the second begun.
    assert wait_until(lambda: len(entries(destination)) == 2), entries(destination)

    client.drop(abrupt=True)

    assert wait_until(lambda: entries(destination) == []), entries(destination)
    assert calls(server) == before
    serves_next(server)


@pytest.mark.parametrize(
    "sent",
    [b"", b"--" + BOUNDARY.encode() + b"\r\nContent-Disposition: form-da", b"--" + BOUNDARY.encode()],
    ids=["before-the-body", "mid-part-headers", "mid-boundary"],
)
def test_drop_before_any_file_data(local: tuple[Server, Path], sent: bytes) -> None:
    server, destination = local
    before = calls(server)
    client = Dropper(server, declared_length=MiB)
    client.send(sent)
    time.sleep(0.2)

    client.drop(abrupt=True)

    time.sleep(0.3)
    assert entries(destination) == []
    assert calls(server) == before
    serves_next(server)


IN_PROGRESS: dict[str, Callable[[list[str]], bool]] = {
    "s3": lambda found: any(name.startswith("multipart:") for name in found),
    "azure": lambda found: any(name.startswith("uncommitted:") for name in found),
    "gcs": lambda found: True,  # a resumable session cannot be listed; only its result could be
}


def cloud_server(harness: ContractHarness, storage: Storage) -> Any:
    config = storage.config.model_dump(mode="json", exclude_unset=True)
    env = {"HARDENING_BACKEND": harness.name, "HARDENING_CONFIG": json.dumps(config)}
    return run_uvicorn("tests.hardening.apps.upload_app:app", env)


def test_drop_mid_file_leaves_nothing_in_the_cloud(cloud: ContractHarness) -> None:
    storage = cloud.make("file")
    part_size = storage.config.part_size
    with cloud_server(cloud, storage) as server:
        before = calls(server)
        client = Dropper(server, declared_length=100 * MiB)
        client.send(opening("file", "big.bin"))
        client.send(b"\xef" * (part_size + MiB))  # more than one part: the upload is under way
        assert wait_until(lambda: IN_PROGRESS[cloud.name](run(cloud.leftovers(storage))), timeout=20)
        time.sleep(0.5)  # let a GCS chunk reach the emulator too

        client.drop(abrupt=True)

        assert wait_until(lambda: run(cloud.leftovers(storage)) == [], timeout=20), run(
            cloud.leftovers(storage)
        )
        assert calls(server) == before
        serves_next(server)
