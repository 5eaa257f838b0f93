"""What the tus end-to-end tests share: the stores behind ``apps/tus_app.py`` read straight
from their emulators, the app under real uvicorn processes, and a loopback proxy in front
of it that resets or holds a connection mid-body.

The emulators are started once per test session (the first test that needs one starts
it; ``tests/emulators.py`` stops them at exit). So is a ``Pair`` of app processes per
store (``shared_pair``): the single-process tests use its first, behind a proxy of their
own, the two-process tests both.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import itertools
import json
import os
import shutil
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.contract.harness_s3 import moto_client
from tests.e2e.server import Server, run_uvicorn
from tests.emulators import Azurite, FakeGcsServer, MotoServer
from tests.httpclient import httpx

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

APP = "tests.e2e.apps.tus_app:app"
DESTINATION = "uploads"
STORES = ("local", "s3", "gcs", "azure")
TUS = {"Tus-Resumable": "1.0.0"}
_serial = itertools.count()


@functools.cache
def emulator(kind: str) -> MotoServer | FakeGcsServer | Azurite:
    """The session's one emulator of ``kind`` (s3, gcs, azure), started on first use."""
    kinds: dict[str, type[MotoServer | FakeGcsServer | Azurite]] = {
        "s3": MotoServer,
        "gcs": FakeGcsServer,
        "azure": Azurite,
    }
    server = kinds[kind]()
    server.start()
    return server


def write_source(path: Path, size: int) -> str:
    """A file of ``size`` random bytes; returns its sha256."""
    data = os.urandom(size)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


class Store:
    """One store behind the app, read with its own SDK rather than through the library."""

    kind: str

    def env(self) -> dict[str, str]:
        """The app's environment for this store."""
        raise NotImplementedError

    def read(self, key: str) -> bytes:
        """An object's bytes by its key under the destination (``.tus/<id>/info``, a file's name)."""
        raise NotImplementedError

    def names(self, prefix: str) -> list[str]:
        """The keys under the destination that start with ``prefix``."""
        raise NotImplementedError

    def stored_sha256(self, file: dict[str, Any]) -> str:
        """The sha256 of the object a completed upload's FileData names."""
        return hashlib.sha256(self.read(self.key_of(file))).hexdigest()

    def key_of(self, file: dict[str, Any]) -> str:
        name: str = file["filename"]  # a cloud store's key, the destination included
        return name.removeprefix(f"{DESTINATION}/")

    def state(self, upload_id: str) -> list[str]:
        """The names of an upload's state objects (``info``, ``data-...``, ``lock-...``)."""
        prefix = f".tus/{upload_id}/"
        return sorted(key[len(prefix) :] for key in self.names(prefix))

    def lease_expiry(self, upload_id: str) -> float:
        """When the upload's last lease runs out (``time.time()``; 0 without a lease)."""
        latest = 0.0
        for name in self.state(upload_id):
            if name.startswith("lock-"):
                try:
                    latest = max(latest, json.loads(self.read(f".tus/{upload_id}/{name}"))["expires"])
                except Exception:  # replaced between the listing and the read
                    continue
        return latest

    def live_lease(self, upload_id: str) -> bool:
        """Whether some process holds the upload's lease now (a ``lock-*`` not yet expired)."""
        return self.lease_expiry(upload_id) > time.time()


class LocalStore(Store):
    kind = "local"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.base = root / DESTINATION

    def env(self) -> dict[str, str]:
        return {"TUS_STORE": "local", "TUS_LOCAL_ROOT": str(self.root)}

    def read(self, key: str) -> bytes:
        return (self.base / key).read_bytes()

    def names(self, prefix: str) -> list[str]:
        if not self.base.exists():
            return []
        keys = (p.relative_to(self.base).as_posix() for p in self.base.rglob("*") if p.is_file())
        return sorted(key for key in keys if key.startswith(prefix))


class S3Store(Store):
    kind = "s3"

    def __init__(self, server: MotoServer) -> None:
        self.server = server
        self.bucket = f"tus-e2e-{next(_serial)}"
        self.client: S3Client = moto_client(server)
        self.client.create_bucket(Bucket=self.bucket)

    def env(self) -> dict[str, str]:
        server = self.server
        return {
            "TUS_STORE": "s3",
            "AWS_BUCKET_NAME": self.bucket,
            "AWS_DEFAULT_REGION": server.region,
            "AWS_ACCESS_KEY_ID": server.access_key_id,
            "AWS_SECRET_ACCESS_KEY": server.secret_access_key,
            "S3_ENDPOINT_URL": server.endpoint_url,
        }

    def read(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=f"{DESTINATION}/{key}")["Body"].read()

    def names(self, prefix: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{DESTINATION}/{prefix}"
        )
        keys = [obj["Key"] for page in pages for obj in page.get("Contents", [])]
        return sorted(key.removeprefix(f"{DESTINATION}/") for key in keys)


class GCSStore(Store):
    kind = "gcs"

    def __init__(self, server: FakeGcsServer) -> None:
        from google.cloud import storage as gcs

        self.server = server
        self.client = gcs.Client(**server.client_kwargs())
        self.bucket = self.client.create_bucket(f"tus-e2e-{next(_serial)}")

    def env(self) -> dict[str, str]:
        return {
            "TUS_STORE": "gcs",
            "GCP_BUCKET_NAME": self.bucket.name,
            "GCP_PROJECT": self.server.project,
            "GCS_ENDPOINT_URL": self.server.endpoint_url,
        }

    def read(self, key: str) -> bytes:
        data: bytes = self.bucket.blob(f"{DESTINATION}/{key}").download_as_bytes()
        return data

    def names(self, prefix: str) -> list[str]:
        blobs = self.client.list_blobs(self.bucket.name, prefix=f"{DESTINATION}/{prefix}")
        return sorted(blob.name.removeprefix(f"{DESTINATION}/") for blob in blobs)


class AzureStore(Store):
    kind = "azure"

    def __init__(self, server: Azurite) -> None:
        from azure.storage.blob import BlobServiceClient

        self.server = server
        self.name = f"tus-e2e-{next(_serial)}"
        service = BlobServiceClient.from_connection_string(server.connection_string)
        self.container = service.create_container(self.name)

    def env(self) -> dict[str, str]:
        return {
            "TUS_STORE": "azure",
            "AZURE_STORAGE_CONTAINER": self.name,
            "AZURE_STORAGE_CONNECTION_STRING": self.server.connection_string,
        }

    def read(self, key: str) -> bytes:
        return self.container.get_blob_client(f"{DESTINATION}/{key}").download_blob().readall()

    def names(self, prefix: str) -> list[str]:
        blobs = self.container.list_blobs(name_starts_with=f"{DESTINATION}/{prefix}")
        return sorted(blob.name.removeprefix(f"{DESTINATION}/") for blob in blobs)


def open_store(kind: str, root: Path) -> Store:
    """A fresh store of ``kind``: a directory under ``root``, or a new bucket or container."""
    if kind == "local":
        return LocalStore(root)
    if kind == "s3":
        return S3Store(emulator("s3"))  # type: ignore[arg-type]
    if kind == "gcs":
        return GCSStore(emulator("gcs"))  # type: ignore[arg-type]
    if kind == "azure":
        return AzureStore(emulator("azure"))  # type: ignore[arg-type]
    raise ValueError(kind)


class Instance:
    """One uvicorn process serving the tus app over a store; ``kill()`` it, ``start()`` anew."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._running: contextlib.ExitStack | None = None
        self.server: Server | None = None

    def start(self) -> Server:
        assert self._running is None
        stack = contextlib.ExitStack()
        self.server = stack.enter_context(run_uvicorn(APP, env=self.store.env()))
        self._running = stack
        return self.server

    def kill(self) -> None:
        """SIGKILL: no clean-up, no lease released, whatever it was writing left as it was."""
        assert self.server is not None
        self.server.process.kill()
        self.server.process.wait()
        self.stop()

    def stop(self) -> None:
        running, self._running, self.server = self._running, None, None
        if running is not None:
            running.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"{self.server.url}/files"


class Pair:
    """Two processes of the app over one store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.instances = (Instance(store), Instance(store))

    def running(self) -> Pair:
        """Both processes up (started side by side: each takes a second or two to import)."""
        starting = [threading.Thread(target=i.start) for i in self.instances if i.server is None]
        for thread in starting:
            thread.start()
        for thread in starting:
            thread.join()
        assert all(instance.server is not None for instance in self.instances)
        return self

    @property
    def urls(self) -> tuple[str, str]:
        return self.instances[0].url, self.instances[1].url

    def close(self) -> None:
        for instance in self.instances:
            instance.stop()


@functools.cache
def shared_pair(kind: str) -> Pair:
    """The session's pair of app processes over one store of ``kind`` (not started yet:
    ``running()``), stopped at exit."""
    root = Path(tempfile.mkdtemp(prefix=f"tus-{kind}-"))
    pair = Pair(open_store(kind, root))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    atexit.register(pair.close)  # first: exit handlers run last-registered first
    return pair


class Proxy:
    """A loopback TCP proxy in front of the app: the clients' one address whichever process
    serves behind it (``upstream`` may change between connections: a restart), and the place
    to break a connection mid-body.

    Once a connection has carried ``cut_after`` bytes towards the server, it is reset on
    both sides ``cut_delay`` seconds later (a reset discards what the server's kernel holds
    unread: at once, it would cut before those bytes). Once it has carried ``hold_after``
    bytes, nothing more is forwarded (``holding`` is set) until ``release()``, so the server
    waits inside the request with part of the body read."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.cut_after: int | None = None
        self.cut_delay = 1.0
        self.hold_after: int | None = None
        self.cuts = 0
        self.holding = threading.Event()
        self._released = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/files"

    def release(self) -> None:
        self.hold_after = None
        self._released.set()

    def close(self) -> None:
        self._released.set()
        self._listener.close()
        for sock in self._sockets:
            _reset(sock)

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self._listener.accept()
                host, _, port = self.upstream.removeprefix("http://").partition(":")
                try:
                    server = socket.create_connection((host, int(port)))
                except OSError:
                    _reset(client)
                    continue
                self._sockets += [client, server]
                threading.Thread(target=self._upstream, args=(client, server), daemon=True).start()
                threading.Thread(target=self._downstream, args=(server, client), daemon=True).start()

    def _upstream(self, client: socket.socket, server: socket.socket) -> None:
        carried = 0
        try:
            while data := client.recv(65536):
                cut, hold = self.cut_after, self.hold_after
                if cut is not None and carried + len(data) > cut:
                    server.sendall(data[: cut - carried])
                    time.sleep(self.cut_delay)  # as over a network: the bytes reach the app first
                    self.cuts += 1
                    _reset(server, client)
                    return
                if hold is not None and carried + len(data) > hold:
                    server.sendall(data[: hold - carried])
                    data, carried = data[hold - carried :], hold
                    self.holding.set()
                    self._released.wait()
                server.sendall(data)
                carried += len(data)
            with contextlib.suppress(OSError):
                server.shutdown(socket.SHUT_WR)
        except OSError:
            _reset(server, client)

    def _downstream(self, server: socket.socket, client: socket.socket) -> None:
        try:
            while data := server.recv(65536):
                client.sendall(data)
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_WR)
        except OSError:
            _reset(server, client)


def _reset(*sockets: socket.socket) -> None:
    """Close with a TCP reset. ``SHUT_RD`` first wakes the other pump's ``recv`` on the same
    socket, which would otherwise keep it open (and the reset unsent) until data came."""
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RD)
        sock.close()


def head_offset(url: str) -> int:
    response = httpx.head(url, headers=TUS, timeout=10)
    assert response.status_code == 200, response.status_code
    return int(response.headers["Upload-Offset"])


def result(url: str) -> dict[str, Any]:
    """The completed upload's FileData, from GET on its URL."""
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, response.text
    file: dict[str, Any] = response.json()
    return file


def wait_until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.05)


@contextlib.contextmanager
def started(*instances: Instance) -> Iterator[None]:
    """Start ``instances`` and stop them at the end, killed or not."""
    try:
        for instance in instances:
            instance.start()
        yield
    finally:
        for instance in instances:
            instance.stop()
