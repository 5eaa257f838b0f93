"""(d) filestore-fastapi ``LocalStorage``: the body streams from the socket to the file."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI

from filestore_fastapi import Config, FileData, LocalStorage

from .settings import DESTINATION, LIMIT, MANY

one_storage = LocalStorage("file", config=Config(destination=DESTINATION))
many_storage = LocalStorage("file", count=MANY, config=Config(destination=DESTINATION))
limited_storage = LocalStorage("file", config=Config(destination=DESTINATION, max_file_size=LIMIT))

app = FastAPI()


@app.post("/one")
async def one(files: Annotated[list[FileData], Depends(one_storage)]) -> dict[str, int]:
    return {"size": sum(f.size for f in files)}


@app.post("/many")
async def many(files: Annotated[list[FileData], Depends(many_storage)]) -> dict[str, int]:
    return {"size": sum(f.size for f in files)}


@app.post("/limited")
async def limited(files: Annotated[list[FileData], Depends(limited_storage)]) -> dict[str, int]:
    return {"size": sum(f.size for f in files)}
