"""The six cases of issue 4. Each runs its contenders alternately, ``runs`` rounds, and
returns its rows, its targets and the raw samples.

Ratios are taken per round (both figures from the same minute of a shared machine)
and then their median, which drifts less than a ratio of two medians.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .measure import (
    BOTO3,
    FILESTORE,
    LIMIT,
    LOCAL,
    LOCAL_PLAIN,
    MEMORY,
    RECIPE,
    S3,
    UPLOADFILE,
    Contender,
    CurlResult,
    MiB,
    Running,
    Sample,
    curl_post,
    curl_post_many,
    serve,
)

GiB = 1024 * MiB
LOCAL_CONTENDERS = (LIMIT, UPLOADFILE, FILESTORE, LOCAL)
S3_PART_SIZE = 8 * MiB


@dataclass(frozen=True)
class Target:
    text: str
    value: str
    held: bool


@dataclass
class CaseResult:
    key: str
    title: str
    columns: list[str]
    rows: list[list[str]]
    targets: list[Target] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Bench:
    """What every case shares: scratch space, round count, generated files, live servers."""

    scratch: Path
    runs: int
    scale: int = 1
    """Sizes are divided by this (``--quick``)."""
    servers: dict[str, Running] = field(default_factory=dict)
    _files: dict[int, Path] = field(default_factory=dict)

    def size(self, nominal: int) -> int:
        return max(nominal // self.scale, 16 * 1024)

    def file(self, size: int) -> Path:
        """A file of ``size`` random bytes (a repeated 1 MiB block), made once."""
        if size not in self._files:
            path = self.scratch / "data" / f"{size}.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            block = os.urandom(min(size, MiB))
            with path.open("wb") as out:
                for start in range(0, size, len(block)):
                    out.write(block[: size - start])
            self._files[size] = path
        return self._files[size]

    def start(self, stack: ExitStack, contenders: Sequence[Contender]) -> None:
        for contender in contenders:
            if contender.key not in self.servers:
                running = stack.enter_context(serve(contender, self.scratch))
                warm_up(running, self.file(16 * 1024))
                self.servers[contender.key] = running


def warm_up(running: Running, path: Path) -> None:
    """One small upload first, so lazy imports and first-use set-up are not measured."""
    result = curl_post(running.server.url + "/one", [(path, "warm-up.bin")])
    if result.statuses != [200]:
        raise RuntimeError(f"{running.contender.key} failed its warm-up upload: {result.statuses}")
    running.clear()


def mib(value: float) -> str:
    return f"{value / MiB:.1f}"


def median(values: Iterator[float] | Sequence[float]) -> float:
    return statistics.median(list(values))


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def size_label(size: int) -> str:
    return f"{size // GiB} GiB" if size >= GiB and size % GiB == 0 else f"{size / MiB:g} MiB"


def check(text: str, value: float, bound: float, *, fmt: str = "{:.2f}", at_most: bool = True) -> Target:
    held = value <= bound if at_most else value >= bound
    return Target(text, fmt.format(value), held)


def by(samples: Sequence[Sample], contender: str, size: int | None = None) -> list[Sample]:
    return [s for s in samples if s.contender == contender and (size is None or s.size == size)]


def round_ratios(samples: Sequence[Sample], contender: str, baseline: str, size: int) -> list[float]:
    """``contender``'s wall time over ``baseline``'s, round by round."""
    mine, theirs = by(samples, contender, size), by(samples, baseline, size)
    return [a.seconds / b.seconds for a, b in zip(mine, theirs, strict=True)]


def one_round(
    bench: Bench, contenders: Sequence[Contender], measure: Callable[[Running], Sample]
) -> list[Sample]:
    """Every contender once, in turn."""
    samples = []
    for contender in contenders:
        sample = measure(bench.servers[contender.key])
        if sample.status >= 400 and sample.status != 413:
            raise RuntimeError(f"{contender.key} answered {sample.status}")
        samples.append(sample)
    return samples


def rounds(
    bench: Bench, contenders: Sequence[Contender], measure: Callable[[Running], Sample]
) -> list[Sample]:
    return [sample for _ in range(bench.runs) for sample in one_round(bench, contenders, measure)]


def upload_one(path: Path, size: int, route: str = "/one") -> Callable[[Running], Sample]:
    def measure(running: Running) -> Sample:
        return running.measure(lambda: curl_post(running.server.url + route, [(path, "upload.bin")]), size)

    return measure


def spread(values: Sequence[float], fmt: str = "{:.2f}") -> str:
    """``min / median / max`` of ``values``."""
    return " / ".join(fmt.format(v) for v in (min(values), median(values), max(values)))


def rotated(contenders: Sequence[Contender], turn: int) -> list[Contender]:
    """``contenders`` starting at the ``turn``-th: no contender always runs first (or last)."""
    start = turn % len(contenders)
    return [*contenders[start:], *contenders[:start]]


def upload_synced(path: Path, size: int) -> Callable[[Running], Sample]:
    """``upload_one``, after ``os.sync()``: no contender pays for the previous one's dirty pages."""
    upload = upload_one(path, size)

    def measure(running: Running) -> Sample:
        os.sync()
        return upload(running)

    return measure


LARGE_CONTENDERS = (LIMIT, RECIPE, LOCAL, LOCAL_PLAIN)
SPOOLING_CONTENDERS = (UPLOADFILE, FILESTORE)


def large_file(bench: Bench, stack: ExitStack) -> CaseResult:
    """Case 1: one file to local disk, 1 GiB and 4 GiB, against the limit and the recipe.

    Rounds rotate the contenders' order and ``os.sync()`` before every upload. (b) and (c)
    run at 1 GiB only: they write every byte twice at any size.
    """
    bench.start(stack, (*LARGE_CONTENDERS, *SPOOLING_CONTENDERS))
    load_before = os.getloadavg()[0]
    large, huge = bench.size(GiB), bench.size(4 * GiB)
    plan: list[tuple[int, tuple[Contender, ...]]] = [
        (large, (*LARGE_CONTENDERS, *SPOOLING_CONTENDERS)),
        (huge, LARGE_CONTENDERS),
    ]
    samples: list[Sample] = []
    for turn in range(bench.runs):
        for size, contenders in plan:
            measure = upload_synced(bench.file(size), size)
            for contender in rotated(contenders, turn):
                sample = measure(bench.servers[contender.key])
                if sample.status != 200:
                    raise RuntimeError(f"{contender.key} answered {sample.status}")
                samples.append(sample)
    load_after = os.getloadavg()[0]
    rows = []
    for size, contenders in plan:
        limit_cpu = by(samples, "limit", size)
        for contender in contenders:
            mine = by(samples, contender.key, size)
            wall = median(s.seconds for s in mine)
            ratios = round_ratios(samples, contender.key, "limit", size)
            cpu_ratios = [a.server_cpu / b.server_cpu for a, b in zip(mine, limit_cpu, strict=True)]
            rows.append(
                [
                    size_label(size),
                    contender.label,
                    spread([s.seconds for s in mine]),
                    f"{wall / (size / GiB):.2f}",
                    f"{size / MiB / wall:.0f}",
                    spread(ratios),
                    mib(median(s.peak_rss for s in mine)),
                    mib(max(s.rss_growth for s in mine)),
                    f"{median(s.write_bytes for s in mine) / size:.2f}",
                    f"{median(s.server_cpu for s in mine):.2f}",
                    f"{median(cpu_ratios):.2f}",
                    f"{median(s.loop_cpu for s in mine):.2f}",
                    f"{median(s.client_cpu for s in mine):.2f}",
                ]
            )
    targets = []
    for size in (large, huge):
        label = size_label(size)
        targets += [
            check(
                f"{label}: wall time <= 1.25 x (a) (default config, sha256)",
                median(round_ratios(samples, "local", "limit", size)),
                1.25,
            ),
            check(
                f"{label}: faster than (e) the streaming-form-data recipe",
                median(round_ratios(samples, "local", "recipe", size)),
                1.0,
                fmt="{:.2f} x (e)",
            ),
            check(
                f"{label}: checksum=None wall time <= 1.10 x (a)",
                median(round_ratios(samples, "local-plain", "limit", size)),
                1.10,
            ),
            check(
                f"{label}: bytes written 1.00 x file size",
                median(s.write_bytes for s in by(samples, "local", size)) / size,
                1.005,
            ),
        ]
    limit_growth = max(s.rss_growth for s in by(samples, "limit"))
    targets.append(
        check(
            "RSS growth <= 16 MiB over the limit's own, at either size",
            (max(s.rss_growth for s in by(samples, "local")) - limit_growth) / MiB,
            16,
            fmt="{:.1f} MiB over",
        )
    )
    peaks = {size: median(s.peak_rss for s in by(samples, "local", size)) for size, _ in plan}
    targets.append(
        check(
            f"peak RSS flat: {size_label(huge)} within 4 MiB of {size_label(large)}",
            abs(peaks[huge] - peaks[large]) / MiB,
            4,
            fmt="{:.1f} MiB apart",
        )
    )
    return CaseResult(
        key="case1",
        title=f"1. One file to local disk ({', '.join(size_label(s) for s, _ in plan)})",
        columns=[
            "size",
            "contender",
            "wall s min / med / max",
            "s / GiB",
            "MiB/s",
            "x (a) min / med / max",
            "peak RSS MiB",
            "RSS growth MiB",
            "written / size",
            "server CPU s",
            "CPU x (a)",
            "loop CPU s",
            "client CPU s",
        ],
        rows=rows,
        targets=targets,
        samples=samples,
        notes=[
            f"Load average (1 min) of the machine: {load_before:.1f} when the case began, {load_after:.1f}"
            " when it ended (2 cores): above 2, other work competed for the cores and the wall times",
            "swing with it; `CPU x (a)` (server CPU over the limit's, per round) moves less.",
            f"{bench.runs} rounds; each round rotates the contenders' order and runs `os.sync()` before",
            "every upload. `x (a)` is the ratio to the limit within a round; the targets use its median.",
            f"(b) and (c) ran at {size_label(large)} only: they write every byte twice at any size.",
            "(a) writes each ASGI message as it arrives, from the loop (faster here than 1 MiB batches);",
            "(e) is request.stream() into streaming_form_data's Cython parser with a FileTarget.",
            "RSS growth is the largest of the rounds; peak RSS is the median.",
            "Loop CPU is the server's main thread (uvicorn's event loop), the critical path of a stream.",
        ],
    )


def time_to_reject(bench: Bench, stack: ExitStack) -> CaseResult:
    """Case 2: the 1 GiB file against ``max_file_size`` = 1 MiB."""
    bench.start(stack, LOCAL_CONTENDERS)
    size = bench.size(GiB)
    samples = rounds(bench, LOCAL_CONTENDERS, upload_one(bench.file(size), size, "/limited"))
    rows = []
    for contender in LOCAL_CONTENDERS:
        mine = by(samples, contender.key)
        rows.append(
            [
                contender.label,
                "/".join(sorted({str(s.status) for s in mine})),
                f"{median(s.seconds for s in mine) * 1000:.1f}",
                f"{median(s.read_bytes for s in mine) / MiB:.2f}",
                mib(median(s.write_bytes for s in mine)),
                str(max(len(s.leftovers) for s in mine)),
            ]
        )
    local = by(samples, "local")
    chunk = MiB  # Config().chunk_size
    return CaseResult(
        key="case2",
        title=f"2. Time-to-reject: {size_label(size)} against max_file_size = 1 MiB",
        columns=["contender", "status", "latency ms", "read by server MiB", "written MiB", "files left"],
        rows=rows,
        targets=[
            Target(
                "answers 413",
                "/".join(sorted({str(s.status) for s in local})),
                all(s.status == 413 for s in local),
            ),
            check(
                "server read <= 2 MiB + one chunk (1 MiB)",
                max(s.read_bytes for s in local) / MiB,
                (2 * MiB + chunk) / MiB,
                fmt="{:.2f} MiB",
            ),
            Target(
                "nothing left on disk",
                str(sum(len(s.leftovers) for s in local)),
                not any(s.leftovers for s in local),
            ),
        ],
        samples=samples,
        notes=[
            "'read by server' is rchar of the server process: socket reads (uvloop read()) plus file reads."
        ],
    )


def small_files(bench: Bench, stack: ExitStack) -> CaseResult:
    """Case 3: 2,000 uploads of 16 KiB at concurrency 16."""
    bench.start(stack, LOCAL_CONTENDERS)
    size, count, concurrency = 16 * 1024, max(2000 // bench.scale, 100), 16
    path = bench.file(size)
    config = bench.scratch / "curl-many.cfg"

    def measure(running: Running) -> Sample:
        def request() -> CurlResult:
            return curl_post_many(running.server.url + "/one", path, count, concurrency, config)

        return running.measure(request, size)

    load_before = os.getloadavg()[0]
    samples = [
        sample
        for turn in range(bench.runs)
        for sample in one_round(bench, rotated(LOCAL_CONTENDERS, turn), measure)
    ]
    load_after = os.getloadavg()[0]
    rows = []
    rate: dict[str, float] = {}
    for contender in LOCAL_CONTENDERS:
        mine = by(samples, contender.key)
        if any(len(s.latencies) != count or s.status != 200 for s in mine):
            raise RuntimeError(f"{contender.key}: not every small upload succeeded")
        rate[contender.key] = median(count / s.seconds for s in mine)
        rows.append(
            [
                contender.label,
                f"{rate[contender.key]:.0f}",
                f"{median(percentile(s.latencies, 0.5) for s in mine) * 1000:.1f}",
                f"{median(percentile(s.latencies, 0.99) for s in mine) * 1000:.1f}",
                f"{median(s.server_cpu for s in mine) / count * 1e6:.0f}",
                f"{median(s.client_cpu for s in mine) / count * 1e6:.0f}",
            ]
        )
    return CaseResult(
        key="case3",
        title=f"3. Many small files: {count} uploads of 16 KiB, concurrency {concurrency}",
        columns=["contender", "requests/s", "p50 ms", "p99 ms", "server CPU us/req", "client CPU us/req"],
        rows=rows,
        targets=[
            check(
                "requests/s >= 1.5 x (b)",
                rate["local"] / rate["uploadfile"],
                1.5,
                fmt="{:.2f} x (b)",
                at_most=False,
            ),
            check(
                "requests/s >= 1.5 x (c)",
                rate["local"] / rate["filestore"],
                1.5,
                fmt="{:.2f} x (c)",
                at_most=False,
            ),
        ],
        samples=samples,
        notes=[
            "One curl --parallel process sends all uploads over up to 16 kept-alive connections.",
            f"Load average (1 min): {load_before:.1f} when the case began, {load_after:.1f} when it ended.",
        ],
    )


def many_files(bench: Bench, stack: ExitStack) -> CaseResult:
    """Case 4: ten 10 MiB files in one request."""
    bench.start(stack, LOCAL_CONTENDERS)
    each, count = bench.size(10 * MiB), 10
    path = bench.file(each)
    files = [(path, f"part-{n}.bin") for n in range(count)]

    def measure(running: Running) -> Sample:
        return running.measure(lambda: curl_post(running.server.url + "/many", files), each * count)

    samples = rounds(bench, LOCAL_CONTENDERS, measure)
    total = each * count
    rows = []
    for contender in LOCAL_CONTENDERS:
        mine = by(samples, contender.key)
        wall = median(s.seconds for s in mine)
        rows.append(
            [
                contender.label,
                f"{wall:.3f}",
                f"{total / MiB / wall:.0f}",
                f"{median(round_ratios(samples, contender.key, 'limit', total)):.2f}",
                mib(median(s.peak_rss for s in mine)),
                f"{median(s.write_bytes for s in mine) / total:.2f}",
            ]
        )
    return CaseResult(
        key="case4",
        title=f"4. Ten {size_label(each)} files in one request (count=10)",
        columns=["contender", "wall s", "MiB/s", "x (a)", "peak RSS MiB", "written / size"],
        rows=rows,
        samples=samples,
    )


def memory_file(bench: Bench, stack: ExitStack) -> CaseResult:
    """Case 5: MemoryStorage, one 100 MiB file."""
    bench.start(stack, (MEMORY,))
    size = bench.size(100 * MiB)
    samples = rounds(bench, (MEMORY,), upload_one(bench.file(size), size))
    growth = max(s.rss_growth for s in samples)
    wall = median(s.seconds for s in samples)
    return CaseResult(
        key="case5",
        title=f"5. MemoryStorage, one {size_label(size)} file",
        columns=[
            "contender",
            "wall s",
            "MiB/s",
            "RSS before MiB",
            "peak RSS MiB",
            "RSS growth MiB",
            "growth / size",
        ],
        rows=[
            [
                MEMORY.label,
                f"{wall:.2f}",
                f"{size / MiB / wall:.0f}",
                mib(median(s.rss_before for s in samples)),
                mib(median(s.peak_rss for s in samples)),
                mib(growth),
                f"{growth / size:.2f}",
            ]
        ],
        targets=[check("peak RSS growth <= 1.3 x file size", growth / size, 1.3)],
        samples=samples,
        notes=[
            "RSS growth is the largest of the rounds; 'RSS before' rising from round to round means",
            "the previous uploads' bytes were still alive when the next one started.",
        ],
    )


def s3_file(bench: Bench, stack: ExitStack) -> CaseResult:
    """Case 6: S3Storage to moto server vs boto3 ``upload_fileobj`` of the same file."""
    import boto3

    from tests.emulators import MotoServer

    moto = stack.enter_context(MotoServer())
    client = boto3.client("s3", **moto.client_kwargs())
    bucket = "bench"
    client.create_bucket(Bucket=bucket)
    credentials = {
        "AWS_ACCESS_KEY_ID": moto.access_key_id,
        "AWS_SECRET_ACCESS_KEY": moto.secret_access_key,
        "AWS_DEFAULT_REGION": moto.region,
    }
    env = {
        **credentials,
        "BENCH_S3_BUCKET": bucket,
        "BENCH_S3_ENDPOINT": moto.endpoint_url,
        "BENCH_S3_PART_SIZE": str(S3_PART_SIZE),
    }
    running = stack.enter_context(serve(S3, bench.scratch, env))
    # Three parts, not a small file: boto3 loads each operation's model (megabytes of JSON)
    # on first use, and that is start-up cost, not the memory a file costs.
    warm_up(running, bench.file(3 * S3_PART_SIZE))
    size = bench.size(512 * MiB)
    path = bench.file(size)

    def empty_bucket() -> None:
        for item in client.list_objects_v2(Bucket=bucket).get("Contents", []):
            client.delete_object(Bucket=bucket, Key=item["Key"])

    def baseline() -> Sample:
        arguments = [str(path), moto.endpoint_url, bucket]
        return boto3_sample(BOTO3.key, size, arguments, credentials)

    empty_bucket()
    samples = []
    for _ in range(bench.runs):
        samples.append(
            running.measure(lambda: curl_post(running.server.url + "/one", [(path, "s3.bin")]), size)
        )
        empty_bucket()
        samples.append(baseline())
        empty_bucket()
    rows = []
    for contender in (S3, BOTO3):
        mine = by(samples, contender.key)
        wall = median(s.seconds for s in mine)
        rows.append(
            [
                contender.label,
                f"{wall:.2f}",
                f"{size / MiB / wall:.0f}",
                f"{median(round_ratios(samples, contender.key, 'boto3', size)):.2f}",
                mib(median(s.peak_rss for s in mine)),
                mib(max(s.rss_growth for s in mine)),
                f"{median(s.server_cpu for s in mine):.2f}",
            ]
        )
    growth = max(s.rss_growth for s in by(samples, "s3"))
    return CaseResult(
        key="case6",
        title=f"6. S3Storage to moto, one {size_label(size)} file (part_size {size_label(S3_PART_SIZE)})",
        columns=[
            "contender",
            "wall s",
            "MiB/s",
            "x boto3",
            "peak RSS MiB",
            "RSS growth MiB",
            "process CPU s",
        ],
        rows=rows,
        targets=[check("RSS growth <= 3 x part size", growth / S3_PART_SIZE, 3.0, fmt="{:.2f} x part size")],
        samples=samples,
        notes=[
            "RSS growth is the largest of the rounds.",
            "boto3 runs in a process of its own (upload_fileobj, 8 MiB parts, 10 threads);",
            "moto server shares the two cores with both, so its speed bounds the two alike.",
        ],
    )


def boto3_sample(contender: str, size: int, arguments: list[str], credentials: dict[str, str]) -> Sample:
    """Run ``benchmarks.s3_baseline`` with ``arguments`` in a process of its own: its figures."""
    command = [sys.executable, "-m", "benchmarks.s3_baseline", *arguments]
    done = subprocess.run(
        command, capture_output=True, text=True, check=True, env={**os.environ, **credentials}
    )
    figures = json.loads(done.stdout)
    return Sample(
        contender=contender,
        size=size,
        status=200,
        seconds=figures["seconds"],
        rss_before=figures["rss_before"],
        peak_rss=figures["peak_rss"],
        write_bytes=0,
        read_bytes=0,
        server_cpu=figures["cpu_seconds"],
        loop_cpu=figures["cpu_seconds"],
        client_cpu=0.0,
    )


def checksum_cpu(bench: Bench, stack: ExitStack) -> CaseResult:
    """Case 10: CPU seconds per GiB of each ``checksum`` algorithm, hashed in 1 MiB pieces."""
    import time

    from filestore_fastapi.checksums import ALGORITHMS, new_hasher

    size = bench.size(GiB)
    block = os.urandom(MiB)
    views = [memoryview(block)] * (size // MiB)
    rows, samples = [], []
    for algorithm in ALGORITHMS:
        seconds = []
        for _ in range(bench.runs):
            hasher = new_hasher(algorithm)
            assert hasher is not None
            started = time.process_time()
            for view in views:
                hasher.update(view)
            hasher.hexdigest()
            seconds.append((time.process_time() - started) / (size / GiB))
            samples.append(
                Sample(algorithm, size, 200, seconds[-1], 0, 0, 0, 0, seconds[-1], seconds[-1], 0.0)
            )
        rows.append([algorithm, spread(seconds, "{:.3f}"), f"{GiB / MiB / median(seconds):.0f}"])
    return CaseResult(
        key="case10",
        title="10. Checksum CPU: seconds per GiB of each `checksum` algorithm",
        columns=["checksum", "CPU s / GiB min / med / max", "MiB/s of one core"],
        rows=rows,
        samples=samples,
        notes=[
            f"filestore_fastapi.checksums.new_hasher, {size_label(size)} in 1 MiB memoryviews,",
            f"{bench.runs} rounds, in the benchmark process (no server). crc32c copies each view to",
            "bytes first: its C extension takes no memoryview. With checksum=None nothing is hashed.",
        ],
    )


CASES: dict[str, Callable[[Bench, ExitStack], CaseResult]] = {
    "1": large_file,
    "2": time_to_reject,
    "3": small_files,
    "4": many_files,
    "5": memory_file,
    "6": s3_file,
}


def s3_on_a_realistic_path(bench: Bench, stack: ExitStack) -> CaseResult:
    """Case 7, in ``s3_latency.py`` (imported here, when it runs: it uses this module)."""
    from .s3_latency import s3_latency

    return s3_latency(bench, stack)


def azure_on_a_realistic_path(bench: Bench, stack: ExitStack) -> CaseResult:
    """Case 8, in ``azure_latency.py``: AzureStorage vs ``upload_blob`` through the proxy."""
    from .azure_latency import azure_latency

    return azure_latency(bench, stack)


def gcs_on_a_realistic_path(bench: Bench, stack: ExitStack) -> CaseResult:
    """Case 9, in ``gcs_latency.py``: GCSStorage vs ``upload_from_filename`` through the proxy."""
    from .gcs_latency import gcs_latency

    return gcs_latency(bench, stack)


CASES["7"] = s3_on_a_realistic_path
CASES["8"] = azure_on_a_realistic_path
CASES["9"] = gcs_on_a_realistic_path
CASES["10"] = checksum_cpu


def resumable(bench: Bench, stack: ExitStack) -> CaseResult:
    """Case 11, in ``tus.py``: 1 GiB through tus vs multipart, and a resume after a drop."""
    from .tus import tus_case

    return tus_case(bench, stack)


CASES["11"] = resumable
