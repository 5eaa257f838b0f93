"""filestore-fastapi ``S3Storage`` against the S3 endpoint the runner started (moto)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI

from filestore_fastapi import Config, FileData, S3Storage

from .settings import S3_BUCKET, S3_ENDPOINT, S3_PART_SIZE

storage = S3Storage(
    "file",
    config=Config(AWS_BUCKET_NAME=S3_BUCKET, endpoint_url=S3_ENDPOINT, part_size=S3_PART_SIZE),
)

app = FastAPI()


@app.post("/one")
async def one(files: Annotated[list[FileData], Depends(storage)]) -> dict[str, int]:
    return {"size": sum(f.size for f in files)}
