"""The end-to-end S3 app, configured from the environment.

``AWS_BUCKET_NAME``, ``AWS_DEFAULT_REGION`` and the credentials are read by S3Storage and
boto3 themselves (their environment fallbacks); ``S3_ENDPOINT_URL`` points it at an
emulator and ``S3_PART_SIZE`` sets the multipart part size. ``GET /calls`` says how many
times the upload handler ran, so a test can tell that an abandoned upload never reached it.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Annotated

from fastapi import Depends, FastAPI

from filestore_fastapi import Config, FileData, S3Storage

storage = S3Storage(
    "file",
    config=Config(
        destination="uploads",
        endpoint_url=os.environ.get("S3_ENDPOINT_URL"),
        part_size=int(os.environ.get("S3_PART_SIZE", 8 * 1024 * 1024)),
    ),
)

app = FastAPI()
app.state.calls = Counter[str]()


@app.get("/calls")
async def calls() -> dict[str, int]:
    return dict(app.state.calls)


@app.post("/s3")
async def s3_upload(files: Annotated[list[FileData], Depends(storage)]) -> list[FileData]:
    app.state.calls["s3"] += 1
    return files
