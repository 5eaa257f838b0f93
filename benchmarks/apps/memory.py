"""filestore-fastapi ``MemoryStorage``: the bytes live in ``FileData.file`` for the request
only. ``max_file_size=None`` lifts the 16 MiB default, as the benchmark sends larger files."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI

from filestore_fastapi import Config, FileData, MemoryStorage

storage = MemoryStorage("file", config=Config(max_file_size=None))

app = FastAPI()


@app.post("/one")
async def one(files: Annotated[list[FileData], Depends(storage)]) -> dict[str, int]:
    return {"size": sum(len(f.file or b"") for f in files)}
