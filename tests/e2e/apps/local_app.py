"""The end-to-end app: a LocalStorage route, and the usual ``UploadFile`` route to compare with.

``UPLOAD_DIR`` is LocalStorage's destination and ``PLAIN_DIR`` where the plain route copies to.
``GET /calls`` says how many times each upload handler ran, so a test can tell that a
refused or abandoned upload never reached its handler.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, UploadFile

from filestore_fastapi import Config, FileData, LocalStorage

COPY_BUFFER = 1024 * 1024

upload_dir = Path(os.environ["UPLOAD_DIR"])
plain_dir = Path(os.environ["PLAIN_DIR"])
storage = LocalStorage("file", config=Config(destination=upload_dir))

app = FastAPI()
app.state.calls = Counter[str]()


@app.get("/calls")
async def calls() -> dict[str, int]:
    return dict(app.state.calls)


@app.post("/local")
async def local_upload(files: Annotated[list[FileData], Depends(storage)]) -> list[FileData]:
    app.state.calls["local"] += 1
    return files


@app.post("/plain")
def plain_upload(file: UploadFile) -> dict[str, str | int]:
    """What FastAPI's docs suggest: the body is spooled to a temp file first, then copied."""
    app.state.calls["plain"] += 1
    target = plain_dir / Path(file.filename or "upload").name
    with target.open("wb") as out:
        shutil.copyfileobj(file.file, out, COPY_BUFFER)
    return {"filename": target.name, "size": target.stat().st_size}
