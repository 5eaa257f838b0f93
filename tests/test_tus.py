"""The tus protocol of ``tus_router``, request by request, on local disk (TestClient).

Every backend runs the same uploads in ``tests/contract/test_resumable.py``; real clients,
real servers and two instances over one store are in ``tests/e2e/test_tus_*.py``.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from fastapi import Depends, FastAPI, HTTPException, Request
from starlette.testclient import TestClient

from filestore_fastapi import Config, FileData, LocalStorage, MemoryStorage, tus_router

TUS = {"Tus-Resumable": "1.0.0"}
CHUNK = {**TUS, "Content-Type": "application/offset+octet-stream"}


def metadata(**values: str) -> str:
    return ",".join(f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in values.items())


class App:
    """An app with one tus router on a LocalStorage, and what ``on_complete`` was given."""

    def __init__(self, root: Path, *, owner: Any = None, **config: Any) -> None:
        self.root = root
        self.completed: list[FileData] = []
        self.storage = LocalStorage("video", config=Config(destination=root / "videos", **config))
        self.app = FastAPI()

        async def stored(file: FileData) -> None:
            self.completed.append(file)

        extra: dict[str, Any] = {"owner": owner} if owner else {}
        self.app.include_router(tus_router(self.storage, prefix="/uploads", on_complete=stored, **extra))
        self.client = TestClient(self.app)

    def create(self, length: int | None, name: str = "clip.mp4", **headers: str) -> str:
        sent = {**TUS, "Upload-Metadata": metadata(filename=name, filetype="video/mp4"), **headers}
        if length is not None:
            sent["Upload-Length"] = str(length)
        else:
            sent.setdefault("Upload-Defer-Length", "1")
        response = self.client.post("/uploads", headers=sent)
        assert response.status_code == 201, response.text
        return response.headers["Location"]

    def patch(self, url: str, offset: int, data: bytes, **headers: str) -> Any:
        return self.client.patch(
            url, content=data, headers={**CHUNK, "Upload-Offset": str(offset), **headers}
        )

    def files(self) -> list[str]:
        """Everything under the destination, hidden state included."""
        base = self.root / "videos"
        return sorted(p.relative_to(base).as_posix() for p in base.rglob("*")) if base.exists() else []


@pytest.fixture
def tus(tmp_path: Path) -> Iterator[App]:
    app = App(tmp_path)
    with app.client:
        yield app


def test_options_advertises_version_extensions_checksums_and_max_size(tmp_path: Path) -> None:
    app = App(tmp_path, max_file_size=1000)
    response = app.client.options("/uploads")
    assert response.status_code == 204
    assert response.headers["Tus-Version"] == "1.0.0"
    assert response.headers["Tus-Max-Size"] == "1000"
    assert set(response.headers["Tus-Extension"].split(",")) == {
        "creation",
        "creation-with-upload",
        "creation-defer-length",
        "termination",
        "checksum",
        "expiration",
        "concatenation",
    }
    assert set(response.headers["Tus-Checksum-Algorithm"].split(",")) == {"sha1", "md5", "sha256"}


def test_an_upload_in_three_patches_is_stored_once_complete(tus: App) -> None:
    data = os.urandom(300_000)
    url = tus.create(len(data))
    assert url.startswith("/uploads/") and len(url.rsplit("/", 1)[1]) == 32
    offset = 0
    for piece in (data[:100_000], data[100_000:250_000], data[250_000:]):
        response = tus.patch(url, offset, piece)
        assert response.status_code == 204, response.text
        offset += len(piece)
        assert response.headers["Upload-Offset"] == str(offset)
        head = tus.client.head(url, headers=TUS)
        assert head.headers["Upload-Offset"] == str(offset)
        assert head.headers["Upload-Length"] == str(len(data))
        assert head.headers["Cache-Control"] == "no-store"
    [file] = tus.completed
    assert (tus.root / "videos" / "clip.mp4").read_bytes() == data
    assert file.filename == "clip.mp4" and file.size == len(data)
    assert file.sha256 == hashlib.sha256(data).hexdigest()
    assert file.content_type == "video/mp4" and file.original_filename == "clip.mp4"
    result = tus.client.get(url)
    assert result.status_code == 200
    assert result.json()["sha256"] == file.sha256 and result.json()["filename"] == "clip.mp4"
    assert "path" not in result.json()
    # No piece left: the state of a completed upload is its info, its result and its lease.
    hidden = [name for name in tus.files() if name.startswith(".tus/") and "/data-" in name]
    assert hidden == []


# -- refusals: the right status, and nothing changes -------------------------------------------


def test_a_request_without_the_tus_version_is_412_naming_the_version(tus: App) -> None:
    reply = tus.client.post("/uploads", headers={"Upload-Length": "10"})
    assert reply.status_code == 412
    assert reply.headers["Tus-Version"] == "1.0.0"
    assert tus.files() == []


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Upload-Length": "-1"},
        {"Upload-Length": "ten"},
        {"Upload-Length": "10", "Upload-Defer-Length": "1"},
        {"Upload-Defer-Length": "2"},
        {"Upload-Length": "10", "Upload-Metadata": "filename not*base64"},
        {"Upload-Length": "10", "Upload-Metadata": "filename /w==,filename YQ=="},
        {"Upload-Length": "10", "Upload-Concat": "final;"},
        {"Upload-Length": "10", "Upload-Concat": "final;/uploads/../../etc"},
    ],
)
def test_invalid_creation_headers_are_400_and_store_nothing(tus: App, headers: dict[str, str]) -> None:
    reply = tus.client.post("/uploads", headers={**TUS, **headers})
    assert reply.status_code == 400, reply.text
    assert reply.json()["detail"][0]["msg"]
    assert tus.files() == []


def test_limits_and_rules_refuse_at_creation(tmp_path: Path) -> None:
    app = App(
        tmp_path,
        max_file_size=1000,
        min_file_size=10,
        allowed_extensions=[".mp4"],
        allowed_content_types=["video/*"],
        filters=lambda context: context.form.get("title") != "spam" or "no spam",
    )
    refused = {
        413: {"Upload-Length": "1001", "Upload-Metadata": metadata(filename="a.mp4", filetype="video/mp4")},
        422: {"Upload-Length": "9", "Upload-Metadata": metadata(filename="a.mp4", filetype="video/mp4")},
        415: {"Upload-Length": "100", "Upload-Metadata": metadata(filename="a.exe", filetype="video/mp4")},
    }
    for status, headers in refused.items():
        reply = app.client.post("/uploads", headers={**TUS, **headers})
        assert reply.status_code == status, reply.text
        assert "video" in reply.json()["detail"][0]["msg"]
    bad_type = metadata(filename="a.mp4", filetype="text/html")
    assert (
        app.client.post(
            "/uploads", headers={**TUS, "Upload-Length": "100", "Upload-Metadata": bad_type}
        ).status_code
        == 415
    )
    spam = metadata(filename="a.mp4", filetype="video/mp4", title="spam")
    reply = app.client.post("/uploads", headers={**TUS, "Upload-Length": "100", "Upload-Metadata": spam})
    assert reply.status_code == 422 and "no spam" in reply.text
    assert app.files() == []


def test_a_destination_hook_leaving_its_base_is_422_at_creation(tmp_path: Path) -> None:
    storage = MemoryStorage("video", config=Config(destination=lambda context: f"in/{context.form['user']}"))
    app = FastAPI()
    app.include_router(tus_router(storage, prefix="/up"))
    client = TestClient(app)
    headers = {**TUS, "Upload-Length": "3", "Upload-Metadata": metadata(filename="a.mp4", user="../../x")}
    reply = client.post("/up", headers=headers)
    assert reply.status_code == 422 and "leave its base" in reply.text
    assert anyio.run(storage.list_objects, "") == []


def test_local_storage_with_a_destination_hook_has_no_place_for_the_state(tmp_path: Path) -> None:
    storage = LocalStorage("video", config=Config(destination=lambda context: str(tmp_path)))
    with pytest.raises(ValueError, match="fixed destination"):
        tus_router(storage, prefix="/up")


def test_patch_refusals_leave_the_upload_as_it_was(tmp_path: Path) -> None:
    app = App(tmp_path, max_file_size=1000)
    url = app.create(100)
    assert app.patch(url, 0, b"a" * 40).status_code == 204
    cases = [
        (
            415,
            app.client.patch(
                url,
                content=b"x",
                headers={**TUS, "Content-Type": "application/octet-stream", "Upload-Offset": "40"},
            ),
        ),
        (
            412,
            app.client.patch(
                url,
                content=b"x",
                headers={"Content-Type": "application/offset+octet-stream", "Upload-Offset": "40"},
            ),
        ),
        (400, app.client.patch(url, content=b"x", headers=CHUNK)),
        (400, app.patch(url, 40, b"x", **{"Upload-Offset": "forty"})),
        (409, app.patch(url, 39, b"x")),
        (409, app.patch(url, 41, b"x")),
        (413, app.patch(url, 40, b"b" * 61)),
        (400, app.patch(url, 40, b"x", **{"Upload-Checksum": "crc32 AAAA"})),
        (400, app.patch(url, 40, b"x", **{"Upload-Checksum": "sha1 ***"})),
        (400, app.patch(url, 40, b"x", **{"Upload-Length": "101"})),
        (404, app.patch("/uploads/" + "0" * 32, 0, b"x")),
        (404, app.patch("/uploads/not-an-id", 0, b"x")),
    ]
    for status, reply in cases:
        assert reply.status_code == status, (status, reply.text)
        assert reply.headers["Tus-Resumable"] == "1.0.0"
    assert app.client.head(url, headers=TUS).headers["Upload-Offset"] == "40"
    assert app.patch(url, 40, b"c" * 60).status_code == 204
    assert (tmp_path / "videos" / "clip.mp4").read_bytes() == b"a" * 40 + b"c" * 60
    # After completion: the same last offset is no error, any other is a conflict.
    assert app.patch(url, 100, b"").status_code == 204
    assert app.patch(url, 100, b"x").status_code == 413
    assert app.patch(url, 60, b"x").status_code == 409
    assert len(app.completed) == 1


def test_a_deferred_length_is_bounded_by_max_file_size_on_every_patch(tmp_path: Path) -> None:
    app = App(tmp_path, max_file_size=100)
    url = app.create(None)
    assert app.patch(url, 0, b"a" * 60).status_code == 204
    reply = app.patch(url, 60, b"b" * 41)
    assert reply.status_code == 413 and "max_file_size of 100" in reply.text
    assert app.client.head(url, headers=TUS).headers["Upload-Offset"] == "60"
    assert app.patch(url, 60, b"b" * 40, **{"Upload-Length": "101"}).status_code == 413


def test_creation_with_upload_stores_the_first_bytes(tus: App) -> None:
    reply = tus.client.post(
        "/uploads",
        content=b"hello",
        headers={**CHUNK, "Upload-Length": "11", "Upload-Metadata": metadata(filename="hi.txt")},
    )
    assert reply.status_code == 201 and reply.headers["Upload-Offset"] == "5"
    assert tus.patch(reply.headers["Location"], 5, b" world").status_code == 204
    assert (tus.root / "videos" / "hi.txt").read_bytes() == b"hello world"


def test_a_second_upload_of_a_name_gets_the_collision_policy_name(tus: App) -> None:
    for _ in range(2):
        url = tus.create(3)
        assert tus.patch(url, 0, b"abc").status_code == 204
    assert [f.filename for f in tus.completed] == ["clip.mp4", "clip-1.mp4"]


def test_an_upload_is_404_to_anyone_but_its_owner(tmp_path: Path) -> None:
    app = App(tmp_path, owner=lambda request: request.headers.get("x-user"))
    url = app.create(3, **{"X-User": "ann"})
    bob = {"X-User": "bob"}
    assert app.client.head(url, headers={**TUS, **bob}).status_code == 404
    assert app.patch(url, 0, b"abc", **bob).status_code == 404
    assert app.client.delete(url, headers={**TUS, **bob}).status_code == 404
    assert app.patch(url, 0, b"abc", **{"X-User": "ann"}).status_code == 204
    assert app.client.get(url, headers=bob).status_code == 404
    assert app.client.get(url, headers={"X-User": "ann"}).status_code == 200


def test_the_routers_dependencies_run_on_every_tus_request(tmp_path: Path) -> None:
    storage = LocalStorage("video", config=Config(destination=tmp_path))

    def auth(request: Request) -> None:
        if request.headers.get("authorization") != "Bearer ok":
            raise HTTPException(401, "who are you?")

    app = FastAPI()
    app.include_router(tus_router(storage, prefix="/up", dependencies=[Depends(auth)]))
    client = TestClient(app)
    url = "/up/" + "0" * 32
    for method, path in [
        ("OPTIONS", "/up"),
        ("POST", "/up"),
        ("HEAD", url),
        ("PATCH", url),
        ("DELETE", url),
        ("GET", url),
    ]:
        assert client.request(method, path, headers=TUS).status_code == 401, method
    ok = {**TUS, "Authorization": "Bearer ok", "Upload-Length": "1"}
    assert client.post("/up", headers=ok).status_code == 201


def test_verify_content_judges_the_first_bytes_of_the_first_patch(tmp_path: Path) -> None:
    pytest.importorskip("filetype")
    app = App(tmp_path, allowed_content_types=["image/png"], verify_content=True)
    url = app.create(
        5000, name="a.png", **{"Upload-Metadata": metadata(filename="a.png", filetype="image/png")}
    )
    reply = app.patch(url, 0, b"MZ\x90\x00" + os.urandom(4000))
    assert reply.status_code == 415 and "not allowed" in reply.text
    assert app.client.head(url, headers=TUS).headers["Upload-Offset"] == "0"


def test_progress_is_reported_every_interval_across_patches(tmp_path: Path) -> None:
    seen: list[int] = []
    app = App(tmp_path, progress=lambda context, received: seen.append(received), progress_interval=100)
    url = app.create(450)
    for offset in range(0, 450, 50):
        assert app.patch(url, offset, b"x" * 50).status_code == 204
    assert seen == [100, 200, 300, 400, 450]


def test_a_failing_on_complete_keeps_no_file_and_a_retry_completes(tmp_path: Path) -> None:
    storage = LocalStorage("video", config=Config(destination=tmp_path))
    calls: list[FileData] = []

    def once_failing(file: FileData) -> None:
        calls.append(file)
        if len(calls) == 1:
            raise RuntimeError("the database is down")

    app = FastAPI()
    app.include_router(tus_router(storage, prefix="/up", on_complete=once_failing))
    client = TestClient(app)
    reply = client.post(
        "/up", headers={**TUS, "Upload-Length": "3", "Upload-Metadata": metadata(filename="a.txt")}
    )
    url = reply.headers["Location"]
    failed = client.patch(url, content=b"abc", headers={**CHUNK, "Upload-Offset": "0"})
    assert failed.status_code == 500 and "database" not in failed.text
    assert not (tmp_path / "a.txt").exists()
    retried = client.patch(url, content=b"", headers={**CHUNK, "Upload-Offset": "3"})
    assert retried.status_code == 204
    assert (tmp_path / "a.txt").read_bytes() == b"abc" and len(calls) == 2


# -- one writer at a time, and a stalled one -----------------------------------------------------


async def _slow_body(first: bytes, release: anyio.Event, rest: bytes) -> Any:
    yield first
    await release.wait()
    yield rest


async def test_a_second_patch_while_one_writes_is_423_and_the_bytes_stay_whole(tmp_path: Path) -> None:
    from tests.httpclient import httpx

    app = App(tmp_path)
    url = app.create(200)
    release = anyio.Event()
    transport = httpx.ASGITransport(app=app.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        replies: dict[str, Any] = {}

        async def first() -> None:
            body = _slow_body(b"a" * 50, release, b"a" * 50)
            headers = {**CHUNK, "Upload-Offset": "0", "Content-Length": "100"}
            replies["first"] = await client.patch(url, content=body, headers=headers)

        async with anyio.create_task_group() as group:
            group.start_soon(first)
            await anyio.sleep(0.3)
            replies["second"] = await client.patch(
                url, content=b"b" * 100, headers={**CHUNK, "Upload-Offset": "0"}
            )
            release.set()
        assert replies["second"].status_code == 423
        assert replies["first"].status_code == 204, replies["first"].text
        head = await client.head(url, headers=TUS)
        assert head.headers["Upload-Offset"] == "100"
        assert (
            await client.patch(url, content=b"c" * 100, headers={**CHUNK, "Upload-Offset": "100"})
        ).status_code == 204
    assert (tmp_path / "videos" / "clip.mp4").read_bytes() == b"a" * 100 + b"c" * 100


async def test_a_stalled_patch_is_408_and_keeps_what_arrived(tmp_path: Path) -> None:
    from tests.httpclient import httpx

    app = App(tmp_path, idle_timeout=0.5)
    url = app.create(100)
    never = anyio.Event()
    transport = httpx.ASGITransport(app=app.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        headers = {**CHUNK, "Upload-Offset": "0"}
        reply = await client.patch(url, content=_slow_body(b"a" * 30, never, b""), headers=headers)
        assert reply.status_code == 408 and "idle_timeout" in reply.text
        head = await client.head(url, headers=TUS)
        assert head.headers["Upload-Offset"] == "30", "the bytes that came are kept: the client resumes there"
        # The lease was let go: the client resumes at once.
        reply = await client.patch(url, content=b"b" * 70, headers={**CHUNK, "Upload-Offset": "30"})
        assert reply.status_code == 204
    assert (tmp_path / "videos" / "clip.mp4").read_bytes() == b"a" * 30 + b"b" * 70


def test_a_lease_left_by_a_crashed_instance_blocks_only_until_it_expires(tmp_path: Path) -> None:
    """A crashed instance leaves its ``lock-<n>`` (the layout docs/resumable.md shows)."""
    import json
    import time

    from filestore_fastapi import WriteRequest

    app = App(tmp_path)
    url = app.create(3)
    upload_id = url.rsplit("/", 1)[1]

    async def plant() -> None:
        target = WriteRequest(
            field_name="video",
            filename="lock-000000000001",
            content_type="application/octet-stream",
            destination=str(tmp_path / "videos" / ".tus" / upload_id),
            exact=True,
        )
        writer = await app.storage.open_writer(target)
        await writer.write(json.dumps({"expires": time.time() + 1.0}).encode())
        await writer.commit()

    anyio.run(plant)
    assert app.patch(url, 0, b"abc").status_code == 423
    time.sleep(1.1)
    assert app.patch(url, 0, b"abc").status_code == 204
    assert (tmp_path / "videos" / "clip.mp4").read_bytes() == b"abc"


def test_upload_ids_are_128_random_bits(tus: App) -> None:
    ids = {tus.create(1).rsplit("/", 1)[1] for _ in range(50)}
    assert len(ids) == 50
    assert all(len(upload_id) == 32 and int(upload_id, 16) >= 0 for upload_id in ids)
    assert len({upload_id[:8] for upload_id in ids}) == 50, "no shared prefix: not a counter"


def test_metadata_over_64_kib_is_413(tus: App) -> None:
    huge = metadata(filename="a.mp4", note="x" * 50_000)
    reply = tus.client.post("/uploads", headers={**TUS, "Upload-Length": "1", "Upload-Metadata": huge})
    assert reply.status_code == 413 and "Upload-Metadata" in reply.text
    assert tus.files() == []


@pytest.mark.parametrize("checksum", ["sha256", "md5", None])
def test_two_instances_over_one_directory_share_the_upload(tmp_path: Path, checksum: str | None) -> None:
    """Each instance sees only some PATCHes: the completing one hashes what it did not see."""
    one, two = App(tmp_path, checksum=checksum), App(tmp_path, checksum=checksum)
    data = os.urandom(500_000)
    url = one.create(len(data))
    cuts = [0, 100_000, 200_000, 350_000, len(data)]
    for index, (start, end) in enumerate(itertools.pairwise(cuts)):
        instance = (one, two)[index % 2]
        assert instance.client.head(url, headers=TUS).headers["Upload-Offset"] == str(start)
        assert instance.patch(url, start, data[start:end]).status_code == 204
    [file] = two.completed
    assert one.completed == []
    expected = hashlib.new(checksum, data).hexdigest() if checksum else None
    assert (file.checksum_algorithm, file.checksum) == (checksum, expected)
    assert one.client.get(url).json()["checksum"] == expected
    assert (tmp_path / "videos" / "clip.mp4").read_bytes() == data


@pytest.mark.parametrize("checksum", ["sha256", "sha1", None])
def test_an_upload_seen_whole_by_one_instance_is_joined_without_reading_it_back(
    tmp_path: Path, checksum: str | None
) -> None:
    app = App(tmp_path, checksum=checksum)
    read_pieces: list[str] = []
    opened = app.storage.open

    def counting_open(key: str) -> Any:
        if "/data-" in key:
            read_pieces.append(key)
        return opened(key)

    app.storage.open = counting_open  # type: ignore[method-assign]
    data = os.urandom(300_000)
    url = app.create(len(data))
    for start in range(0, len(data), 100_000):
        assert app.patch(url, start, data[start : start + 100_000]).status_code == 204
    [file] = app.completed
    expected = hashlib.new(checksum, data).hexdigest() if checksum else None
    assert file.checksum == expected
    assert (tmp_path / "videos" / "clip.mp4").read_bytes() == data
    assert read_pieces == [], "joined in the kernel, with the checksum taken as the bytes came"


def test_an_empty_upload_is_complete_on_creation(tus: App) -> None:
    """tus-js-client sends no PATCH for an empty file: Upload-Length 0 completes at creation."""
    url = tus.create(0, name="empty.txt")
    assert tus.client.head(url, headers=TUS).headers["Upload-Offset"] == "0"
    result = tus.client.get(url)
    assert result.status_code == 200, result.text
    assert result.json()["size"] == 0 and result.json()["sha256"] == hashlib.sha256(b"").hexdigest()
    assert (tus.root / "videos" / "empty.txt").read_bytes() == b""
    # An empty partial upload is complete too, so a final upload can take it.
    empty = tus.create(0, **{"Upload-Concat": "partial"})
    part = tus.create(3, **{"Upload-Concat": "partial"})
    assert tus.patch(part, 0, b"abc").status_code == 204
    final = tus.client.post("/uploads", headers={**TUS, "Upload-Concat": f"final;{empty} {part}"})
    assert final.status_code == 201, final.text
    assert tus.client.get(final.headers["Location"]).json()["size"] == 3


def test_a_one_piece_upload_on_local_disk_is_linked_not_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tus-js-client sends a whole file in one PATCH by default: no second copy of it."""
    from filestore_fastapi.backends import local

    def no_copy(source: Path, fd: int) -> None:
        raise AssertionError("copied")

    monkeypatch.setattr(local, "_append_file", no_copy)
    app = App(tmp_path)
    data = os.urandom(200_000)
    url = app.create(len(data))
    assert app.patch(url, 0, data).status_code == 204
    [file] = app.completed
    assert file.path is not None and file.path.read_bytes() == data
    assert file.path.stat().st_nlink == 1, "the piece is gone; the file is its inode"
    assert not [name for name in app.files() if ".upload-" in name or "/data-" in name]


def test_the_filename_and_metadata_hooks_see_the_upload_metadata_as_the_form(tmp_path: Path) -> None:
    seen: list[tuple[str, str, dict[str, str]]] = []

    def named(context: Any) -> str:
        seen.append((context.field_name, context.filename, dict(context.form)))
        return f"{context.form['user']}-{context.filename}"

    app = App(tmp_path, filename=named, metadata=lambda context: {"title": context.form["title"]})
    url = app.create(3, **{"Upload-Metadata": metadata(filename="clip.mp4", user="ann", title="Holiday")})
    assert app.patch(url, 0, b"abc").status_code == 204
    [file] = app.completed
    assert file.filename == "ann-clip.mp4" and file.metadata["title"] == "Holiday"
    assert seen == [("video", "clip.mp4", {"filename": "clip.mp4", "user": "ann", "title": "Holiday"})]
    assert (tmp_path / "videos" / "ann-clip.mp4").read_bytes() == b"abc"


@pytest.mark.parametrize("algorithm", ["sha1", "md5", "sha256"])
def test_each_advertised_checksum_algorithm_is_checked(tus: App, algorithm: str) -> None:
    url = tus.create(6)
    right = base64.b64encode(hashlib.new(algorithm, b"abc").digest()).decode()
    wrong = base64.b64encode(hashlib.new(algorithm, b"abd").digest()).decode()
    assert tus.patch(url, 0, b"abc", **{"Upload-Checksum": f"{algorithm} {wrong}"}).status_code == 460
    assert tus.patch(url, 0, b"abc", **{"Upload-Checksum": f"{algorithm} {right}"}).status_code == 204
    assert tus.client.head(url, headers=TUS).headers["Upload-Offset"] == "3"
