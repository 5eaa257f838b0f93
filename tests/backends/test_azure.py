"""AzureStorage against a real Azurite, driven through a FastAPI app as a user would.

Bodies go to the app through a scripted ASGI ``receive``, so a test can pause a body
mid-file, look at the store, then go on, fail the file or disconnect.

No ``from __future__ import annotations``: FastAPI must evaluate the route's ``Depends``
annotation, which names a storage local to ``app_for``.
"""

import asyncio
import hashlib
import json
import os
import re
import select
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any

import pytest
from azure.storage.blob import (
    AccountSasPermissions,
    BlobServiceClient,
    ContainerClient,
    ResourceTypes,
    generate_account_sas,
)
from fastapi import Depends, FastAPI
from starlette.requests import ClientDisconnect

from filestore_fastapi import AzureStorage, Config, FileData, NotFound
from tests.asgi import post_scope
from tests.contract.harness_azure import everything_in
from tests.emulators import Azurite
from tests.httpclient import httpx

KiB = 1024
MiB = 1024 * KiB
PART = 5 * MiB
BOUNDARY = "azure-test-boundary-4f1c"

#: Called between body messages with how many file bytes were sent; may await (pause the body).
Pause = Callable[[int], Awaitable[None]]


@pytest.fixture(scope="module")
def azurite() -> Iterator[Azurite]:
    with Azurite() as server:
        yield server


@pytest.fixture
def container(azurite: Azurite) -> ContainerClient:
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    return service.create_container(f"t-{uuid.uuid4().hex[:16]}")


def make_storage(container: ContainerClient, connection_string: str, **config: Any) -> AzureStorage:
    return AzureStorage(
        "file",
        config=Config(
            AZURE_STORAGE_CONTAINER=container.container_name,
            AZURE_STORAGE_CONNECTION_STRING=connection_string,
            **config,
        ),
    )


def app_for(storage: AzureStorage) -> FastAPI:
    app = FastAPI()

    @app.post("/upload")
    async def upload(files: Annotated[list[FileData], Depends(storage)]) -> list[FileData]:
        return files

    return app


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def files(self) -> list[FileData]:
        assert self.status == 200, self.body
        return [FileData.model_validate(item) for item in json.loads(self.body)]


async def post(
    app: FastAPI,
    data: bytes,
    *,
    filename: str = "doc.bin",
    content_type: str = "application/octet-stream",
    piece: int = 256 * KiB,
    pause: Pause | None = None,
    disconnect_after: int | None = None,
) -> Reply:
    """POST one file as a multipart body in ``piece``-byte ASGI messages, like a real server."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    body = head + data + tail
    scope = post_scope(
        "/upload",
        [
            (b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode()),
            (b"content-length", str(len(body)).encode()),
        ],
    )
    offsets = iter(range(0, len(body), piece))
    reply = Reply(status=0)
    done = asyncio.Event()

    async def receive() -> dict[str, Any]:
        start = next(offsets, None)
        sent = len(data) if start is None else max(0, min(len(data), start - len(head)))
        if pause is not None:
            await pause(sent)
        if disconnect_after is not None and sent >= disconnect_after:
            return {"type": "http.disconnect"}
        if start is None:
            await done.wait()  # what a server does once the body is over: wait for the response
            return {"type": "http.disconnect"}
        chunk = body[start : start + piece]
        return {"type": "http.request", "body": chunk, "more_body": start + piece < len(body)}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            reply.status = message["status"]
            reply.headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            reply.body += message.get("body", b"")
            if not message.get("more_body", False):
                done.set()

    await app(scope, receive, send)
    return reply


def blob_bytes(container: ContainerClient, name: str) -> bytes:
    return container.get_blob_client(name).download_blob().readall()


async def staged_soon(container: ContainerClient) -> list[str]:
    """What the container holds once something is there (a block is on its way), or ``[]``."""
    for _ in range(100):
        found = await asyncio.to_thread(everything_in, container)
        if found:
            return found
        await asyncio.sleep(0.05)
    return []


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- streaming ---------------------------------------------------------------------------------


async def test_file_larger_than_a_part_goes_up_as_blocks_while_it_arrives(
    azurite: Azurite, container: ContainerClient
) -> None:
    storage = make_storage(container, azurite.connection_string, part_size=PART, destination="in/box")
    data = os.urandom(2 * PART + 123_457)
    staged_mid_body: list[str] = []

    async def look_at_store(sent: int) -> None:
        if sent >= PART + 300 * KiB and not staged_mid_body:
            # Past the first block: it must reach the store while the body is still arriving.
            staged_mid_body[:] = await staged_soon(container)

    [file] = (await post(app_for(storage), data, pause=look_at_store, content_type="video/mp4")).files()

    assert staged_mid_body == ["uncommitted:in/box/doc.bin"]
    assert file.filename == "in/box/doc.bin"
    assert file.size == len(data)
    assert file.sha256 == sha256(data)
    blob = container.get_blob_client(file.filename)
    committed, uncommitted = blob.get_block_list("all")
    assert [block.size for block in committed] == [PART, PART, 123_457]
    assert uncommitted == []
    assert sha256(blob_bytes(container, file.filename)) == sha256(data)
    properties = blob.get_blob_properties()
    assert properties.content_settings.content_type == "video/mp4"
    assert file.metadata == {
        "container": container.container_name,
        "blob": "in/box/doc.bin",
        "etag": properties.etag,
    }
    assert file.url == f"{azurite.blob_endpoint}/{container.container_name}/in/box/doc.bin"
    assert everything_in(container) == ["in/box/doc.bin"]


async def test_file_of_at_most_one_part_is_one_put_blob_with_its_md5(
    azurite: Azurite, container: ContainerClient
) -> None:
    storage = make_storage(
        container, azurite.connection_string, part_size=PART, base_url="https://cdn.example/f"
    )
    data = os.urandom(PART)  # exactly one part: no block is staged

    [file] = (await post(app_for(storage), data, filename="one block.bin")).files()

    blob = container.get_blob_client(file.filename)
    assert blob.get_block_list("all") == ([], [])
    properties = blob.get_blob_properties()
    md5 = properties.content_settings.content_md5
    assert md5 is not None and bytes(md5) == hashlib.md5(data).digest()
    assert blob_bytes(container, file.filename) == data
    assert file.url == "https://cdn.example/f/one_block.bin"


# -- checksums ---------------------------------------------------------------------------------


class Relay:
    """A TCP relay to Azurite that misbehaves like a network can.

    With ``marker`` it flips the marker's first byte in requests: bit rot in transit, which
    only a checksum sent along with the data lets the store notice. With ``lose_reply_to``
    it drops the reply to the first request matching that pattern and closes the connection.
    """

    def __init__(self, target_port: int, *, marker: bytes = b"", lose_reply_to: bytes = b"") -> None:
        self.target_port = target_port
        self.marker = marker
        self.lose_reply_to = re.compile(lose_reply_to) if lose_reply_to else None
        self.corrupted = 0
        self.lost = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def connection_string(self, azurite: Azurite) -> str:
        return azurite.connection_string.replace(f":{azurite.port}/", f":{self.port}/")

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._sockets += [client, upstream]
            losing = threading.Event()
            threading.Thread(target=self._requests, args=(client, upstream, losing), daemon=True).start()
            threading.Thread(target=self._replies, args=(upstream, client, losing), daemon=True).start()

    def _requests(self, source: socket.socket, sink: socket.socket, losing: threading.Event) -> None:
        held = b""
        try:
            while True:
                if held and not select.select([source], [], [], 0.05)[0]:
                    sink.sendall(held)  # the line went quiet: what we held was no marker
                    held = b""
                    continue
                data = source.recv(256 * KiB)
                if not data:
                    break
                if self.lose_reply_to is not None and self.lose_reply_to.search(data) and not self.lost:
                    self.lost += 1
                    losing.set()
                data, held = self._flip(held + data)
                sink.sendall(data)
            sink.sendall(held)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _replies(self, source: socket.socket, sink: socket.socket, losing: threading.Event) -> None:
        try:
            while data := source.recv(256 * KiB):
                if losing.is_set():
                    # shutdown, not close: it sends the FIN even while the other pump blocks on it.
                    sink.shutdown(socket.SHUT_RDWR)
                    source.shutdown(socket.SHUT_RDWR)
                    return
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _flip(self, data: bytes) -> tuple[bytes, bytes]:
        """Corrupt a whole marker; hold back a tail that may be the start of one."""
        if not self.marker:
            return data, b""
        at = data.find(self.marker)
        if at >= 0:
            self.corrupted += 1
            data = data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]
        for keep in range(len(self.marker) - 1, 0, -1):
            if data.endswith(self.marker[:keep]):
                return data[:-keep], data[-keep:]
        return data, b""


@pytest.mark.parametrize("size", [PART - 1000, 2 * PART + 1000], ids=["put-blob", "blocks"])
async def test_bytes_corrupted_on_the_way_are_refused_by_the_store(
    azurite: Azurite, container: ContainerClient, size: int
) -> None:
    marker = b"\x00corrupt-me\x00"
    proxy = Relay(azurite.port, marker=marker)
    try:
        app = app_for(make_storage(container, proxy.connection_string(azurite), part_size=PART))
        clean = b"c" * size
        dirty = b"d" * (size - PART // 2) + marker + b"d" * (PART // 2 - len(marker))

        stored = (await post(app, clean, filename="clean.bin")).files()
        refused = await post(app, dirty, filename="dirty.bin")

        assert proxy.corrupted == 1
        assert refused.status == 500, refused.body
        assert b"the file could not be stored" in refused.body
        assert everything_in(container) == [stored[0].filename]
        assert blob_bytes(container, "clean.bin") == clean
    finally:
        proxy.close()


async def test_a_commit_whose_reply_was_lost_is_retried_and_recognised(
    azurite: Azurite, container: ContainerClient
) -> None:
    relay = Relay(azurite.port, lose_reply_to=rb"^PUT [^ ]*comp=blocklist")
    try:
        app = app_for(make_storage(container, relay.connection_string(azurite), part_size=PART))
        data = os.urandom(PART + 1000)

        [file] = (await post(app, data)).files()  # the SDK retried; the retry found the blob there

        assert relay.lost == 1
        assert file.filename == "doc.bin"
        assert file.metadata["etag"] == container.get_blob_client("doc.bin").get_blob_properties().etag
        assert blob_bytes(container, "doc.bin") == data
        assert everything_in(container) == ["doc.bin"]
    finally:
        relay.close()


# -- all or nothing ----------------------------------------------------------------------------


async def test_file_over_max_file_size_after_several_blocks_leaves_nothing(
    azurite: Azurite, container: ContainerClient
) -> None:
    storage = make_storage(container, azurite.connection_string, part_size=PART, max_file_size=3 * PART)
    staged: list[str] = []

    async def note_staged(sent: int) -> None:
        if sent >= 3 * PART - 100 * KiB and not staged:
            staged[:] = await staged_soon(container)

    reply = await post(app_for(storage), os.urandom(4 * PART), pause=note_staged)

    assert reply.status == 413, reply.body
    assert staged == ["uncommitted:doc.bin"]  # blocks were really staged before the limit tripped
    assert everything_in(container) == []


async def test_client_gone_mid_file_leaves_nothing(azurite: Azurite, container: ContainerClient) -> None:
    storage = make_storage(container, azurite.connection_string, part_size=PART)
    staged: list[str] = []

    async def note_staged(sent: int) -> None:
        if sent >= 2 * PART + MiB and not staged:
            staged[:] = await staged_soon(container)

    with pytest.raises(ClientDisconnect):
        await post(app_for(storage), os.urandom(4 * PART), pause=note_staged, disconnect_after=2 * PART + MiB)

    assert staged == ["uncommitted:doc.bin"]
    assert everything_in(container) == []


# -- collisions --------------------------------------------------------------------------------


async def test_same_name_never_replaces_and_gets_a_suffix(
    azurite: Azurite, container: ContainerClient
) -> None:
    container.upload_blob("doc.bin", b"precious")
    app = app_for(make_storage(container, azurite.connection_string, part_size=PART))
    small, large = os.urandom(1000), os.urandom(PART + 1)

    first = (await post(app, small)).files()
    second = (await post(app, large)).files()

    assert [first[0].filename, second[0].filename] == ["doc-1.bin", "doc-2.bin"]
    assert blob_bytes(container, "doc.bin") == b"precious"
    assert blob_bytes(container, "doc-1.bin") == small
    assert blob_bytes(container, "doc-2.bin") == large


@pytest.mark.parametrize(
    "sizes", [[1000] * 6, [PART + 1000] * 4, [1000, PART + 1000] * 3], ids=["put-blob", "blocks", "mixed"]
)
async def test_concurrent_uploads_of_one_name_all_land_under_distinct_names(
    azurite: Azurite, container: ContainerClient, sizes: list[int]
) -> None:
    container.upload_blob("doc.bin", b"precious")
    app = app_for(make_storage(container, azurite.connection_string, part_size=PART))
    contents = [os.urandom(size) for size in sizes]
    # Every body stops just past its first block until all bodies got there, so the uploads
    # claim names at the same moment.
    all_there = asyncio.Barrier(len(contents))

    def in_step(size: int) -> Pause:
        passed = False

        async def pause(sent: int) -> None:
            nonlocal passed
            if not passed and sent >= min(size, PART + 1):
                passed = True
                await all_there.wait()

        return pause

    replies = await asyncio.gather(*(post(app, data, pause=in_step(len(data))) for data in contents))

    names = [reply.files()[0].filename for reply in replies]
    assert len(set(names)) == len(names), names
    assert "doc.bin" not in names
    assert all(name.startswith("doc-") and name.endswith(".bin") for name in names), names
    assert blob_bytes(container, "doc.bin") == b"precious"
    assert [sha256(blob_bytes(container, name)) for name in names] == [sha256(data) for data in contents]


async def test_overwrite_replaces_with_the_new_bytes_and_type(
    azurite: Azurite, container: ContainerClient
) -> None:
    app = app_for(make_storage(container, azurite.connection_string, part_size=PART, overwrite=True))
    old, new, newest = os.urandom(PART + 10), os.urandom(100), os.urandom(2 * PART + 10)

    names = []
    for data, ctype in [(old, "text/plain"), (new, "image/png"), (newest, "video/mp4")]:
        names += [f.filename for f in (await post(app, data, content_type=ctype)).files()]

    assert names == ["doc.bin"] * 3
    assert blob_bytes(container, "doc.bin") == newest
    properties = container.get_blob_client("doc.bin").get_blob_properties()
    assert properties.content_settings.content_type == "video/mp4"
    assert everything_in(container) == ["doc.bin"]


# -- configuration -----------------------------------------------------------------------------


def test_missing_container_is_an_error_at_construction(
    azurite: Azurite, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AZURE_STORAGE_CONTAINER", raising=False)
    with pytest.raises(ValueError, match="AZURE_STORAGE_CONTAINER"):
        AzureStorage("file", config=Config(AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string))


def test_missing_account_is_an_error_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_URL", raising=False)
    with pytest.raises(ValueError, match="AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT_URL"):
        AzureStorage("file", config=Config(AZURE_STORAGE_CONTAINER="files"))


async def test_environment_variables_configure_the_storage(
    azurite: Azurite, container: ContainerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_STORAGE_CONTAINER", container.container_name)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_URL", raising=False)

    [file] = (await post(app_for(AzureStorage("file")), b"from the environment")).files()

    assert blob_bytes(container, file.filename) == b"from the environment"


def test_config_keys_win_over_environment_variables(
    azurite: Azurite, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_STORAGE_CONTAINER", "from-env")
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "AccountName=nobody;AccountKey=bm9ib2R5")
    storage = AzureStorage(
        "file",
        config=Config(
            AZURE_STORAGE_CONTAINER="from-config",
            AZURE_STORAGE_ACCOUNT_URL=azurite.blob_endpoint,
            AZURE_STORAGE_CREDENTIAL={
                "account_name": azurite.account_name,
                "account_key": azurite.account_key,
            },
        ),
    )

    assert storage.container_name == "from-config"
    assert storage.service().url.startswith(azurite.blob_endpoint)


def test_account_url_without_credential_needs_azure_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "azure.identity", None)
    with pytest.raises(ImportError, match=r"azure-identity: pip install \"filestore-fastapi\[azure\]\""):
        AzureStorage(
            "file",
            config=Config(
                AZURE_STORAGE_CONTAINER="files", AZURE_STORAGE_ACCOUNT_URL="https://acct.blob.example"
            ),
        )


def test_missing_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "azure.storage.blob", None)
    with pytest.raises(ImportError, match=r'pip install "filestore-fastapi\[azure\]"'):
        AzureStorage("file", config=Config(AZURE_STORAGE_CONTAINER="files"))


def test_importing_the_backend_loads_no_sdk() -> None:
    code = (
        "import sys, filestore_fastapi, filestore_fastapi.backends.azure\n"
        "print(sorted(m for m in sys.modules if m.startswith('azure')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# -- credentials never reach a client ----------------------------------------------------------


async def test_sas_credential_is_not_in_the_url_nor_in_errors(
    azurite: Azurite, container: ContainerClient
) -> None:
    sas = generate_account_sas(
        azurite.account_name,
        azurite.account_key,
        ResourceTypes(object=True, container=True),
        AccountSasPermissions(read=True, write=True, create=True, delete=True, list=True),
        expiry=datetime.now(timezone.utc) + timedelta(hours=1),
    )
    with_sas = f"BlobEndpoint={azurite.blob_endpoint};SharedAccessSignature={sas}"
    storage = make_storage(container, with_sas, part_size=PART)

    [file] = (await post(app_for(storage), b"signed")).files()
    assert file.url == f"{azurite.blob_endpoint}/{container.container_name}/doc.bin"

    broken = AzureStorage(
        "file",
        config=Config(AZURE_STORAGE_CONTAINER="no-such-container", AZURE_STORAGE_CONNECTION_STRING=with_sas),
    )
    reply = await post(app_for(broken), b"nowhere to go")
    assert reply.status == 500
    assert sas.split("sig=")[1][:20].encode() not in reply.body
    assert azurite.account_key.encode() not in reply.body
    with pytest.raises(ValueError, match="account key or a token credential") as raised:
        await storage.presign_download(file.filename)
    assert "sig=" not in str(raised.value)


# -- management side ---------------------------------------------------------------------------


async def test_open_streams_in_chunks_and_delete_removes(
    azurite: Azurite, container: ContainerClient
) -> None:
    storage = make_storage(container, azurite.connection_string, part_size=PART, chunk_size=256 * KiB)
    data = os.urandom(MiB + 123)
    [file] = (await post(app_for(storage), data)).files()

    chunks = [chunk async for chunk in storage.open(file.filename)]
    assert b"".join(chunks) == data
    assert max(len(chunk) for chunk in chunks) == 256 * KiB

    await storage.delete(file)
    with pytest.raises(FileNotFoundError):
        _ = [chunk async for chunk in storage.open(file.filename)]
    await storage.delete(file.filename)  # already gone: not an error
    assert everything_in(container) == []


async def test_open_of_an_empty_blob_yields_nothing(azurite: Azurite, container: ContainerClient) -> None:
    storage = make_storage(container, azurite.connection_string)
    container.upload_blob("empty.txt", b"")

    assert [chunk async for chunk in storage.open("empty.txt")] == []


async def test_open_refuses_to_mix_two_versions(azurite: Azurite, container: ContainerClient) -> None:
    storage = make_storage(container, azurite.connection_string, chunk_size=64 * KiB)
    container.upload_blob("doc.bin", os.urandom(256 * KiB))

    stream = storage.open("doc.bin")
    await stream.__anext__()
    container.upload_blob("doc.bin", os.urandom(256 * KiB), overwrite=True)
    with pytest.raises(NotFound, match="deleted or replaced while it was read"):
        await stream.__anext__()  # the version being read is gone: never a mix of two


async def test_presigned_put_and_get_work_without_credentials(
    azurite: Azurite, container: ContainerClient
) -> None:
    storage = make_storage(container, azurite.connection_string)
    data = os.urandom(100 * KiB)

    upload = await storage.presign_upload("direct/photo.jpg", content_type="image/jpeg", expires_in=300)
    assert upload.method == "PUT"
    assert upload.headers["x-ms-blob-type"] == "BlockBlob"
    async with httpx.AsyncClient() as client:
        put = await client.put(upload.url, headers=upload.headers, content=data)
        assert put.status_code == 201, put.text
        again = await client.put(upload.url, headers=upload.headers, content=b"replacement")
        assert again.status_code == 409, again.text  # overwrite=False travels as If-None-Match: *
        assert (await client.get(upload.url)).status_code == 403  # create+write only

        download = await storage.presign_download("direct/photo.jpg")
        got = await client.get(download.url)
        assert got.status_code == 200
        assert got.content == data
        assert (await client.put(download.url, headers=upload.headers, content=b"x")).status_code == 403

    properties = container.get_blob_client("direct/photo.jpg").get_blob_properties()
    assert properties.content_settings.content_type == "image/jpeg"


async def test_presigned_put_may_replace_with_overwrite(azurite: Azurite, container: ContainerClient) -> None:
    storage = make_storage(container, azurite.connection_string, overwrite=True)
    container.upload_blob("doc.txt", b"old")

    upload = await storage.presign_upload("doc.txt")
    async with httpx.AsyncClient() as client:
        put = await client.put(upload.url, headers=upload.headers, content=b"new")

    assert put.status_code == 201, put.text
    assert blob_bytes(container, "doc.txt") == b"new"
