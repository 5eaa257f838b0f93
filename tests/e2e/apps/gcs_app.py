"""The end-to-end GCS app, configured from the environment.

``GCP_BUCKET_NAME`` and ``GCP_PROJECT`` are read by GCSStorage itself (its environment
fallbacks); ``GCS_ENDPOINT_URL`` points it at an emulator and ``GCS_PART_SIZE`` sets the
upload chunk. ``GET /calls`` says how many times the upload handler ran, so a test can
tell that an abandoned upload never reached it.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Annotated

from fastapi import Depends, FastAPI

from filestore_fastapi import Config, FileData, GCSStorage

storage = GCSStorage(
    "file",
    config=Config(
        destination="uploads",
        endpoint_url=os.environ.get("GCS_ENDPOINT_URL"),
        part_size=int(os.environ.get("GCS_PART_SIZE", 8 * 1024 * 1024)),
    ),
)

app = FastAPI()
app.state.calls = Counter[str]()


@app.get("/calls")
async def calls() -> dict[str, int]:
    return dict(app.state.calls)


@app.post("/gcs")
async def gcs_upload(files: Annotated[list[FileData], Depends(storage)]) -> list[FileData]:
    app.state.calls["gcs"] += 1
    return files
