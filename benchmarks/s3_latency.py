"""S3 on a realistic path (issue 13, target 2): S3Storage under uvicorn with 1, 4, 8 and 10
parts in flight against boto3 ``upload_file`` (default ``TransferConfig``) of the same file,
all of them talking to moto through ``LatencyProxy`` (10 ms round trip, 25 MB/s a
connection), in one run; the contenders take turns, their order rotated every round.

Standalone: ``python -m benchmarks.s3_latency [--size-mib 256] [--runs 3]`` prints the table.
As a case of ``python -m benchmarks``: ``s3_latency(bench, stack)``, the signature of
``cases.CASES``. ``python -m benchmarks.s3_latency baseline FILE ENDPOINT BUCKET`` is the
baseline's own process (JSON on stdout, as ``s3_baseline``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import urllib.parse
from contextlib import ExitStack
from pathlib import Path

from filestore_fastapi import Config

from .cases import Bench, CaseResult, Target, boto3_sample, by, median, mib, size_label, warm_up
from .latency_proxy import LatencyProxy
from .measure import Contender, MiB, Sample, curl_post, serve

PART_SIZE = 8 * MiB
IN_FLIGHT = (1, 4, 8, 10)
RTT, RATE = 0.010, 25e6
DEFAULT_IN_FLIGHT = Config().parts_in_flight
BOTO3_FILE = Contender("boto3-file", "boto3 upload_file (default TransferConfig)", "", "boto3")


def contender(in_flight: int) -> Contender:
    return Contender(
        f"s3-x{in_flight}", f"S3Storage, parts_in_flight={in_flight}", "s3_latency", f"S3 x{in_flight}"
    )


def s3_latency(
    bench: Bench, stack: ExitStack, nominal: int = 256 * MiB, in_flights: tuple[int, ...] = IN_FLIGHT
) -> CaseResult:
    import boto3

    from tests.emulators import MotoServer

    moto = stack.enter_context(MotoServer())
    port = urllib.parse.urlsplit(moto.endpoint_url).port
    assert port is not None
    proxy = stack.enter_context(LatencyProxy(("127.0.0.1", port), rtt=RTT, rate=RATE))
    client = boto3.client("s3", **moto.client_kwargs())  # direct: emptying the bucket is not measured
    bucket = "bench-latency"
    client.create_bucket(Bucket=bucket)
    credentials = {
        "AWS_ACCESS_KEY_ID": moto.access_key_id,
        "AWS_SECRET_ACCESS_KEY": moto.secret_access_key,
        "AWS_DEFAULT_REGION": moto.region,
    }
    env = {
        **credentials,
        "BENCH_S3_BUCKET": bucket,
        "BENCH_S3_ENDPOINT": proxy.url,
        "BENCH_S3_PART_SIZE": str(PART_SIZE),
    }
    servers = {}
    for in_flight in in_flights:
        mine = contender(in_flight)
        running = stack.enter_context(
            serve(mine, bench.scratch, {**env, "BENCH_S3_PARTS_IN_FLIGHT": str(in_flight)})
        )
        warm_up(running, bench.file(3 * PART_SIZE))  # several parts: the SDK's models, threads
        servers[mine.key] = running
    size = bench.size(nominal)
    path = bench.file(size)

    def empty_bucket() -> None:
        for item in client.list_objects_v2(Bucket=bucket).get("Contents", []):
            client.delete_object(Bucket=bucket, Key=item["Key"])

    def baseline() -> Sample:
        arguments = [str(path), proxy.url, bucket, "upload_file"]
        return boto3_sample(BOTO3_FILE.key, size, arguments, credentials)

    def measure(key: str) -> Sample:
        if key == BOTO3_FILE.key:
            return baseline()
        running = servers[key]
        sample = running.measure(lambda: curl_post(running.server.url + "/one", [(path, "s3.bin")]), size)
        if sample.status != 200:
            raise RuntimeError(f"{key} answered {sample.status}")
        return sample

    keys = [BOTO3_FILE.key, *servers]
    empty_bucket()
    samples: list[Sample] = []
    ratios: dict[str, list[float]] = {key: [] for key in servers}
    for round_number in range(bench.runs):
        turn = round_number % len(keys)
        this_round = {}
        for key in keys[turn:] + keys[:turn]:
            this_round[key] = measure(key)
            empty_bucket()
        samples += this_round.values()
        for key in servers:
            ratios[key].append(this_round[key].seconds / this_round[BOTO3_FILE.key].seconds)
    rows = []
    for key in keys:
        mine = by(samples, key)
        wall = [s.seconds for s in mine]
        label = BOTO3_FILE.label if key == BOTO3_FILE.key else servers[key].contender.label
        rows.append(
            [
                label,
                f"{median(wall):.2f}",
                f"{min(wall):.2f} / {max(wall):.2f}",
                f"{size / MiB / median(wall):.0f}",
                f"{median(ratios[key]):.2f}" if key in ratios else "1.00",
                mib(median(s.peak_rss for s in mine)),
                mib(max(s.rss_growth for s in mine)),
                f"{median(s.server_cpu for s in mine):.2f}",
            ]
        )
    targets = []
    for in_flight in in_flights:
        key, bound = contender(in_flight).key, (in_flight + 1) * PART_SIZE + 32 * MiB
        growth = max(s.rss_growth for s in by(samples, key))
        targets.append(
            Target(
                f"parts_in_flight={in_flight}: RSS growth <= {in_flight + 1} x part size + 32 MiB",
                f"{growth / MiB:.1f} MiB",
                growth <= bound,
            )
        )
    if DEFAULT_IN_FLIGHT in in_flights:
        ratio = median(ratios[contender(DEFAULT_IN_FLIGHT).key])
        targets.insert(
            0,
            Target(
                f"parts_in_flight={DEFAULT_IN_FLIGHT} (default): wall time <= 1.10 x boto3 upload_file",
                f"{ratio:.2f}",
                ratio <= 1.10,
            ),
        )
    return CaseResult(
        key="case7",
        title=(
            f"7. S3 through a {RTT * 1000:.0f} ms, {RATE / 1e6:.0f} MB/s-a-connection proxy, one "
            f"{size_label(size)} file (part_size {size_label(PART_SIZE)})"
        ),
        columns=[
            "contender",
            "wall s",
            "min / max s",
            "MiB/s",
            "x boto3",
            "peak RSS MiB",
            "RSS growth MiB",
            "process CPU s",
        ],
        rows=rows,
        targets=targets,
        samples=samples,
        notes=[
            "x boto3 is the median of the per-round ratios; the order of the contenders rotates every round.",
            "boto3 runs in a process of its own (upload_file, default TransferConfig: 8 MiB parts,",
            "10 threads), timed from its first byte; S3Storage is timed by curl, its client, for the",
            "whole request.",
            "Both go through the same proxy to the same moto server, which shares the two cores with them.",
        ],
    )


def markdown_table(columns: list[str], rows: list[list[str]]) -> list[str]:
    """As ``report.markdown_table``, which needs matplotlib (the bench venv) to import."""
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.s3_latency", description=__doc__)
    parser.add_argument("--size-mib", type=int, default=256, help="file size in MiB (default 256)")
    parser.add_argument("--runs", type=int, default=3, help="rounds (default 3)")
    parser.add_argument(
        "--in-flight", default=",".join(map(str, IN_FLIGHT)), help="parts_in_flight values (default 1,4,8,10)"
    )
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="filestore-bench-"))
    try:
        bench = Bench(scratch=scratch, runs=args.runs)
        started = time.perf_counter()
        with ExitStack() as stack:
            in_flights = tuple(int(n) for n in args.in_flight.split(","))
            result = s3_latency(bench, stack, args.size_mib * MiB, in_flights)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"## {result.title}\n")
    print("\n".join(markdown_table(result.columns, result.rows)))
    print()
    for target in result.targets:
        print(f"- {target.text}: {target.value} ({'held' if target.held else 'NOT held'})")
    for note in result.notes:
        print(f"  {note}")
    print(f"\n{time.perf_counter() - started:.0f} s; python -m benchmarks.s3_latency {' '.join(argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
