"""filestore-fastapi ``MemoryStorage``; each file is dropped after the response is built
so repeated runs start from the same RSS."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI

from filestore_fastapi import FileData, MemoryStorage

storage = MemoryStorage("file")

app = FastAPI()


@app.post("/one")
async def one(files: Annotated[list[FileData], Depends(storage)]) -> dict[str, int]:
    size = sum(len(f.file or b"") for f in files)
    for file in files:
        await storage.delete(file)
    return {"size": size}
