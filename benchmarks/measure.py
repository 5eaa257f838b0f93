"""Serve a contender under real uvicorn, upload to it with curl, and read what it cost.

The client is curl (C, one process per upload or one ``--parallel`` process for many):
it uses a fraction of a core even at the bare-ASGI limit, which the results show as
client CPU seconds next to the server's, so the server is what is measured.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.server import Server, run_uvicorn

MiB = 1024 * 1024
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Contender:
    """One way of taking an upload; ``module`` is a module of ``benchmarks.apps``."""

    key: str
    label: str
    module: str
    short: str


LIMIT = Contender("limit", "(a) bare ASGI, raw body to file", "limit", "(a) limit")
UPLOADFILE = Contender("uploadfile", "(b) UploadFile + copyfileobj", "uploadfile", "(b) UploadFile")
FILESTORE = Contender("filestore", "(c) filestore 2.0.0 LocalEngine", "pypi_filestore", "(c) filestore")
LOCAL = Contender("local", "(d) filestore-fastapi LocalStorage", "local", "(d) LocalStorage")
LOCAL_PLAIN = Contender("local-plain", "(d) LocalStorage, checksum=None", "local_plain", "(d) checksum=None")
RECIPE = Contender("recipe", "(e) recipe: streaming-form-data", "recipe", "(e) recipe")
MEMORY = Contender("memory", "filestore-fastapi MemoryStorage", "memory", "MemoryStorage")
S3 = Contender("s3", "filestore-fastapi S3Storage", "s3", "S3Storage")
BOTO3 = Contender("boto3", "boto3 upload_fileobj from disk", "", "boto3")
ALL = (LIMIT, UPLOADFILE, FILESTORE, LOCAL, LOCAL_PLAIN, RECIPE, MEMORY, S3, BOTO3)


@dataclass(frozen=True)
class Counters:
    """A process's cumulative I/O and CPU, from ``/proc/<pid>/io`` and ``/proc/<pid>/stat``."""

    write_bytes: int
    rchar: int
    cpu_seconds: float
    loop_cpu_seconds: float
    """The main thread's alone: uvicorn's event loop, the critical path of a streamed upload."""

    @classmethod
    def of(cls, pid: int) -> Counters:
        io: dict[str, int] = {}
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            label, _, value = line.partition(":")
            io[label] = int(value)
        return cls(
            write_bytes=io["write_bytes"],
            rchar=io["rchar"],
            cpu_seconds=_cpu_seconds(Path(f"/proc/{pid}/stat")),
            loop_cpu_seconds=_cpu_seconds(Path(f"/proc/{pid}/task/{pid}/stat")),
        )


def _cpu_seconds(stat_file: Path) -> float:
    # Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    fields = stat_file.read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass
class Sample:
    """One measured request (or one batch of requests, for the small-files case)."""

    contender: str
    size: int
    status: int
    seconds: float
    rss_before: int
    peak_rss: int
    write_bytes: int
    read_bytes: int
    server_cpu: float
    loop_cpu: float
    client_cpu: float
    leftovers: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    @property
    def rss_growth(self) -> int:
        return self.peak_rss - self.rss_before


@dataclass(frozen=True)
class CurlResult:
    statuses: list[int]
    latencies: list[float]
    seconds: float
    client_cpu: float


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_curl(arguments: Sequence[str]) -> CurlResult:
    """Run curl, whose ``-w`` prints ``<status> <seconds>`` per transfer; CPU from its rusage.

    The uvicorn servers are children too, but a child's CPU reaches ``RUSAGE_CHILDREN``
    only once it is reaped, so the difference is curl's alone.
    """
    command = ["curl", "--silent", "--noproxy", "*", *arguments]
    cpu_before, started = _children_cpu(), time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    client_cpu = _children_cpu() - cpu_before
    statuses: list[int] = []
    latencies: list[float] = []
    for line in done.stdout.split():
        status, _, latency = line.partition(",")
        statuses.append(int(status))
        latencies.append(float(latency))
    if not statuses:
        raise RuntimeError(f"curl printed nothing (exit {done.returncode}): {done.stderr.strip()}")
    return CurlResult(statuses, latencies, seconds, client_cpu)


def form_argument(path: Path, filename: str) -> str:
    return f"file=@{path};type=application/octet-stream;filename={filename}"


def curl_post(url: str, files: Sequence[tuple[Path, str]]) -> CurlResult:
    """One multipart POST of ``files`` (path, filename) in field ``file``.

    ``Expect:`` is blanked so curl sends the body at once instead of waiting for a
    ``100 Continue``, as browsers do.
    """
    arguments = [
        "--output",
        "/dev/null",
        "--header",
        "Expect:",
        "--write-out",
        "%{http_code},%{time_total}\n",
    ]
    for path, filename in files:
        arguments += ["--form", form_argument(path, filename)]
    return run_curl([*arguments, url])


def curl_post_many(url: str, path: Path, count: int, concurrency: int, config: Path) -> CurlResult:
    """``count`` POSTs of ``path``, each under its own file name, ``concurrency`` at a time."""
    blocks = []
    for number in range(count):
        blocks.append(
            f'url = "{url}"\noutput = "/dev/null"\nheader = "Expect:"\n'
            f'form = "{form_argument(path, f"small-{number:05d}.bin")}"\n'
            'write-out = "%{http_code},%{time_total}\\n"\n'
        )
    config.write_text("next\n".join(blocks))
    return run_curl(
        ["--parallel", "--parallel-immediate", "--parallel-max", str(concurrency), "--config", str(config)]
    )


@dataclass
class Running:
    """A contender's live server, with the directories it writes to."""

    contender: Contender
    server: Server
    destination: Path
    tmpdir: Path

    def leftovers(self) -> list[str]:
        """Everything the server left in its destination and its temp directory."""
        found = [p.relative_to(self.destination).as_posix() for p in self.destination.rglob("*")]
        return found + [f"TMPDIR/{p.name}" for p in self.tmpdir.iterdir()]

    def clear(self) -> None:
        for directory in (self.destination, self.tmpdir):
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True)

    def measure(self, request: Callable[[], CurlResult], size: int, *, keep_files: bool = False) -> Sample:
        """Run ``request`` against this server and read its RSS peak, I/O and CPU around it."""
        pid = self.server.pid
        self.server.reset_peak_rss()
        rss_before = self.server.rss()
        before = Counters.of(pid)
        result = request()
        after = Counters.of(pid)
        sample = Sample(
            contender=self.contender.key,
            size=size,
            status=max(result.statuses),
            seconds=result.seconds if len(result.latencies) > 1 else result.latencies[0],
            rss_before=rss_before,
            peak_rss=self.server.peak_rss(),
            write_bytes=after.write_bytes - before.write_bytes,
            read_bytes=after.rchar - before.rchar,
            server_cpu=after.cpu_seconds - before.cpu_seconds,
            loop_cpu=after.loop_cpu_seconds - before.loop_cpu_seconds,
            client_cpu=result.client_cpu,
            leftovers=self.leftovers(),
            latencies=result.latencies,
        )
        if not keep_files:
            self.clear()
        return sample


@contextmanager
def serve(
    contender: Contender, scratch: Path, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> Iterator[Running]:
    """Start ``contender`` under uvicorn (httptools) with its own destination and TMPDIR
    (in ``cwd``: another checkout's ``filestore_fastapi``, with its ``PYTHONPATH`` in ``env``)."""
    destination = scratch / "dest" / contender.key
    tmpdir = scratch / "tmp" / contender.key
    for directory in (destination, tmpdir):
        directory.mkdir(parents=True, exist_ok=True)
    process_env = {"BENCH_DESTINATION": str(destination), "TMPDIR": str(tmpdir), **(env or {})}
    with run_uvicorn(f"benchmarks.apps.{contender.module}:app", env=process_env, cwd=cwd) as server:
        running = Running(contender, server, destination, tmpdir)
        running.clear()
        yield running
