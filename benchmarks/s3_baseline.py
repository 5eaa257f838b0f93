"""The S3 baseline: plain boto3 ``upload_fileobj`` (or ``upload_file``) of a file from disk,
in its own process.

Usage: ``python -m benchmarks.s3_baseline FILE ENDPOINT BUCKET [upload_file]``; prints JSON with the
wall time, the RSS before the upload and its peak (VmHWM reset after boto3 is loaded and
its client made, as the server's is reset after its warm-up), and the CPU seconds.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        label, _, value = line.partition(":")
        if label == key:
            return int(value.split()[0])
    raise KeyError(key)


def main(path: str, endpoint: str, bucket: str, method: str = "upload_fileobj") -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint)
    client.list_objects_v2(Bucket=bucket, MaxKeys=1)  # connect and load the S3 model first
    Path("/proc/self/clear_refs").write_text("5")
    rss_before = _status_kib("VmRSS") * 1024
    usage = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    if method == "upload_file":  # the default TransferConfig: 8 MiB parts, 10 threads
        client.upload_file(path, bucket, "baseline.bin")
    else:
        with open(path, "rb") as source:
            client.upload_fileobj(source, bucket, "baseline.bin")
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    figures = {
        "seconds": seconds,
        "rss_before": rss_before,
        "peak_rss": _status_kib("VmHWM") * 1024,
        "cpu_seconds": cpu,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main(*sys.argv[1:5])
