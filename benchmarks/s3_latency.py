"""Case 7, S3 on a realistic path (issue 13, target 2): S3Storage under uvicorn with the
default ``parts_in_flight`` (and 4, the former default) against boto3 ``upload_file`` (its
default ``TransferConfig``: 8 MiB parts, 10 threads) of the same file, all of them talking to
moto through ``LatencyProxy`` (10 ms round trip, 25 MB/s a connection); see ``cloud_latency``.

Standalone: ``python -m benchmarks.s3_latency [--size-mib 1024] [--runs 5] [--in-flight 4,10]``.
As a case of ``python -m benchmarks``: ``s3_latency(bench, stack)``.
"""

from __future__ import annotations

import sys
from contextlib import ExitStack

from filestore_fastapi import Config

from . import cloud_latency
from .cases import Bench, CaseResult, GiB, boto3_sample
from .cloud_latency import SLACK, Mine, Plan, proxy_to, title
from .measure import Contender, MiB, Sample

PART_SIZE = Config().part_size
DEFAULT_IN_FLIGHT = Config().parts_in_flight
IN_FLIGHT = tuple(sorted({4, DEFAULT_IN_FLIGHT}))
BOTO3_FILE = Contender("boto3-file", "boto3 upload_file (default TransferConfig)", "", "boto3")


def contender(in_flight: int) -> Contender:
    default = " (default)" if in_flight == DEFAULT_IN_FLIGHT else ""
    return Contender(
        f"s3-x{in_flight}",
        f"S3Storage, parts_in_flight={in_flight}{default}",
        "s3_latency",
        f"S3 x{in_flight}",
    )


def s3_latency(
    bench: Bench, stack: ExitStack, nominal: int = GiB, in_flights: tuple[int, ...] = IN_FLIGHT
) -> CaseResult:
    import boto3

    from tests.emulators import MotoServer

    moto = stack.enter_context(MotoServer())
    proxy = proxy_to(stack, moto.endpoint_url)
    client = boto3.client("s3", **moto.client_kwargs())  # direct: emptying the bucket is not measured
    bucket = "bench-latency"
    client.create_bucket(Bucket=bucket)
    credentials = {
        "AWS_ACCESS_KEY_ID": moto.access_key_id,
        "AWS_SECRET_ACCESS_KEY": moto.secret_access_key,
        "AWS_DEFAULT_REGION": moto.region,
    }
    env = {**credentials, "BENCH_S3_BUCKET": bucket, "BENCH_S3_ENDPOINT": proxy.url}
    mine = []
    for in_flight in in_flights:
        running = cloud_latency.start(
            stack,
            bench,
            contender(in_flight),
            {**env, "BENCH_S3_PARTS_IN_FLIGHT": str(in_flight)},
            3 * PART_SIZE,
        )
        bound = (in_flight + 1) * PART_SIZE + SLACK
        mine.append(Mine(contender(in_flight), running, bound, f"({in_flight} + 1) x part_size + 32 MiB"))
    size = bench.size(nominal)
    path = bench.file(size)

    def empty_bucket() -> None:
        for item in client.list_objects_v2(Bucket=bucket).get("Contents", []):
            client.delete_object(Bucket=bucket, Key=item["Key"])

    def baseline() -> Sample:
        return boto3_sample(BOTO3_FILE.key, size, [str(path), proxy.url, bucket, "upload_file"], credentials)

    default = contender(DEFAULT_IN_FLIGHT).key
    return cloud_latency.run(
        bench,
        Plan(
            key="case7",
            title=title(7, "S3 (moto)", size, PART_SIZE),
            size=size,
            sdk=BOTO3_FILE,
            run_sdk=baseline,
            mine=mine,
            empty=empty_bucket,
            default=default if DEFAULT_IN_FLIGHT in in_flights else None,
            notes=["boto3's default TransferConfig: 8 MiB parts, 10 threads, 10 pooled connections."],
        ),
    )


def main(argv: list[str]) -> int:
    in_flights = IN_FLIGHT
    if "--in-flight" in argv:
        at = argv.index("--in-flight")
        in_flights = tuple(int(n) for n in argv[at + 1].split(","))
        argv = argv[:at] + argv[at + 2 :]

    def case(bench: Bench, stack: ExitStack, size: int) -> CaseResult:
        return s3_latency(bench, stack, size, in_flights)

    return cloud_latency.standalone(argv, case, GiB // MiB, "s3_latency")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
