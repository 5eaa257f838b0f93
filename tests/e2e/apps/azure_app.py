"""The end-to-end Azure app, configured from the environment.

``AZURE_STORAGE_CONTAINER`` and ``AZURE_STORAGE_CONNECTION_STRING`` (or
``AZURE_STORAGE_ACCOUNT_URL``) are read by AzureStorage itself (its environment fallbacks);
``AZURE_PART_SIZE`` sets the block size. ``GET /calls`` says how many times the upload
handler ran, so a test can tell that an abandoned upload never reached it.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Annotated

from fastapi import Depends, FastAPI

from filestore_fastapi import AzureStorage, Config, FileData

storage = AzureStorage(
    "file",
    config=Config(destination="uploads", part_size=int(os.environ.get("AZURE_PART_SIZE", 8 * 1024 * 1024))),
)

app = FastAPI()
app.state.calls = Counter[str]()


@app.get("/calls")
async def calls() -> dict[str, int]:
    return dict(app.state.calls)


@app.post("/azure")
async def azure_upload(files: Annotated[list[FileData], Depends(storage)]) -> list[FileData]:
    app.state.calls["azure"] += 1
    return files
