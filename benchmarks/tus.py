"""Resumable uploads (issue 12): one file through ``tus_router`` with tuspy (16 MiB chunks)
against the multipart upload of the same file (``apps/local.py`` and ``apps/s3.py`` with curl,
as cases 1 and 6), on local disk and on S3 (moto server), every server a real uvicorn; then
an upload whose connection is reset once 50% of the file plus half a chunk has gone (so in
the middle of a PATCH), resumed by a new tuspy ``Uploader`` from the URL it stored, with
the bytes re-sent counted at the proxy that cut it.

Standalone: ``python -m benchmarks.tus [--size-mib 1024] [--runs 5] [--profile]`` prints
the tables and writes ``docs/benchmarks/tus.md``; ``--profile`` adds one more tus upload a
store under py-spy (if installed) for the "where the time goes" section. As a case of
``python -m benchmarks``: ``tus_case(bench, stack)``, the signature of ``cases.CASES``.
``python -m benchmarks.tus client URL FILE SHA256 CHUNK`` is the tuspy client's own process
(JSON on stdout, as ``s3_baseline``).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import json
import os
import re
import resource
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from .cases import Bench, CaseResult, Target, median, mib, size_label, warm_up
from .measure import LOCAL, S3, Contender, Counters, CurlResult, MiB, Running, Sample, curl_post, serve

ROOT = Path(__file__).resolve().parents[1]
GiB = 1024 * MiB
CHUNK = 16 * MiB
S3_PART_SIZE = 8 * MiB  # as case 6
TUS_LOCAL = Contender("tus-local", "tus_router, LocalStorage (tuspy)", "tus_local", "tus local")
TUS_S3 = Contender("tus-s3", "tus_router, S3Storage (tuspy)", "tus_s3", "tus S3")
TUS_HEADERS = {"Tus-Resumable": "1.0.0"}


KINDS = {"multipart": "multipart (curl)", "tus": "tus (tuspy)", "tus-copy": "tus, completion by copy"}


@dataclass
class Store:
    """One store's contenders, by kind: the multipart app (curl), the tus app (tuspy) and,
    with ``--copy-engine``, the tus app on an engine whose completion copies the pieces."""

    name: str
    servers: dict[str, Running]
    after: Callable[[], None] = lambda: None
    """Run after every upload (S3: empty the bucket)."""
    moto_pid: int | None = None
    moto_cpu: dict[int, float] = field(default_factory=dict)
    """Seconds of moto's CPU per sample (by ``id``)."""
    patches: dict[int, list[float]] = field(default_factory=dict)
    """The tuspy client's seconds per PATCH, per sample (by ``id``)."""

    @property
    def tus(self) -> Running:
        return self.servers["tus"]


# -- the tuspy client, in a process of its own ------------------------------------------


def client_main(url: str, path: str, digest: str, chunk: int) -> None:
    """Upload ``path`` to the tus endpoint ``url`` with tuspy, chunk by chunk; print JSON:
    wall seconds from the creation POST to the last PATCH's answer, each PATCH's seconds,
    the CPU seconds, and whether the stored upload's sha256 (its ``GET``) is ``digest``."""
    import requests
    from tusclient.client import TusClient

    client = TusClient(url)
    name = Path(path).name
    uploader = client.uploader(
        file_path=path, chunk_size=chunk, metadata={"filename": name, "filetype": "application/octet-stream"}
    )
    size = uploader.get_file_size()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    uploader.set_url(uploader.create_url())
    uploader.stop_at = size
    patches = []
    while uploader.offset < size:
        patch_started = time.perf_counter()
        uploader.upload_chunk()
        patches.append(time.perf_counter() - patch_started)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    assert uploader.url is not None
    stored = requests.get(uploader.url, timeout=60).json()
    print(
        json.dumps(
            {
                "seconds": seconds,
                "patches": patches,
                "cpu_seconds": after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime,
                "ok": stored.get("sha256") == digest and stored.get("size") == size,
                "stored": {key: stored.get(key) for key in ("filename", "size", "sha256")},
            }
        )
    )


def run_client(url: str, path: Path, digest: str, chunk: int = CHUNK) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.tus", "client", url, str(path), digest, str(chunk)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"the tuspy client failed: {done.stderr.strip()[-2000:]}")
    figures: dict[str, Any] = json.loads(done.stdout)
    if not figures["ok"]:
        raise RuntimeError(f"the stored upload is not the file sent: {figures['stored']}")
    return figures


# -- one measured upload -----------------------------------------------------------------


def measure(store: Store, kind: str, path: Path, size: int, digest: str) -> Sample:
    running = store.servers[kind]
    if kind == "multipart":
        return _measured(
            store, running, lambda: curl_post(running.server.url + "/one", [(path, "big.bin")]), size
        )
    figures: dict[str, Any] = {}

    def request() -> CurlResult:
        figures.update(run_client(running.server.url + "/files", path, digest))
        return CurlResult([200], [figures["seconds"]], figures["seconds"], figures["cpu_seconds"])

    sample = _measured(store, running, request, size)
    store.patches[id(sample)] = figures["patches"]
    return sample


def _measured(store: Store, running: Running, request: Callable[[], CurlResult], size: int) -> Sample:
    moto_before = Counters.of(store.moto_pid).cpu_seconds if store.moto_pid else 0.0
    sample = running.measure(request, size)
    if store.moto_pid:
        store.moto_cpu[id(sample)] = Counters.of(store.moto_pid).cpu_seconds - moto_before
    store.after()
    if sample.status != 200:
        raise RuntimeError(f"{running.contender.key} answered {sample.status}")
    return sample


# -- a proxy that counts the bytes sent and cuts the connection once ----------------------


def _reset(*sockets: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a dropped connection looks to both ends.

    ``shutdown`` first: a socket another thread is blocked in ``recv`` on is not released by
    ``close`` alone (the kernel keeps it until that call returns), so its peer would never
    hear of the drop."""
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()


class CuttingProxy:
    """A loopback TCP proxy in front of one server. It counts the request-body bytes that
    arrive from the client (``Content-Length`` framing) over every connection, and once the
    count passes ``cut_at`` it forwards the body up to that byte, then resets the
    connection on both sides; once only."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.cut_at: int | None = None
        self.body_bytes = 0
        self.cuts = 0
        self.requests: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self._listener.accept()
                try:
                    server = socket.create_connection(("127.0.0.1", self.upstream_port))
                except OSError:
                    _reset(client)
                    continue
                threading.Thread(target=self._upstream, args=(client, server), daemon=True).start()
                threading.Thread(target=self._downstream, args=(server, client), daemon=True).start()

    def _upstream(self, client: socket.socket, server: socket.socket) -> None:
        head, body_left = b"", 0
        try:
            while data := client.recv(1 << 20):
                position, cut_position = 0, None
                while position < len(data) and cut_position is None:
                    if body_left:
                        count = min(body_left, len(data) - position)
                        with self._lock:
                            before, self.body_bytes = self.body_bytes, self.body_bytes + count
                            if self.cut_at is not None and before + count > self.cut_at:
                                cut_position = position + max(0, self.cut_at - before)
                                self.cut_at = None
                                self.cuts += 1
                        body_left -= count
                        position += count
                        continue
                    start = len(head)
                    head += data[position:]
                    end = head.find(b"\r\n\r\n")
                    if end < 0:
                        position = len(data)
                        continue
                    position += end + 4 - start
                    lines = head[:end].decode("latin-1").split("\r\n")
                    with self._lock:
                        self.requests[lines[0].split(" ", 1)[0]] += 1
                    for line in lines[1:]:
                        label, _, value = line.partition(":")
                        if label.strip().lower() == "content-length":
                            body_left = int(value)
                    head = b""
                if cut_position is not None:
                    server.sendall(data[:cut_position])
                    _reset(server, client)
                    return
                server.sendall(data)
            with contextlib.suppress(OSError):
                server.shutdown(socket.SHUT_WR)
        except OSError:
            _reset(server, client)

    @staticmethod
    def _downstream(server: socket.socket, client: socket.socket) -> None:
        try:
            while data := server.recv(1 << 20):
                client.sendall(data)
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_WR)
        except OSError:
            _reset(server, client)


def head_offset(url: str) -> int:
    from tests.httpclient import httpx

    return int(httpx.head(url, headers=TUS_HEADERS, timeout=10).headers["Upload-Offset"])


def resume_after_a_drop(store: Store, path: Path, size: int, digest: str, scratch: Path) -> dict[str, Any]:
    """An upload cut at 50% + half a chunk, resumed by a new tuspy ``Uploader`` from the
    URL the first one stored; the bytes re-sent as the proxy counted them."""
    from tusclient.client import TusClient
    from tusclient.exceptions import TusCommunicationError
    from tusclient.storage.filestorage import FileStorage

    from tests.httpclient import httpx

    port = int(store.tus.server.url.rsplit(":", 1)[1])
    proxy = CuttingProxy(port)
    urls_file = scratch / f"tus-urls-{store.name}.json"
    urls_file.unlink(missing_ok=True)
    urls = FileStorage(str(urls_file))
    chunk = min(CHUNK, max(size // 8, 1))
    cut_at = size // 2 + chunk // 2

    def uploader(**options: Any) -> Any:
        return TusClient(proxy.url + "/files").uploader(
            file_path=str(path),
            chunk_size=chunk,
            metadata={"filename": "resumed.bin", "filetype": "application/octet-stream"},
            store_url=True,
            url_storage=urls,
            **options,
        )

    try:
        proxy.cut_at = cut_at
        started = time.perf_counter()
        first = uploader()
        with contextlib.suppress(TusCommunicationError):
            first.upload()
        cut_seconds = time.perf_counter() - started
        if proxy.cuts != 1 or first.url is None:
            raise RuntimeError(f"{store.name}: the upload was not cut (cuts: {proxy.cuts})")
        url = first.url.replace(proxy.url, store.tus.server.url)
        chunk_start = first.offset
        # The server sees the reset, stores what arrived and gives up its lease; a client
        # would wait its retry delay. Wait until the offset stops moving.
        settled, last, deadline = time.perf_counter(), head_offset(url), time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.2)
            now = head_offset(url)
            if now == last and now > chunk_start:
                break
            last = now
        settled = time.perf_counter() - settled
        resumed = uploader(retries=10, retry_delay=1)
        if resumed.url != first.url:
            raise RuntimeError(f"{store.name}: the new Uploader did not find the stored URL")
        resumed_from = resumed.offset
        resume_started = time.perf_counter()
        resumed.upload()
        resume_seconds = time.perf_counter() - resume_started
        stored = httpx.get(url, timeout=60).json()
        if (stored["sha256"], stored["size"]) != (digest, size):
            raise RuntimeError(f"{store.name}: the resumed upload is not the file sent: {stored}")
    finally:
        proxy.close()
        store.after()
        store.tus.clear()
    return {
        "store": store.name,
        "size": size,
        "chunk": chunk,
        "cut_at": cut_at,
        "chunk_start": chunk_start,
        "resumed_from": resumed_from,
        "kept_of_cut_patch": resumed_from - chunk_start,
        "forwarded_of_cut_patch": cut_at - chunk_start,
        "body_bytes": proxy.body_bytes,
        "resent": proxy.body_bytes - size,
        "requests": dict(proxy.requests),
        "seconds_to_cut": cut_seconds,
        "seconds_to_settle": settled,
        "seconds_to_finish": resume_seconds,
    }


# -- where the time goes: py-spy over the server -----------------------------------------


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def profile_tus(
    store: Store, kind: str, path: Path, size: int, digest: str, output: Path
) -> dict[str, Any] | None:
    """One more tus upload with py-spy sampling the server (100 Hz, every thread, idle
    samples dropped): the samples by thread and phase (PATCH path, completion)."""
    spy = py_spy()
    if spy is None:
        return None
    running = store.servers[kind]
    raw = output / f"tus-profile-{store.name}-{kind}.txt"
    command = [spy, "record", "--pid", str(running.server.pid), "--rate", "100", "--threads"]
    command += ["--format", "raw", "--output", str(raw), "--nonblocking"]
    recorder = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)  # py-spy attaches
        figures = run_client(running.server.url + "/files", path, digest)
    finally:
        recorder.send_signal(2)  # SIGINT: py-spy writes its output and stops
        recorder.wait(timeout=60)
    store.after()
    running.clear()
    if not raw.exists():
        return None
    summary = summarise_profile(raw.read_text(), running.server.pid)
    return {
        "store": store.name,
        "kind": kind,
        "seconds": figures["seconds"],
        "patches": figures["patches"],
        **summary,
    }


#: A loop sample's phase: the first of these functions found in its stack.
PHASES = (
    ("assemble", "completion (assemble)"),
    ("_store_piece", "PATCH streaming (_store_piece)"),
    ("lease", "leases and state objects"),
    ("load", "leases and state objects"),
    ("_put", "leases and state objects"),
)


LOOP_OTHER = "the rest: uvloop and httptools (C: sockets, parsing), uvicorn, Starlette"


def summarise_profile(text: str, loop_thread: int) -> dict[str, Any]:
    """Samples by thread (the event loop, whose thread id is the process id, or a worker)
    and phase, and the hottest leaf frames.

    A worker thread's stack does not name the coroutine that handed it the work: its
    samples are split by what they run (the SDK, the local backend's file calls, or C
    called from anyio's worker directly: hashing, reads).
    """
    phases: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        thread, *frames = stack.split(";")
        names = [re.sub(r" \(.*", "", frame).rsplit(".", 1)[-1] for frame in frames]
        if thread.startswith(f"thread ({loop_thread})"):
            phase = next((label for function, label in PHASES if function in names), LOOP_OTHER)
            phases[f"loop: {phase}"] += count
        else:
            phases[f"workers: {_worker_activity(frames)}"] += count
        leaves[frames[-1] if frames else thread] += count
    return {
        "samples": total,
        "phases": dict(sorted(phases.items())),
        "leaves": [[frame, count] for frame, count in leaves.most_common(15)],
    }


#: A worker sample's activity: the first of these marks found in its stack.
ACTIVITIES = (
    ("copy_part", "S3 UploadPartCopy (composition)"),
    ("botocore/response.py", "S3 reads (GET bodies)"),
    ("_get_body", "S3 reads (GET bodies)"),
    ("_send_part", "S3 part and object uploads"),
    ("_put_whole", "S3 part and object uploads"),
    ("_finish_multipart", "S3 part and object uploads"),
    ("botocore", "S3 SDK, other requests (state objects, leases, listings, deletes)"),
    ("_append_file", "local copy_file_range (composition)"),
    ("fill_from", "local copy_file_range (composition)"),
    ("_write_all", "local writes"),
    ("backends/local.py", "local file calls (open, link, stat, unlink)"),
)


def _worker_activity(frames: list[str]) -> str:
    text = ";".join(frames)
    found = next((label for mark, label in ACTIVITIES if mark in text), None)
    if found is not None:
        return found
    if frames and any(mark in frames[-1] for mark in ("anyio", "_worker", "Condition.wait")):
        return "C called from a worker (hashing, reads) or waiting"
    return "other"


# -- which engine the servers run ----------------------------------------------------------


@dataclass(frozen=True)
class Engine:
    """The ``filestore_fastapi`` a contender's server imports: the work tree's, or one
    exported from git into ``directory``, which the server then runs in (uvicorn's
    ``-m`` puts its working directory first on ``sys.path``, ahead of the work tree)."""

    text: str
    directory: Path | None = None


def engine(rev: str | None, scratch: Path) -> Engine:
    def git(*arguments: str) -> str:
        return subprocess.run(
            ["git", *arguments], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout

    if rev is None:
        dirty = git("status", "--porcelain", "--", "filestore_fastapi").strip()
        head = git("rev-parse", "--short", "HEAD").strip()
        return Engine(f"the work tree at {head}" + (" with uncommitted changes" if dirty else ""))
    commit = git("rev-parse", "--short", f"{rev}^{{commit}}").strip()
    directory = scratch / f"engine-{commit}"
    if not directory.exists():
        directory.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "archive", commit, "filestore_fastapi"], cwd=ROOT, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(directory)], input=archive, check=True)
    probe = subprocess.run(
        [sys.executable, "-c", "import filestore_fastapi; print(filestore_fastapi.__file__)"],
        cwd=directory,
        env={**os.environ, "PYTHONPATH": _engine_path(directory)},
        capture_output=True,
        text=True,
        check=True,
    )
    if not Path(probe.stdout.strip()).is_relative_to(directory):
        raise RuntimeError(f"{commit}: the server would import {probe.stdout.strip()}")
    subject = git("log", "-1", "--format=%s", commit).strip()
    return Engine(f"commit {commit} ({subject[:60]}...)", directory)


def _engine_path(directory: Path) -> str:
    """The ``PYTHONPATH`` that imports ``filestore_fastapi`` from ``directory``."""
    return f"{directory}{os.pathsep}{ROOT}"


@contextlib.contextmanager
def serve_on(contender: Contender, scratch: Path, env: dict[str, str], on: Engine) -> Iterator[Running]:
    """``measure.serve`` on ``on``'s ``filestore_fastapi``: the same uvicorn command line,
    run in the engine's directory."""
    engine_env = {} if on.directory is None else {"PYTHONPATH": _engine_path(on.directory)}
    with serve(contender, scratch, {**env, **engine_env}, cwd=on.directory) as running:
        yield running


# -- the case ----------------------------------------------------------------------------


def tus_case(
    bench: Bench,
    stack: ExitStack,
    nominal: int = GiB,
    profile: Path | None = None,
    engine_rev: str | None = None,
    copy_rev: str | None = None,
) -> CaseResult:
    import boto3

    from tests.emulators import MotoServer

    size = bench.size(nominal)
    path = bench.file(size)
    digest = _sha256(path)
    warm = bench.file(2 * CHUNK + 12_345)  # three PATCHes: the SDK's models, threads, first use
    warm_digest = _sha256(warm)
    scratch = bench.scratch / "tus-case"
    main_engine = engine(engine_rev, bench.scratch)
    engines = {"tus": main_engine.text}
    copy_engine: Engine | None = None
    if copy_rev is not None:
        copy_engine = engine(copy_rev, bench.scratch)
        engines["tus-copy"] = copy_engine.text

    def start(contender: Contender, env: dict[str, str], on: Engine, key: str | None = None) -> Running:
        if key is not None:
            contender = Contender(key, contender.label, contender.module, contender.short)
        for _ in range(3):
            # On a shared machine another process may take the free port first (and answer
            # the readiness probe): ours then exits at once.
            attempt = ExitStack()
            running = attempt.enter_context(serve_on(contender, scratch, env, on))
            time.sleep(0.5)
            if running.server.process.poll() is None:
                stack.enter_context(attempt)
                return running
            attempt.close()
        raise RuntimeError(f"{contender.key}: uvicorn could not bind a port")

    local_servers = {"multipart": start(LOCAL, {}, main_engine), "tus": start(TUS_LOCAL, {}, main_engine)}
    warm_up(local_servers["multipart"], bench.file(16 * 1024))
    if copy_engine is not None:
        local_servers["tus-copy"] = start(TUS_LOCAL, {}, copy_engine, "tus-local-copy")
    local = Store("local", local_servers)

    moto = stack.enter_context(MotoServer())
    client = boto3.client("s3", **moto.client_kwargs())
    bucket = "bench-tus"
    client.create_bucket(Bucket=bucket)
    s3_env = {
        "AWS_ACCESS_KEY_ID": moto.access_key_id,
        "AWS_SECRET_ACCESS_KEY": moto.secret_access_key,
        "AWS_DEFAULT_REGION": moto.region,
        "BENCH_S3_BUCKET": bucket,
        "BENCH_S3_ENDPOINT": moto.endpoint_url,
        "BENCH_S3_PART_SIZE": str(S3_PART_SIZE),
    }

    def empty_bucket() -> None:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=bucket, Key=item["Key"])
        for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])

    s3_servers = {
        "multipart": start(S3, s3_env, main_engine),
        "tus": start(TUS_S3, s3_env, main_engine),
    }
    warm_up(s3_servers["multipart"], bench.file(3 * S3_PART_SIZE))
    if copy_engine is not None:
        s3_servers["tus-copy"] = start(TUS_S3, s3_env, copy_engine, "tus-s3-copy")
    moto_process = getattr(moto, "_proc", None)
    s3 = Store("S3", s3_servers, empty_bucket, moto_process.pid if moto_process else None)
    stores = (local, s3)
    for store in stores:
        for kind, running in store.servers.items():
            if kind != "multipart":
                run_client(running.server.url + "/files", warm, warm_digest)
                store.after()
                running.clear()
    empty_bucket()

    samples: dict[tuple[str, str], list[Sample]] = {}
    for round_number in range(bench.runs):
        for store in stores:
            kinds = list(store.servers)
            turn = round_number % len(kinds)
            for kind in kinds[turn:] + kinds[:turn]:
                samples.setdefault((store.name, kind), []).append(measure(store, kind, path, size, digest))

    resumes = [resume_after_a_drop(store, path, size, digest, bench.scratch) for store in stores]
    profiles = []
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
        for store in stores:
            for kind in store.servers:
                if kind != "multipart" and (found := profile_tus(store, kind, path, size, digest, profile)):
                    profiles.append(found)
    return _result(stores, samples, resumes, profiles, size, engines)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(MiB):
            digest.update(block)
    return digest.hexdigest()


def _completion(patches: list[float]) -> tuple[float, float]:
    """(a steady PATCH's seconds, the last PATCH's seconds over it): the last one answers
    only once the upload is complete."""
    steady = median(patches[:-1]) if len(patches) > 1 else 0.0
    return steady, patches[-1] - steady


def _result(
    stores: tuple[Store, ...],
    samples: dict[tuple[str, str], list[Sample]],
    resumes: list[dict[str, Any]],
    profiles: list[dict[str, Any]],
    size: int,
    engines: dict[str, str],
) -> CaseResult:
    rows, per_round, targets, timing_rows = [], [], [], []
    ratios: dict[tuple[str, str], list[float]] = {}
    for store in stores:
        baseline = samples[(store.name, "multipart")]
        for kind in store.servers:
            taken = samples[(store.name, kind)]
            ratios[(store.name, kind)] = [t.seconds / m.seconds for m, t in zip(baseline, taken, strict=True)]
            mine = ratios[(store.name, kind)]
            wall = [s.seconds for s in taken]
            moto = [store.moto_cpu[id(s)] for s in taken if id(s) in store.moto_cpu]
            rows.append(
                [
                    store.name,
                    KINDS[kind],
                    f"{median(wall):.2f}",
                    f"{min(wall):.2f} / {max(wall):.2f}",
                    f"{size / MiB / median(wall):.0f}",
                    f"{median(mine):.2f}",
                    f"{min(mine):.2f} / {max(mine):.2f}" if kind != "multipart" else "",
                    mib(median(s.peak_rss for s in taken)),
                    mib(max(s.rss_growth for s in taken)),
                    f"{median(s.server_cpu for s in taken):.2f}",
                    f"{median(moto):.2f}" if moto else "-",
                    f"{median(s.client_cpu for s in taken):.2f}",
                    f"{median(s.write_bytes for s in taken) / size:.2f}",
                ]
            )
            if kind != "multipart":
                split = [_completion(store.patches[id(s)]) for s in taken]
                totals = [sum(store.patches[id(s)]) for s in taken]
                timing_rows.append(
                    [
                        store.name,
                        KINDS[kind],
                        f"{median(totals):.2f}",
                        f"{median(steady for steady, _ in split):.3f}",
                        f"{median(extra for _, extra in split):.2f}",
                        f"{median(e / t for (_, e), t in zip(split, totals, strict=True)):.0%}",
                    ]
                )
    columns = ["round"]
    for store in stores:
        for kind in store.servers:
            columns.append(f"{store.name} {kind} s")
            if kind != "multipart":
                columns.append(f"{store.name} {kind} / multipart")
    for number in range(len(samples[(stores[0].name, "multipart")])):
        row = [str(number + 1)]
        for store in stores:
            for kind in store.servers:
                row.append(f"{samples[(store.name, kind)][number].seconds:.2f}")
                if kind != "multipart":
                    row.append(f"{ratios[(store.name, kind)][number]:.2f}")
        per_round.append(row)
    for resume in resumes:
        targets.append(
            Target(
                f"{resume['store']}: a resume after a drop at 50% re-sends at most one chunk"
                f" ({size_label(resume['chunk'])})",
                f"{resume['resent']:,} bytes",
                0 <= resume["resent"] <= resume["chunk"],
            )
        )
    extra: dict[str, Any] = {
        "rounds": {
            "title": "Round by round (seconds, and tus / multipart in the same round)",
            "columns": columns,
            "rows": per_round,
        },
        "resume": {
            "title": "Resume after a drop at 50% (the connection reset mid-PATCH by a loopback proxy)",
            "columns": [
                "store",
                "cut after (body bytes)",
                "cut PATCH started at",
                "new Uploader resumed from",
                "of the cut PATCH: forwarded / kept",
                "bytes re-sent",
                "re-sent / chunk",
                "requests (by method)",
            ],
            "rows": [
                [
                    r["store"],
                    f"{r['cut_at']:,}",
                    f"{r['chunk_start']:,}",
                    f"{r['resumed_from']:,}",
                    f"{r['forwarded_of_cut_patch']:,} / {r['kept_of_cut_patch']:,}",
                    f"{r['resent']:,} ({r['resent'] / MiB:.2f} MiB)",
                    f"{r['resent'] / r['chunk']:.3f}",
                    ", ".join(f"{k} {v}" for k, v in sorted(r["requests"].items())),
                ]
                for r in resumes
            ],
        },
        "timing": {
            "title": "Where the tus wall time goes, from the client's PATCH timings (medians of the rounds)",
            "columns": [
                "store",
                "upload",
                "all PATCHes s",
                "a steady PATCH s",
                "last PATCH over a steady one s",
                "share of all PATCHes",
            ],
            "rows": timing_rows,
        },
    }
    for p in profiles:
        last = _completion(p["patches"])[1]
        extra[f"profile-{p['store']}-{p['kind']}"] = {
            "title": (
                f"py-spy of the {p['store']} server, {KINDS[p['kind']]}: one upload,"
                f" {p['seconds']:.1f} s under the profiler (last PATCH over a steady one: {last:.2f} s),"
                f" {p['samples']} samples at 100 Hz of every thread, idle ones dropped"
            ),
            "columns": ["thread: phase", "samples", "share"],
            "rows": [
                [phase, str(count), f"{count / p['samples']:.0%}"] for phase, count in p["phases"].items()
            ],
            "leaves": p["leaves"],
        }
    all_samples = [s for taken in samples.values() for s in taken]
    notes = [
        "x multipart is the median of the per-round ratios to the multipart upload of the same store",
        "(the contenders of a store run back to back, their order rotated every round); min / max of",
        "those ratios beside it. multipart: apps/local.py and apps/s3.py (part_size 8 MiB) with",
        "curl, timed by curl. tus: apps/tus_local.py and apps/tus_s3.py with tuspy in a process of",
        "its own, timed from the creation POST to the last PATCH's answer, which includes the",
        "completion. Every PATCH's bytes become one piece object in the store.",
        "moto CPU s is the moto server's, which does the S3 work for all of them on the same two cores.",
        "Engines (filestore_fastapi as the servers import it): "
        + "; ".join(f"{KINDS[kind]}: {text}" for kind, text in engines.items())
        + "; multipart: as tus.",
    ]
    return CaseResult(
        key="tus",
        title=(
            f"11. Resumable: one {size_label(size)} file through tus (tuspy, {size_label(CHUNK)} chunks)"
            " vs multipart"
        ),
        columns=[
            "store",
            "upload",
            "wall s",
            "min / max s",
            "MiB/s",
            "x multipart",
            "ratio min / max",
            "peak RSS MiB",
            "RSS growth MiB",
            "server CPU s",
            "moto CPU s",
            "client CPU s",
            "written / size",
        ],
        rows=rows,
        targets=targets,
        samples=all_samples,
        notes=notes,
        extra=extra,
    )


# -- standalone --------------------------------------------------------------------------


def where_the_time_goes(result: CaseResult) -> list[str]:
    """The "where the time goes" section, from the timing table and the profiles."""
    lines = ["## Where the time goes", ""]
    parts = [
        f"{store} {upload}: {extra} s of {total} s ({share}), a steady PATCH taking {steady} s"
        for store, upload, total, steady, extra, share in result.extra["timing"]["rows"]
    ]
    lines += [
        "The last PATCH is answered only once the upload is complete, so what it takes over a steady",
        "PATCH is the completion (joining the pieces into the final object, hashing unless the",
        "checksum was kept as the bytes came, deleting the pieces); the rest of the wall time is",
        "streaming the PATCHes into pieces. The completion took " + "; ".join(parts) + ".",
    ]
    by_store: dict[str, dict[str, list[str]]] = {}
    for row in result.extra["timing"]["rows"]:
        by_store.setdefault(row[0], {})[row[1]] = row
    joined = [
        f"{store}: {kinds[KINDS['tus-copy']][4]} s by copy, {kinds[KINDS['tus']][4]} s now"
        for store, kinds in by_store.items()
        if KINDS["tus-copy"] in kinds and KINDS["tus"] in kinds
    ]
    if joined:
        lines += [
            "",
            "Completion by copy (the older engine: every piece read back, hashed and written again) against",
            "the engine under test (pieces joined in the store when it can, the checksum kept as the bytes",
            "came), last PATCH over a steady one: " + "; ".join(joined) + ".",
        ]
    for key, extra in result.extra.items():
        if key.startswith("profile-"):
            lines += ["", f"### {extra['title']}", "", *_table(extra["columns"], extra["rows"]), ""]
            hottest = ", ".join(f"`{frame}` {count}" for frame, count in extra["leaves"][:6])
            lines.append(f"Hottest leaf frames (samples): {hottest}.")
    return lines


def _table(columns: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def write_markdown(result: CaseResult, output: Path, command: str, seconds: float, scratch: Path) -> Path:
    from .machine import describe

    machine = describe(scratch)
    tuspy = importlib_metadata.version("tuspy")
    machine.append(("tus client", f"tuspy {tuspy} (requests {importlib_metadata.version('requests')})"))
    lines = [
        "# Resumable uploads: tus vs multipart",
        "",
        f"Produced by `{command}` in {seconds / 60:.1f} minutes (see `benchmarks/README.md`).",
        "The machine is shared: read the ratios, taken within a round, before the absolute times.",
        "",
        "## Machine",
        "",
        *_table(["", ""], [list(pair) for pair in machine]),
        "",
        f"## {result.title}",
        "",
        *_table(result.columns, result.rows),
        "",
    ]
    lines += [
        f"- {'held' if t.held else '**missed**'}: {t.text} (measured {t.value})" for t in result.targets
    ]
    lines.append("")
    for key, extra in result.extra.items():
        if not key.startswith("profile-"):
            lines += [f"### {extra['title']}", "", *_table(extra["columns"], extra["rows"]), ""]
    lines += [*result.notes, "", *where_the_time_goes(result), ""]
    output.mkdir(parents=True, exist_ok=True)
    path = output / "tus.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str]) -> int:
    if argv[:1] == ["client"]:
        client_main(argv[1], argv[2], argv[3], int(argv[4]))
        return 0
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tus", description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024, help="file size in MiB (default 1024)")
    parser.add_argument("--runs", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--profile", action="store_true", help="one more tus upload a store under py-spy")
    parser.add_argument("--profile-dir", type=Path, help="keep py-spy's raw stacks there (implies --profile)")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks", help="where tus.md goes")
    parser.add_argument("--engine", help="a git revision: every server imports filestore_fastapi as of it")
    parser.add_argument(
        "--copy-engine",
        help="a git revision whose completion copies the pieces: one more tus contender on it",
    )
    args = parser.parse_args(argv)
    if shutil.which("curl") is None:
        print("the benchmarks need curl as their client: apt-get install curl", file=sys.stderr)
        return 2
    scratch = Path(tempfile.mkdtemp(prefix="filestore-bench-"))
    started = time.perf_counter()
    try:
        bench = Bench(scratch=scratch, runs=args.runs)
        with ExitStack() as stack:
            profile = args.profile_dir or (scratch / "profiles" if args.profile else None)
            result = tus_case(bench, stack, args.size_mib * MiB, profile, args.engine, args.copy_engine)
        paths = (["--profile-dir"], ["--output"])
        shown = ["DIR" if argv[i - 1 : i] in paths else a for i, a in enumerate(argv)]
        command = "python -m benchmarks.tus " + " ".join(shown)  # no path of this machine
        path = write_markdown(result, args.output, command.strip(), time.perf_counter() - started, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
