"""Example app: documents on local disk, images in memory."""

from __future__ import annotations

from fastapi import Depends, FastAPI

from filestore_fastapi import Config, FileData, LocalStorage, MemoryStorage

documents = LocalStorage(
    name="document",
    count=5,
    config=Config(destination="uploads/documents", base_url="/media/documents", max_file_size=50 * 1024 * 1024),
)
images = MemoryStorage(
    name="image",
    count=3,
    config=Config(allowed_content_types=["image/*"], max_file_size=10 * 1024 * 1024),
)

app = FastAPI(title="filestore-fastapi example")


@app.post("/documents")
async def upload_documents(files: list[FileData] = Depends(documents)) -> list[FileData]:
    return files


@app.post("/images")
async def upload_images(files: list[FileData] = Depends(images)) -> list[FileData]:
    return files
