"""filestore-fastapi ``S3Storage`` against the S3 endpoint the runner gives it (moto behind
the latency proxy): the default config but for ``parts_in_flight``, from
``BENCH_S3_PARTS_IN_FLIGHT`` (its default if unset)."""

from __future__ import annotations

import os
from typing import Annotated

from fastapi import Depends, FastAPI

from filestore_fastapi import Config, FileData, S3Storage

from .settings import S3_BUCKET, S3_ENDPOINT

PARTS_IN_FLIGHT = int(os.environ.get("BENCH_S3_PARTS_IN_FLIGHT", str(Config().parts_in_flight)))

storage = S3Storage(
    "file",
    config=Config(AWS_BUCKET_NAME=S3_BUCKET, endpoint_url=S3_ENDPOINT, parts_in_flight=PARTS_IN_FLIGHT),
)

app = FastAPI()


@app.post("/one")
async def one(files: Annotated[list[FileData], Depends(storage)]) -> dict[str, int]:
    return {"size": sum(f.size for f in files)}
