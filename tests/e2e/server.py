"""Run an app under a real uvicorn on a free loopback port, and read its process figures."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.httpclient import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _proc_field(pid: int, name: str, key: str) -> int:
    """A number from /proc/<pid>/<name>: ``VmHWM`` (kB) in status, ``write_bytes`` in io."""
    for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
        label, _, value = line.partition(":")
        if label == key:
            return int(value.split()[0])
    raise KeyError(key)


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    worker: int | None = None
    """The process serving requests when it is not ``process`` itself (granian's worker)."""

    @property
    def pid(self) -> int:
        return self.worker or self.process.pid

    def rss(self) -> int:
        """Resident set size now, in bytes."""
        return _proc_field(self.pid, "status", "VmRSS") * 1024

    def peak_rss(self) -> int:
        """Peak resident set size since start (VmHWM), in bytes."""
        return _proc_field(self.pid, "status", "VmHWM") * 1024

    def reset_peak_rss(self) -> None:
        """Make VmHWM start again from the current RSS (Linux: write 5 to clear_refs)."""
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")

    def written_bytes(self) -> int:
        """Bytes this process caused to be written to storage (``write_bytes`` in /proc/<pid>/io)."""
        return _proc_field(self.pid, "io", "write_bytes")

    def read_bytes_from_socket(self) -> int:
        """Bytes read by the process through read()-like calls (``rchar``), sockets included."""
        return _proc_field(self.pid, "io", "rchar")


SERVERS = ("uvicorn", "hypercorn", "granian")


def server_command(server: str, app: str, port: int, workers: int) -> list[str]:
    """The command line that serves ``app`` on 127.0.0.1:``port`` with this ASGI server."""
    if server == "uvicorn":
        command = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
        return [*command, "--http", "httptools", "--log-level", "warning", "--workers", str(workers)]
    if server == "hypercorn":
        command = [sys.executable, "-m", "hypercorn", app, "--bind", f"127.0.0.1:{port}"]
        # --workers 0 serves in this process, as uvicorn does with one worker.
        return [*command, "--log-level", "warning", "--workers", str(0 if workers == 1 else workers)]
    if server == "granian":
        command = [sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1"]
        return [*command, "--port", str(port), "--workers", str(workers), "--log-level", "warning", app]
    raise ValueError(f"unknown ASGI server {server!r}")


@contextmanager
def run_uvicorn(
    app: str,
    env: Mapping[str, str] | None = None,
    *,
    workers: int = 1,
    timeout: float = 30.0,
    server: str = "uvicorn",
    port: int | None = None,
    cwd: Path | None = None,
) -> Iterator[Server]:
    """Start ``app`` (``module:attribute``) under ``server`` (uvicorn by default) on
    127.0.0.1 (on ``port``, else a free one), in ``cwd`` (the project's root by default), and
    stop it afterwards. ``env``
    is added to this process's environment (a ``PYTHONPATH`` there replaces the project's)."""
    port = port or free_port()
    command = server_command(server, app, port, workers)
    process_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    process = subprocess.Popen(command, env=process_env, cwd=cwd or ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{server} exited with {process.returncode} before serving {app}")
            try:
                httpx.get(url + "/", timeout=1.0)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{server} did not answer on {url} within {timeout}s") from None
                time.sleep(0.1)
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        worker = int(children[0]) if server == "granian" and workers == 1 and children else None
        yield Server(url=url, process=process, worker=worker)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def multipart_stream(
    field: str,
    filename: str,
    size: int,
    *,
    content_type: str = "application/octet-stream",
    block: int = 1 << 20,
) -> tuple[str, int, Iterator[bytes], str]:
    """A multipart body of one file of ``size`` pseudo-random bytes, generated on the fly.

    Returns (content type header, content length, body iterator, sha256 of the file).
    The bytes repeat a fixed random block, so the client costs no memory and little CPU.
    """
    import hashlib

    boundary = "filestore-e2e-boundary-7d1f9c"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    pattern = os.urandom(block)
    digest = hashlib.sha256()
    full, rest = divmod(size, block)
    for _ in range(full):
        digest.update(pattern)
    digest.update(pattern[:rest])

    def body() -> Iterator[bytes]:
        yield head
        for _ in range(full):
            yield pattern
        if rest:
            yield pattern[:rest]
        yield tail

    return (
        f"multipart/form-data; boundary={boundary}",
        len(head) + size + len(tail),
        body(),
        digest.hexdigest(),
    )


def post_file(url: str, size: int, filename: str, *, timeout: float = 600.0) -> tuple[httpx.Response, str]:
    """POST a generated file of ``size`` bytes as the multipart field ``file``.

    Returns the response and the sha256 of the file sent.
    """
    content_type, length, body, digest = multipart_stream("file", filename, size)
    headers = {"content-type": content_type, "content-length": str(length)}
    return httpx.post(url, content=body, headers=headers, timeout=timeout), digest


@dataclass
class Upload:
    """One measured upload: the answer and what it cost the server process."""

    response: httpx.Response
    sha256: str
    seconds: float
    peak_rss_growth: int
    written: int


def measure_upload(server: Server, route: str, size: int, filename: str) -> Upload:
    """Upload a generated file to ``route`` and read the server's peak RSS growth, wall time
    and bytes written to storage while it did."""
    server.reset_peak_rss()
    rss_before = server.rss()
    written_before = server.written_bytes()
    started = time.perf_counter()
    response, digest = post_file(f"{server.url}{route}", size, filename)
    seconds = time.perf_counter() - started
    return Upload(
        response=response,
        sha256=digest,
        seconds=seconds,
        peak_rss_growth=server.peak_rss() - rss_before,
        written=server.written_bytes() - written_before,
    )


def write_file_of(size: int, path: Path) -> None:
    """A file of ``size`` bytes like ``multipart_stream``'s, for an SDK to upload from disk."""
    _, _, body, _ = multipart_stream("file", "plain.bin", size)
    pieces = iter(body)
    next(pieces)  # the part's headers
    with path.open("wb") as out:
        previous = next(pieces)
        for piece in pieces:  # the last piece is the closing boundary
            out.write(previous)
            previous = piece
