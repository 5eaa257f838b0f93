"""LocalStorage when things go wrong after a file is committed, when a server dies, and when
the destination holds what a stranger planted there.

- ``overwrite=True`` and a request that fails after its files were committed (the handler,
  a later file, another storage, FastAPI, a timeout, a cancellation): the replaced file is
  back, the same bytes, inode and mode.
- A SIGKILLed server's temp files are removed by the next server on the same destination,
  and by the next uploads into a directory; a live upload's temp file never is.
  ``cleanup(older_than)`` removes old ``.upload-*`` leftovers whoever left them.
- A name held by a symlink (or a directory) is taken, never followed: a suffix, or 409
  with ``overwrite=True``.
- A ``destination`` hook built from client input cannot leave its base: 422.

No ``from __future__ import annotations``: FastAPI evaluates the routes' annotations, which
name storages local to each test.
"""

import asyncio
import fcntl
import hashlib
import http.client
import json
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from filestore_fastapi import Config, FileData, LocalStorage, NotFound, UploadContext
from tests.asgi import post_scope
from tests.e2e.server import Server, run_uvicorn

from .routes import upload_app
from .support import Reply, asgi_post, content_type, file_part, form, request_head, wait_until

KiB = 1024
PDF_OLD = b"%PDF-1.4\n% the precious old version\n"
PDF_NEW = b"%PDF-1.7\n% a new version\n"
OWNED = re.compile(r"^\.upload-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-(?P<start>\d+)-.+\.part$")


def leftovers(directory: Path) -> list[str]:
    """Every ``.upload-*`` entry under ``directory`` (temp files and backups)."""
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob(".upload-*"))


def listing(directory: Path) -> list[str]:
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*"))


# 4. overwrite=True and a request that fails after commit


class Deadline:
    """A timeout middleware as apps write them: the request task is cancelled at the deadline."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await asyncio.wait_for(self.app(scope, receive, send), self.seconds)
        except TimeoutError:
            await send({"type": "http.response.start", "status": 504, "headers": []})
            await send({"type": "http.response.body", "body": b"deadline"})


FAILURES = {
    # how the request fails after doc.pdf was committed -> the status the client sees
    "handler-raises": 400,
    "handler-wait-for-times-out": 504,
    "deadline-middleware-cancels": 504,
    "fastapi-refuses-a-parameter": 422,
    "a-later-file-refused-by-its-content": 415,
    "another-storage-fails": 500,
}


def failing_app(destination: Path, failure: str) -> tuple[ASGIApp, bytes]:
    """An app whose request fails the way ``failure`` says, and the body to send it."""
    checking = failure == "a-later-file-refused-by-its-content"
    config = Config(
        destination=destination,
        overwrite=True,
        verify_content=checking,
        allowed_content_types=["application/pdf"] if checking else None,
    )
    documents = LocalStorage("file", count=2, config=config)
    # A small file is written, closed and linked at its commit: with a regular file where
    # its directory should be, this storage fails only after the first one committed.
    (destination / "not-a-directory").write_bytes(b"")
    other = LocalStorage("other", required=False, config=Config(destination=destination / "not-a-directory"))
    app = FastAPI()

    @app.post("/upload")
    async def upload(
        files: Annotated[list[FileData], Depends(documents)],
        others: Annotated[list[FileData], Depends(other)],
        page: int = 1,
    ) -> int:
        assert (destination / "doc.pdf").read_bytes() == PDF_NEW, "the handler sees the new version"
        if failure == "handler-raises":
            raise HTTPException(status_code=400, detail="refused by the handler")
        if failure == "handler-wait-for-times-out":
            try:
                await asyncio.wait_for(asyncio.sleep(30), 0.05)
            except TimeoutError:
                raise HTTPException(status_code=504, detail="took too long") from None
        if failure == "deadline-middleware-cancels":
            await asyncio.sleep(30)
        return len(files)

    parts = [file_part("file", "doc.pdf", PDF_NEW, "application/pdf")]
    if checking:
        parts.append(file_part("file", "later.pdf", b"MZ\x90\x00 not a pdf", "application/pdf"))
    if failure == "another-storage-fails":
        parts.append(file_part("other", "other.txt", b"other"))
    wrapped: ASGIApp = app
    if failure == "deadline-middleware-cancels":
        wrapped = Deadline(app, 0.3)
    if failure == "fastapi-refuses-a-parameter":
        wrapped = WithQuery(app, b"page=first")
    return wrapped, form(*parts)


class WithQuery:
    """Sends every request with this query string."""

    def __init__(self, app: ASGIApp, query: bytes) -> None:
        self.app = app
        self.query = query

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app({**scope, "query_string": self.query}, receive, send)


@pytest.mark.parametrize("failure", list(FAILURES))
async def test_a_failed_overwrite_puts_the_replaced_file_back(tmp_path: Path, failure: str) -> None:
    doc = tmp_path / "doc.pdf"
    doc.write_bytes(PDF_OLD)
    doc.chmod(0o600)
    before = doc.stat()
    app, body = failing_app(tmp_path, failure)

    reply = await asgi_post(app, body)

    assert reply.status == FAILURES[failure], reply.body
    assert doc.read_bytes() == PDF_OLD
    after = doc.stat()
    assert (after.st_ino, after.st_mode, after.st_nlink) == (before.st_ino, before.st_mode, 1)
    assert leftovers(tmp_path) == []
    assert listing(tmp_path) == ["doc.pdf", "not-a-directory"]

    # And a request that succeeds replaces it for good, keeping nothing aside.
    storage = LocalStorage("file", config=Config(destination=tmp_path, overwrite=True))
    ok = await asgi_post(upload_app(storage), form(file_part("file", "doc.pdf", PDF_NEW)))
    assert ok.status == 200, ok.body
    assert doc.read_bytes() == PDF_NEW
    assert leftovers(tmp_path) == []


# 10. Symlinks planted in the destination


def planted(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A destination holding a file, and a victim file outside it."""
    destination = tmp_path / "uploads"
    destination.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.txt"
    victim.write_bytes(b"precious outside")
    (destination / "inside.txt").write_bytes(b"precious inside")
    return destination, outside, victim


@pytest.mark.parametrize("pointing_to", ["outside", "dangling-outside"])
async def test_a_name_held_by_a_symlink_is_taken_not_followed(tmp_path: Path, pointing_to: str) -> None:
    destination, outside, victim = planted(tmp_path)
    target = victim if pointing_to == "outside" else outside / "not-yet.txt"
    (destination / "alias.txt").symlink_to(target)
    storage = LocalStorage("file", config=Config(destination=destination))

    reply = await asgi_post(upload_app(storage), form(file_part("file", "alias.txt", b"upload")))

    assert reply.status == 200, reply.body
    [stored] = reply.json()["files"]
    assert stored["filename"] == "alias-1.txt"
    assert (destination / "alias-1.txt").read_bytes() == b"upload"
    assert os.readlink(destination / "alias.txt") == str(target)
    assert victim.read_bytes() == b"precious outside"
    assert (destination / "inside.txt").read_bytes() == b"precious inside"
    assert not (outside / "not-yet.txt").exists()


@pytest.mark.parametrize("occupant", ["symlink-inside", "symlink-outside", "dangling-outside", "directory"])
async def test_with_overwrite_a_name_held_by_a_symlink_or_a_directory_is_409(
    tmp_path: Path, occupant: str
) -> None:
    destination, outside, victim = planted(tmp_path)
    alias = destination / "alias.txt"
    if occupant == "directory":
        alias.mkdir()
    else:
        alias.symlink_to(
            {
                "symlink-inside": destination / "inside.txt",
                "symlink-outside": victim,
                "dangling-outside": outside / "not-yet.txt",
            }[occupant]
        )
    storage = LocalStorage("file", config=Config(destination=destination, overwrite=True))

    reply = await asgi_post(upload_app(storage), form(file_part("file", "alias.txt", b"upload")))

    assert reply.status == 409, reply.body
    [error] = reply.json()["detail"]
    assert error["loc"] == ["body", "file"]
    assert "alias.txt" in error["msg"] and str(tmp_path) not in error["msg"]
    assert alias.is_dir() if occupant == "directory" else alias.is_symlink()
    assert victim.read_bytes() == b"precious outside"
    assert (destination / "inside.txt").read_bytes() == b"precious inside"
    assert not (outside / "not-yet.txt").exists()
    assert leftovers(destination) == []


async def test_temp_and_backup_files_are_not_objects_to_read(tmp_path: Path) -> None:
    """A backup is the previous version of a file, a temp file someone's unfinished upload:
    a download route must not serve them."""
    for name in (".upload-0a1b2c3d-1-2-x.part", ".upload-0a1b2c3d-1-2-x.bak"):
        (tmp_path / name).write_bytes(b"not yours")
    storage = LocalStorage("file", config=Config(destination=tmp_path))

    for name in (".upload-0a1b2c3d-1-2-x.part", ".upload-0a1b2c3d-1-2-x.bak", "../escape.txt", "missing.txt"):
        with pytest.raises(NotFound):
            await storage.stat(name)
        with pytest.raises(NotFound):
            _ = [chunk async for chunk in storage.open(name)]


# 11. A destination hook built from client input


@pytest.mark.parametrize("user", ["../../out", "..\\..\\out", "bob/../../../out", ".."])
async def test_a_destination_hook_cannot_be_steered_out_of_its_base(tmp_path: Path, user: str) -> None:
    base = tmp_path / "srv" / "uploads"
    base.mkdir(parents=True)

    def per_user(context: UploadContext) -> str:
        return f"{base}/users/{context.form['user']}"

    storage = LocalStorage("file", config=Config(destination=per_user))
    app = upload_app(storage)
    body = form(
        f'Content-Disposition: form-data; name="user"\r\n\r\n{user}'.encode(),
        file_part("file", "m.txt", b"x"),
    )

    reply = await asgi_post(app, body)

    assert reply.status == 422, reply.body
    [error] = reply.json()["detail"]
    assert error["loc"] == ["body", "file"]
    assert "destination" in error["msg"] and str(tmp_path) not in error["msg"]
    assert app.state.calls == 0
    assert listing(tmp_path) == ["srv", "srv/uploads"]


# 7. Temp files of uploads whose process died


def start_time(pid: int) -> int:
    """Field 22 of /proc/<pid>/stat: when the process started, in clock ticks since boot."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rpartition(")")[2].split()[19])


def dead_process() -> tuple[int, int]:
    """The pid and start time of a process that has exited (and been reaped)."""
    process = subprocess.Popen(["sleep", "30"])
    started = start_time(process.pid)
    process.kill()
    process.wait()
    return process.pid, started


def temps_of(directory: Path, pid: int) -> list[str]:
    return [p.name for p in directory.iterdir() if (m := OWNED.match(p.name)) and int(m["pid"]) == pid]


class SlowClient:
    """An upload of one file, sent in two halves over a raw socket."""

    def __init__(self, server: Server, name: str, data: bytes) -> None:
        self.body = form(file_part("file", name, data))
        address = server.url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((address[0], int(address[1])), timeout=30)
        headers = {"Content-Type": content_type(), "Content-Length": str(len(self.body))}
        self.sock.sendall(request_head("/upload", headers))
        self.half = len(self.body) // 2
        self.sock.sendall(self.body[: self.half])

    def finish(self) -> Reply:
        self.sock.sendall(self.body[self.half :])
        response = http.client.HTTPResponse(self.sock)
        response.begin()
        reply = Reply(response.status, dict(response.getheaders()), response.read())
        self.sock.close()
        return reply


def local_server(destination: Path) -> Any:
    config = {"destination": str(destination), "chunk_size": 64 * KiB}
    return run_uvicorn(
        "tests.hardening.apps.upload_app:app",
        {"HARDENING_BACKEND": "local", "HARDENING_CONFIG": json.dumps(config)},
    )


@pytest.fixture
def held_lock() -> Iterator[list[int]]:
    """Descriptors the test holds a shared lock on, as a live writer does; closed at the end."""
    descriptors: list[int] = []
    yield descriptors
    for fd in descriptors:
        os.close(fd)


def test_a_killed_servers_temp_file_is_removed_by_the_next_server_and_live_ones_are_kept(
    tmp_path: Path, held_lock: list[int]
) -> None:
    destination = tmp_path / "uploads"
    destination.mkdir()
    with local_server(destination) as first:
        doomed = SlowClient(first, "doomed.bin", os.urandom(400 * KiB))
        assert wait_until(lambda: temps_of(destination, first.pid) != [])
        [doomed_temp] = temps_of(destination, first.pid)
        owner = OWNED.match(doomed_temp)
        assert owner is not None and int(owner["start"]) == start_time(first.pid)
        host = owner["host"]

        # What a dead upload of this host, of another host, and a live one look like.
        dead_pid, dead_start = dead_process()
        me, my_start = os.getpid(), start_time(os.getpid())
        planted = {
            "dead": f".upload-{host}-{dead_pid}-{dead_start}-planted.part",
            "pid-reused": f".upload-{host}-{me}-{my_start + 1}-planted.part",
            "dead-backup": f".upload-{host}-{dead_pid}-{dead_start}-planted.bak",
            "live": f".upload-{host}-{me}-{my_start}-planted.part",
            "other-host": f".upload-{'0' * 8 if host != '0' * 8 else '1' * 8}-{dead_pid}-{dead_start}-x.part",
            "locked": f".upload-{host}-{dead_pid}-{dead_start}-locked.part",
            "unrelated": "report.pdf",
        }
        for name in planted.values():
            (destination / name).write_bytes(b"planted")
        held_lock.append(os.open(destination / planted["locked"], os.O_RDONLY))
        fcntl.flock(held_lock[-1], fcntl.LOCK_SH)  # as another pid namespace's live writer would

        with local_server(destination) as second:
            # The second server's start removed the dead uploads' files, not the first's live one.
            assert doomed_temp in os.listdir(destination)
            kept = {"live", "other-host", "locked", "unrelated"}
            assert sorted(os.listdir(destination)) == sorted([doomed_temp, *(planted[k] for k in kept)])
            survivor_data = os.urandom(400 * KiB)
            survivor = SlowClient(second, "survivor.bin", survivor_data)
            assert wait_until(lambda: temps_of(destination, second.pid) != [])

            first.process.kill()
            first.process.wait()
            with local_server(destination) as third:
                assert third.pid != first.pid
                names = os.listdir(destination)
                assert doomed_temp not in names, "the killed server's temp file is gone"
                assert temps_of(destination, second.pid) != [], "the live server's is not"
                reply = survivor.finish()
                assert reply.status == 200, reply.body
                [stored] = reply.json()["files"]
                assert stored["sha256"] == hashlib.sha256(survivor_data).hexdigest()
                assert (destination / "survivor.bin").read_bytes() == survivor_data
                assert leftovers(destination) == sorted(planted[k] for k in kept - {"unrelated"})
        doomed.sock.close()


async def test_the_next_uploads_into_a_directory_remove_dead_temp_files(tmp_path: Path) -> None:
    base = tmp_path / "users"
    bob = base / "bob"
    bob.mkdir(parents=True)
    host = await host_of_a_live_temp(tmp_path)
    dead_pid, dead_start = dead_process()
    me, my_start = os.getpid(), start_time(os.getpid())
    dead = bob / f".upload-{host}-{dead_pid}-{dead_start}-aaaa.part"
    live = bob / f".upload-{host}-{me}-{my_start}-bbbb.part"
    for path in (dead, live):
        path.write_bytes(b"planted")

    def per_user(context: UploadContext) -> str:
        return str(base / context.form["user"])

    app = upload_app(LocalStorage("file", config=Config(destination=per_user)))
    body = form(b'Content-Disposition: form-data; name="user"\r\n\r\nbob', file_part("file", "a.txt", b"a"))

    assert (await asgi_post(app, body)).status == 200
    assert await asyncio.to_thread(wait_until, lambda: not dead.exists(), 5.0), "swept after the upload"
    assert live.exists()

    # Once in a while, not on every upload.
    dead.write_bytes(b"planted again")
    assert (await asgi_post(app, body)).status == 200
    await asyncio.sleep(0.3)
    assert dead.exists()


async def host_of_a_live_temp(directory: Path) -> str:
    """This host's id, read from the temp file of an upload in progress here."""
    storage = LocalStorage("file", config=Config(destination=directory, chunk_size=KiB))
    body = form(file_part("file", "probe.bin", b"p" * 4 * KiB))
    pending = [body[: 3 * KiB], body[3 * KiB :]]

    async def receive() -> dict[str, Any]:
        if len(pending) == 1:  # the first piece flushed a chunk: the temp file exists
            while not (seen := [p.name for p in directory.glob(".upload-*")]):
                await asyncio.sleep(0.01)
            names.extend(seen)
        if pending:
            return {"type": "http.request", "body": pending.pop(0), "more_body": bool(pending)}
        return {"type": "http.disconnect"}

    names: list[str] = []
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await upload_app(storage)(upload_scope(), receive, send)
    assert sent[0]["status"] == 200
    [name] = names
    owner = OWNED.match(name)
    assert owner is not None and int(owner["pid"]) == os.getpid(), name
    return owner["host"]


def upload_scope() -> dict[str, Any]:
    return post_scope("/upload", [(b"host", b"test"), (b"content-type", content_type().encode())])


# cleanup(older_than)


async def test_cleanup_removes_old_leftovers_and_keeps_fresh_ones(
    tmp_path: Path, held_lock: list[int]
) -> None:
    destination = tmp_path / "uploads"
    (destination / "sub").mkdir(parents=True)
    two_days_ago = time.time() - 2 * 86400
    files = {
        "old-temp": destination / ".upload-abcd1234.part",  # an older release's name: any host
        "old-backup": destination / "sub" / ".upload-0badc0de-1-2-x.bak",
        "fresh-temp": destination / ".upload-fresh.part",
        "old-but-held": destination / ".upload-held.part",
        "old-upload": destination / "report.pdf",
    }
    for name, path in files.items():
        path.write_bytes(b"x")
        if name != "fresh-temp":
            os.utime(path, (two_days_ago, two_days_ago))
    held_lock.append(os.open(files["old-but-held"], os.O_RDONLY))
    fcntl.flock(held_lock[-1], fcntl.LOCK_SH)
    storage = LocalStorage("file", config=Config(destination=destination))

    assert await storage.cleanup(timedelta(days=1)) == 2

    assert sorted(name for name, path in files.items() if path.exists()) == [
        "fresh-temp",
        "old-but-held",
        "old-upload",
    ]
    assert await storage.cleanup(timedelta(seconds=0)) == 1  # the fresh one, now that it counts as old


async def test_cleanup_with_a_callable_destination_takes_the_directories(tmp_path: Path) -> None:
    old = time.time() - 2 * 86400
    temps = [tmp_path / user / ".upload-x.part" for user in ("ann", "bob")]
    for temp in temps:
        temp.parent.mkdir()
        temp.write_bytes(b"x")
        os.utime(temp, (old, old))
    storage = LocalStorage("file", config=Config(destination=lambda context: str(tmp_path / "ann")))

    with pytest.raises(ValueError, match="directories"):
        await storage.cleanup()
    assert await storage.cleanup(directories=[tmp_path]) == 2
    assert not any(temp.exists() for temp in temps)
