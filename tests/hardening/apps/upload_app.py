"""One upload route on any backend, configured from the environment, for real uvicorn runs.

``HARDENING_BACKEND`` names the backend (local, memory, s3, gcs, azure) and
``HARDENING_CONFIG`` holds its ``Config`` keys as JSON; ``HARDENING_COUNT`` the file count.
``GET /calls`` says how often the handler ran, so a test can tell that an abandoned or
refused upload never reached it (a MemoryStorage keeps no files to look at instead).
"""

from __future__ import annotations

import json
import os

from filestore_fastapi import Config, LocalStorage, MemoryStorage, Storage
from tests.hardening.routes import upload_app


def _storage_class(backend: str) -> type[Storage]:
    if backend == "s3":
        from filestore_fastapi import S3Storage

        return S3Storage
    if backend == "gcs":
        from filestore_fastapi import GCSStorage

        return GCSStorage
    if backend == "azure":
        from filestore_fastapi import AzureStorage

        return AzureStorage
    return {"local": LocalStorage, "memory": MemoryStorage}[backend]


storage = _storage_class(os.environ.get("HARDENING_BACKEND", "local"))(
    "file",
    count=int(os.environ.get("HARDENING_COUNT", "10")),
    config=Config(**json.loads(os.environ.get("HARDENING_CONFIG", "{}"))),
)

app = upload_app(storage)


@app.get("/calls")
async def calls() -> int:
    return int(app.state.calls)
