"""``tus_router`` on an ``S3Storage`` (the runner's moto) at ``/files``, configured as ``apps/s3.py``."""

from __future__ import annotations

from fastapi import FastAPI

from filestore_fastapi import Config, S3Storage, tus_router

from .settings import S3_BUCKET, S3_ENDPOINT, S3_PART_SIZE

storage = S3Storage(
    "file",
    config=Config(AWS_BUCKET_NAME=S3_BUCKET, endpoint_url=S3_ENDPOINT, part_size=S3_PART_SIZE),
)

app = FastAPI()
app.include_router(tus_router(storage, prefix="/files"))
