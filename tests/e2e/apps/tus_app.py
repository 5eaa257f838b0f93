"""The end-to-end tus app: one ``tus_router`` at ``/files`` on the store ``TUS_STORE`` names.

``TUS_STORE`` is ``local`` (``TUS_LOCAL_ROOT`` is the destination), ``s3``, ``gcs`` or
``azure``, each configured from the environment as the other end-to-end apps are
(``AWS_BUCKET_NAME`` and ``S3_ENDPOINT_URL``; ``GCP_BUCKET_NAME``, ``GCP_PROJECT`` and
``GCS_ENDPOINT_URL``; ``AZURE_STORAGE_CONTAINER`` and ``AZURE_STORAGE_CONNECTION_STRING``),
with the destination ``TUS_DESTINATION`` (default ``uploads``). ``TUS_LEASE`` (seconds,
default 2) is short, so the lease of a process killed while it wrote runs out quickly.
Several processes started with the same environment share every upload through the store.
"""

from __future__ import annotations

import os
from datetime import timedelta

from fastapi import FastAPI

from filestore_fastapi import AzureStorage, Config, GCSStorage, LocalStorage, S3Storage, Storage, tus_router

PART_SIZE = 5 * 1024 * 1024


def storage_from_env() -> Storage:
    store = os.environ.get("TUS_STORE", "local")
    destination = os.environ.get("TUS_DESTINATION", "uploads")
    if store == "local":
        root = os.environ["TUS_LOCAL_ROOT"]
        return LocalStorage("file", config=Config(destination=os.path.join(root, destination)))
    if store == "s3":
        config = Config(
            destination=destination, endpoint_url=os.environ["S3_ENDPOINT_URL"], part_size=PART_SIZE
        )
        return S3Storage("file", config=config)
    if store == "gcs":
        config = Config(
            destination=destination, endpoint_url=os.environ["GCS_ENDPOINT_URL"], part_size=PART_SIZE
        )
        return GCSStorage("file", config=config)
    if store == "azure":
        return AzureStorage("file", config=Config(destination=destination, part_size=PART_SIZE))
    raise ValueError(f"TUS_STORE={store!r}: local, s3, gcs or azure")


storage = storage_from_env()
app = FastAPI()
app.include_router(
    tus_router(storage, prefix="/files", lease=timedelta(seconds=float(os.environ.get("TUS_LEASE", "2"))))
)


@app.get("/")
async def ready() -> dict[str, str]:
    return {"store": storage.storage_name}
