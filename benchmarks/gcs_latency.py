"""Case 9, GCS on a realistic path (issue 13, target 2, measured and reported): GCSStorage
under uvicorn (default config: one resumable upload in ``part_size`` chunks) against the SDK's
own ``Blob.upload_from_filename`` (one resumable upload in its default 100 MiB chunks), both
through ``LatencyProxy`` to fake-gcs-server.

A resumable upload is sequential by protocol: each chunk names its offset, and the next may
only follow once the service has acknowledged it, so one connection carries the whole file
at that connection's rate. (Parallel composite uploads, parts as objects then ``compose``, are
another protocol; fake-gcs-server's compose is not a fair stand-in for GCS's.)

fake-gcs-server takes longer for every chunk than for the one before (it handles the object
received so far again: measured without the proxy, 256 MiB in 8 MiB chunks took 32 s, chunk 1
0.09 s and chunk 32 2.0 s; in 32 MiB chunks 13.7 s), which GCS does not. So a third contender
sends the SDK's own 100 MiB chunks (``part_size``): the two protocols then meet the emulator
on equal terms.

Standalone: ``python -m benchmarks.gcs_latency [--size-mib 256] [--runs 5]``.
"""

from __future__ import annotations

import sys
from contextlib import ExitStack
from importlib.metadata import version

from filestore_fastapi import Config

from . import cloud_latency
from .cases import Bench, CaseResult
from .cloud_latency import Mine, Plan, proxy_to, sdk_sample, title
from .measure import Contender, MiB, Sample

PART_SIZE = Config().part_size
SDK = Contender("gcs-sdk", "google-cloud-storage upload_from_filename", "", "GCS SDK")
MINE = Contender("gcs", "GCSStorage (default config)", "cloud_latency", "GCS")
SDK_CHUNK = 100 * MiB
"""The SDK's chunk of a resumable upload (``google.cloud.storage.blob._DEFAULT_CHUNKSIZE``)."""
LARGE_CHUNKS = Contender(
    "gcs-100m", "GCSStorage, part_size=100 MiB (the SDK's chunk)", "cloud_latency", "GCS 100 MiB"
)
SIZE = 256 * MiB
"""At 25 MB/s on one connection 1 GiB would take 43 s a contender and round."""


def gcs_latency(bench: Bench, stack: ExitStack, nominal: int = SIZE) -> CaseResult:
    from google.cloud import storage

    from tests.emulators import FakeGcsServer

    server = stack.enter_context(FakeGcsServer())
    proxy = proxy_to(stack, server.endpoint_url)
    # fake-gcs-server names itself in resumable-upload Locations: keep those chunks on the proxy.
    ours, theirs = f"127.0.0.1:{proxy.port}".encode(), f"127.0.0.1:{server.port}".encode()
    assert len(ours) == len(theirs), "the rewrite keeps lengths"
    proxy.rewrite = (theirs, ours)
    bucket_name = "bench-latency"
    direct = storage.Client(**server.client_kwargs())  # type: ignore[arg-type]
    bucket = direct.create_bucket(bucket_name)  # direct: emptying it is not measured
    env = {
        "BENCH_CLOUD": "gcs",
        "BENCH_GCS_ENDPOINT": proxy.url,
        "BENCH_GCS_PROJECT": server.project,
        "BENCH_GCS_BUCKET": bucket_name,
    }
    running = cloud_latency.start(stack, bench, MINE, env, 3 * PART_SIZE)
    large = cloud_latency.start(
        stack, bench, LARGE_CHUNKS, {**env, "BENCH_PART_SIZE": str(SDK_CHUNK)}, 3 * PART_SIZE
    )
    size = bench.size(nominal)
    path = bench.file(size)

    def empty() -> None:
        for blob in direct.list_blobs(bucket):
            blob.delete()

    def baseline() -> Sample:
        arguments = [str(path), proxy.url, server.project, bucket_name]
        return sdk_sample(SDK.key, size, ["benchmarks.cloud_baseline", "gcs", *arguments], {})

    return cloud_latency.run(
        bench,
        Plan(
            key="case9",
            title=title(9, "GCS (fake-gcs-server)", size, PART_SIZE),
            size=size,
            sdk=SDK,
            run_sdk=baseline,
            mine=[Mine(MINE, running), Mine(LARGE_CHUNKS, large)],
            empty=empty,
            default=MINE.key,
            target=None,
            notes=[
                "No target: a resumable upload is one chunk after another on one connection, for",
                "both. GCSStorage sends 8 MiB chunks (part_size), the SDK 100 MiB ones; fake-gcs-server",
                "spends longer on every chunk than on the one before (256 MiB without the proxy: 32 s",
                "in 8 MiB chunks, 13.7 s in 32 MiB ones), GCS does not, hence the 100 MiB contender.",
                f"google-cloud-storage {version('google-cloud-storage')}, fake-gcs-server (memory backend).",
            ],
        ),
    )


def main(argv: list[str]) -> int:
    return cloud_latency.standalone(argv, gcs_latency, SIZE // MiB, "gcs_latency")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
