"""An app with an S3 route whose store stops answering, beside routes that do not use it.

``STALLED_ENDPOINT`` is the S3 endpoint (a listener that never answers) and
``STALLED_LOCAL_DIR`` the directory of the local upload route. The S3 storage waits
1 s to connect and 2 s for an answer, without retries.

- ``POST /s3``: files to the stalled S3 store;
- ``POST /local``: files to a LocalStorage;
- ``GET /ping``: a plain ``def`` route, run in the thread pool FastAPI shares.
"""

import os
from typing import Annotated

from fastapi import Depends, FastAPI

from filestore_fastapi import Config, FileData, LocalStorage, S3Storage

MiB = 1024 * 1024

stalled = S3Storage(
    "file",
    config=Config(
        AWS_BUCKET_NAME="stalled",
        AWS_DEFAULT_REGION="us-east-1",
        endpoint_url=os.environ["STALLED_ENDPOINT"],
        destination="up",
        part_size=5 * MiB,
        connect_timeout=1,
        read_timeout=2,
        max_retries=0,
    ),
)
local = LocalStorage("file", config=Config(destination=os.environ["STALLED_LOCAL_DIR"]))

app = FastAPI()


@app.post("/s3")
async def to_s3(files: Annotated[list[FileData], Depends(stalled)]) -> list[str]:
    return [f.filename for f in files]


@app.post("/local")
async def to_local(files: Annotated[list[FileData], Depends(local)]) -> list[str]:
    return [f.filename for f in files]


@app.get("/ping")
def ping() -> str:
    return "pong"
