"""(d) filestore-fastapi ``LocalStorage`` with ``checksum=None``: what the hashing costs."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI

from filestore_fastapi import Config, FileData, LocalStorage

from .settings import DESTINATION

storage = LocalStorage("file", config=Config(destination=DESTINATION, checksum=None))

app = FastAPI()


@app.post("/one")
async def one(files: Annotated[list[FileData], Depends(storage)]) -> dict[str, int]:
    return {"size": sum(f.size for f in files)}
