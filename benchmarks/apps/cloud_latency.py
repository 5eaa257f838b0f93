"""filestore-fastapi ``AzureStorage`` or ``GCSStorage`` (``BENCH_CLOUD``: ``azure`` or ``gcs``)
against the emulator behind the latency proxy, with the default config but for the account,
container or bucket, ``BENCH_PARTS_IN_FLIGHT`` (Azure) and ``BENCH_PART_SIZE`` (their defaults
if unset)."""

from __future__ import annotations

import os
from typing import Annotated

from fastapi import Depends, FastAPI

from filestore_fastapi import AzureStorage, Config, FileData, GCSStorage, Storage

CLOUD = os.environ.get("BENCH_CLOUD", "azure")
PART_SIZE = int(os.environ.get("BENCH_PART_SIZE", str(Config().part_size)))
storage: Storage
if CLOUD == "azure":
    storage = AzureStorage(
        "file",
        config=Config(
            AZURE_STORAGE_CONNECTION_STRING=os.environ["BENCH_AZURE_CONNECTION_STRING"],
            AZURE_STORAGE_CONTAINER=os.environ["BENCH_AZURE_CONTAINER"],
            parts_in_flight=int(os.environ.get("BENCH_PARTS_IN_FLIGHT", str(Config().parts_in_flight))),
            part_size=PART_SIZE,
        ),
    )
else:
    storage = GCSStorage(
        "file",
        config=Config(
            GCP_BUCKET_NAME=os.environ["BENCH_GCS_BUCKET"],
            GCP_PROJECT=os.environ["BENCH_GCS_PROJECT"],
            endpoint_url=os.environ["BENCH_GCS_ENDPOINT"],
            part_size=PART_SIZE,
        ),
    )

app = FastAPI()


@app.post("/one")
async def one(files: Annotated[list[FileData], Depends(storage)]) -> dict[str, int]:
    return {"size": sum(f.size for f in files)}
