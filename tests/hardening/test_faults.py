"""Item 5: faults of the store itself. Disk full (a real tmpfs where ``mount`` works, and an
injected ENOSPC everywhere), permission denied for root (an immutable directory, a path
under a regular file), a failing rename at commit, and a cloud that fails mid-stream (a
fault-injecting proxy between SDK and emulator: connections reset, or a 403 mid-upload).

Each ends with a 500 whose body is the generic message (no path, key, bucket or errno),
nothing of the file left, and the next request succeeding once the fault is gone.
"""

from __future__ import annotations

import errno
import os
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from filestore_fastapi import Config, LocalStorage, Storage
from tests.contract.conftest import ContractHarness

from .proxy import FaultyProxy
from .routes import upload_app
from .support import Reply, asgi_post, file_part, form

MiB = 1024 * 1024
GENERIC = "the file could not be stored"
LEAKS = ("Errno", "errno", "Traceback", "No space", "Permission", "not permitted", "Not a directory", "/")


def assert_clean_500(reply: Reply, *secrets: str) -> None:
    assert reply.status == 500, reply.body
    detail = reply.json()["detail"]
    assert [d["msg"] for d in detail] == [GENERIC]
    text = reply.body.decode()
    for secret in (*LEAKS, *secrets):
        if secret == "/":  # only the JSON's own content may hold a slash; the generic message has none
            assert "/" not in detail[0]["msg"]
        else:
            assert secret not in text, f"{secret!r} leaked: {text}"


def upload(data: bytes, name: str = "data.bin") -> bytes:
    return form(file_part("file", name, data))


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*")) if directory.exists() else []


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB filesystem: a genuine ENOSPC. Needs CAP_SYS_ADMIN (root on a VM/CI)."""
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mountpoint)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


async def test_disk_full_on_a_real_tmpfs(tiny_tmpfs: Path) -> None:
    destination = tiny_tmpfs / "uploads"
    app = upload_app(LocalStorage("file", config=Config(destination=destination, chunk_size=64 * 1024)))

    reply = await asgi_post(app, upload(os.urandom(3 * MiB)))

    assert_clean_500(reply, str(tiny_tmpfs))
    assert files_in(destination) == []
    after = await asgi_post(app, upload(b"fits" * 1000))
    assert after.status == 200, after.body
    assert files_in(destination) == ["data.bin"]


async def test_disk_full_injected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(fd: int, buffers: Any) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    app = upload_app(LocalStorage("file", config=Config(destination=tmp_path, chunk_size=64 * 1024)))
    monkeypatch.setattr(os, "writev", no_space)

    reply = await asgi_post(app, upload(os.urandom(MiB)))

    assert_clean_500(reply, str(tmp_path))
    assert files_in(tmp_path) == []
    monkeypatch.undo()
    assert (await asgi_post(app, upload(b"ok"))).status == 200


async def test_failure_while_claiming_the_final_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The last step (link to the final name) fails: the temp file must go too."""

    def broken_link(source: Any, target: Any, **_: Any) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO), str(target))

    app = upload_app(LocalStorage("file", config=Config(destination=tmp_path)))
    monkeypatch.setattr(os, "link", broken_link)

    reply = await asgi_post(app, upload(b"x" * 1000))

    assert_clean_500(reply, str(tmp_path))
    assert files_in(tmp_path) == []
    monkeypatch.undo()
    assert (await asgi_post(app, upload(b"ok"))).status == 200


@pytest.fixture
def immutable_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory even root cannot create files in: ``chattr +i`` (root ignores mode bits)."""
    directory = tmp_path / "locked"
    directory.mkdir()
    locked = subprocess.run(["chattr", "+i", str(directory)], capture_output=True, check=False)
    if locked.returncode != 0:
        pytest.skip(f"chattr +i is not supported here: {locked.stderr.decode().strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["chattr", "-i", str(directory)], check=False)


async def test_permission_denied_for_root(immutable_dir: Path) -> None:
    app = upload_app(LocalStorage("file", config=Config(destination=immutable_dir)))

    reply = await asgi_post(app, upload(b"x" * 1000))

    assert_clean_500(reply, str(immutable_dir))
    assert files_in(immutable_dir) == []
    subprocess.run(["chattr", "-i", str(immutable_dir)], check=True)
    assert (await asgi_post(app, upload(b"ok"))).status == 200
    assert files_in(immutable_dir) == ["data.bin"]


async def test_destination_under_a_regular_file(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be")
    app = upload_app(LocalStorage("file", config=Config(destination=blocker / "uploads")))

    reply = await asgi_post(app, upload(b"x" * 1000))

    assert_clean_500(reply, str(tmp_path))
    assert blocker.read_text() == "a file where a directory should be"
    blocker.unlink()
    assert (await asgi_post(app, upload(b"ok"))).status == 200


def through_proxy(storage: Storage, harness: ContractHarness, proxy: FaultyProxy, upstream: int) -> Storage:
    """The same storage, its SDK talking to the emulator through ``proxy``."""
    config = storage.config
    if harness.name == "azure":
        connection = config.AZURE_STORAGE_CONNECTION_STRING or ""
        update: dict[str, Any] = {
            "AZURE_STORAGE_CONNECTION_STRING": connection.replace(f":{upstream}/", f":{proxy.port}/")
        }
    else:
        update = {"endpoint_url": proxy.url}
    return type(storage)("file", config=config.model_copy(update=update))


def upstream_port(storage: Storage, harness: ContractHarness) -> int:
    if harness.name == "azure":
        connection = storage.config.AZURE_STORAGE_CONNECTION_STRING or ""
        endpoint = dict(item.split("=", 1) for item in connection.split(";") if "=" in item)["BlobEndpoint"]
    else:
        endpoint = storage.config.endpoint_url or ""
    port = urllib.parse.urlsplit(endpoint).port
    assert port is not None
    return port


def secrets_of(storage: Storage, proxy: FaultyProxy) -> list[str]:
    config = storage.config
    found = [str(proxy.port), "127.0.0.1", "http:"]
    for key in ("AWS_BUCKET_NAME", "GCP_BUCKET_NAME", "AZURE_STORAGE_CONTAINER"):
        if value := getattr(config, key):
            found.append(value)
    connection = config.AZURE_STORAGE_CONNECTION_STRING or ""
    found += [item.split("=", 1)[1] for item in connection.split(";") if item.startswith("AccountKey=")]
    found += [
        v for k, v in os.environ.items() if k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") and len(v) > 3
    ]
    return found


_DENIED = b"<Error><Code>AccessDenied</Code><Message>token expired</Message></Error>"
FORBIDDEN = (
    b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nConnection: close\r\n"
    + f"Content-Length: {len(_DENIED)}\r\n\r\n".encode()
    + _DENIED
)


async def fails_mid_stream_then_recovers(harness: ContractHarness, *, answer: bytes | None) -> None:
    storage = harness.make("file")
    upstream = upstream_port(storage, harness)
    with FaultyProxy(("127.0.0.1", upstream)) as proxy:
        # fake-gcs-server names itself in resumable-upload Locations: keep those chunks on the proxy.
        proxy.rewrite = (f"127.0.0.1:{upstream}".encode(), f"127.0.0.1:{proxy.port}".encode())
        faulty = through_proxy(storage, harness, proxy, upstream)
        app = upload_app(faulty)
        size = faulty.config.part_size * 2 + MiB  # several parts: the fault lands mid-stream
        proxy.cut_after, proxy.answer = MiB, answer

        reply = await asgi_post(app, upload(b"\x5a" * size, "big.bin"))

        assert proxy.cuts >= 1, "the fault never fired"
        assert_clean_500(reply, *secrets_of(faulty, proxy))
        assert await harness.leftovers(storage) == []
        proxy.cut_after = None
        after = await asgi_post(app, upload(b"\x5b" * size, "big.bin"))
        assert after.status == 200, after.body
        assert len(await harness.leftovers(storage)) == 1


async def test_cloud_refuses_mid_stream(cloud: ContractHarness) -> None:
    """A 403 in the middle of the body (credentials revoked, token expired): SDKs do not
    retry it, so the failure is immediate."""
    await fails_mid_stream_then_recovers(cloud, answer=FORBIDDEN)


@pytest.mark.parametrize("backend", ["s3", "gcs", "azure"])
async def test_cloud_connection_reset_mid_stream(backend: str, request: pytest.FixtureRequest) -> None:
    """Connections reset mid-body: the SDKs retry ``max_retries`` times with a short back-off
    (before, GCS and Azure retried for about 90 seconds), then the upload fails cleanly."""
    harness: ContractHarness = request.getfixturevalue(f"hardening_{backend}")
    await fails_mid_stream_then_recovers(harness, answer=None)
