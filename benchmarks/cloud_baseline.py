"""The Azure and GCS baselines: the SDK's own upload of a file from disk, in a process of its own.

``python -m benchmarks.cloud_baseline azure FILE CONNECTION_STRING CONTAINER MAX_CONCURRENCY``:
``BlobClient.upload_blob(file, max_concurrency=...)``, the SDK's default block sizes.
``python -m benchmarks.cloud_baseline gcs FILE ENDPOINT PROJECT BUCKET``:
``Blob.upload_from_filename`` (a resumable upload in the SDK's default 100 MiB chunks).

Prints JSON as ``s3_baseline`` does: the wall time of the upload call (the client made and
connected first), the RSS before it and its peak (VmHWM reset after the warm-up), CPU seconds.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        label, _, value = line.partition(":")
        if label == key:
            return int(value.split()[0])
    raise KeyError(key)


def measure(upload: Callable[[], None]) -> dict[str, float]:
    Path("/proc/self/clear_refs").write_text("5")
    rss_before = _status_kib("VmRSS") * 1024
    usage = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    upload()
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "seconds": seconds,
        "rss_before": rss_before,
        "peak_rss": _status_kib("VmHWM") * 1024,
        "cpu_seconds": after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime,
    }


def azure(path: str, connection_string: str, container: str, max_concurrency: str) -> dict[str, float]:
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(connection_string)
    client = service.get_container_client(container)
    client.get_container_properties()  # connect, load the SDK's code
    blob = client.get_blob_client("baseline.bin")

    def upload() -> None:
        with open(path, "rb") as source:
            blob.upload_blob(source, overwrite=True, max_concurrency=int(max_concurrency))

    return measure(upload)


def gcs(path: str, endpoint: str, project: str, bucket: str) -> dict[str, float]:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(
        project=project,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": endpoint},
    )
    target = client.bucket(bucket)
    target.reload()  # connect, load the SDK's code
    blob = target.blob("baseline.bin")
    return measure(lambda: blob.upload_from_filename(path))


if __name__ == "__main__":
    kind, *arguments = sys.argv[1:]
    print(json.dumps({"azure": azure, "gcs": gcs}[kind](*arguments)))
