"""(b) The usual hand-written route: ``file: UploadFile`` + ``shutil.copyfileobj``.

Plain ``def`` routes, as FastAPI's docs suggest for blocking file I/O, so the copy runs
in the thread pool. Starlette has already spooled each file to a temp file (in memory
up to 1 MiB, then on disk) before the route runs, so every byte is written twice.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, HTTPException, UploadFile

from .settings import DESTINATION, LIMIT

app = FastAPI()


def _save(file: UploadFile) -> int:
    DESTINATION.mkdir(parents=True, exist_ok=True)
    target = DESTINATION / Path(file.filename or "upload").name
    with target.open("wb") as out:
        shutil.copyfileobj(file.file, out)
        return out.tell()


@app.post("/one")
def one(file: Annotated[UploadFile, File()]) -> dict[str, int]:
    return {"size": _save(file)}


@app.post("/many")
def many(file: Annotated[list[UploadFile], File()]) -> dict[str, int]:
    return {"size": sum(_save(each) for each in file)}


@app.post("/limited")
def limited(file: Annotated[UploadFile, File()]) -> dict[str, int]:
    if file.size is not None and file.size > LIMIT:
        raise HTTPException(413, f"file exceeds {LIMIT} bytes")
    return {"size": _save(file)}
