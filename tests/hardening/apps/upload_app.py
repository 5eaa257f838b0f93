"""One upload route on any backend, configured from the environment, for real uvicorn runs.

``HARDENING_BACKEND`` names the backend (local, memory, s3, gcs, azure) and
``HARDENING_CONFIG`` holds its ``Config`` keys as JSON; ``HARDENING_COUNT`` the file count.
``GET /calls`` says how often the handler ran, so a test can tell that an abandoned or
refused upload never reached it; ``GET /memory`` lists a MemoryStorage's keys.
"""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

from fastapi import Depends, FastAPI
from starlette.datastructures import ImmutableMultiDict

from filestore_fastapi import Config, FileData, LocalStorage, MemoryStorage, Storage, form_fields


def _storage_class(backend: str) -> type[Storage]:
    if backend == "s3":
        from filestore_fastapi.backends.s3 import S3Storage

        return S3Storage
    if backend == "gcs":
        from filestore_fastapi.backends.gcs import GCSStorage

        return GCSStorage
    if backend == "azure":
        from filestore_fastapi.backends.azure import AzureStorage

        return AzureStorage
    return {"local": LocalStorage, "memory": MemoryStorage}[backend]


storage = _storage_class(os.environ.get("HARDENING_BACKEND", "local"))(
    "file",
    count=int(os.environ.get("HARDENING_COUNT", "10")),
    config=Config(**json.loads(os.environ.get("HARDENING_CONFIG", "{}"))),
)

app = FastAPI()
app.state.calls = 0


@app.get("/calls")
async def calls() -> int:
    return int(app.state.calls)


@app.get("/memory")
async def memory_keys() -> list[str]:
    return sorted(storage.files) if isinstance(storage, MemoryStorage) else []


@app.post("/upload")
async def upload(
    files: Annotated[list[FileData], Depends(storage)],
    fields: Annotated[ImmutableMultiDict[str, str], Depends(form_fields)],
) -> dict[str, Any]:
    app.state.calls += 1
    return {"files": [f.model_dump(mode="json") for f in files], "fields": list(fields.multi_items())}
