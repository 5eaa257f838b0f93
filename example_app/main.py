"""Example app: a page at ``/`` that uploads documents, lists them and downloads them back.

``make run`` serves it on http://127.0.0.1:8000; the backend comes from ``FILESTORE_BACKEND``
(see ``example_app/storage.py``). The API is documented at ``/docs``.

Two ways in, one storage: ``POST /documents`` (multipart, one request per file) and the
resumable mode, tus 1.0 under ``/uploads/resumable`` driven on the page by tus-js-client
(pause, resume, survive a dropped connection). ``make run`` installs tus-js-client from npm
into ``.tools/`` and the app serves it at ``/vendor/tus.min.js``; without it only the
resumable section is unavailable.
"""

from __future__ import annotations

import mimetypes
from collections import OrderedDict
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import FileResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.types import Scope

from filestore_fastapi import Config, FileData, MemoryStorage, install_openapi, tus_router
from filestore_fastapi.download import attachment

from .storage import (
    ALLOWED_EXTENSIONS,
    FIELD,
    LOCAL_BASE_URL,
    MAX_FILES_PER_REQUEST,
    RESUMABLE_PREFIX,
    MiB,
    Settings,
    make_storage,
)

STATIC = Path(__file__).parent / "static"
TUS_JS = "tus.min.js"

settings = Settings.from_env()
documents = make_storage(settings)
# Images stay in memory whatever the backend: small, checked by content type, three at most.
images = MemoryStorage(
    name="image", count=3, config=Config(allowed_content_types=["image/*"], max_file_size=10 * 1024 * 1024)
)

app = FastAPI(
    title="filestore-fastapi example",
    summary="Documents stream straight into the configured storage backend.",
)
install_openapi(app)  # the upload fields show in /openapi.json and /docs


class StoredDocument(BaseModel):
    """What the page shows for one stored file."""

    name: str = Field(description="The stored name (a suffix is added if the name was taken).")
    original_name: str | None
    size: int
    sha256: str
    content_type: str
    download_url: str


class UploadSettings(BaseModel):
    """The limits the page tells the user before they upload."""

    backend: str
    field: str
    max_files_per_request: int
    max_file_size: int
    allowed_extensions: list[str]
    resumable_endpoint: str = Field(description="The tus 1.0 endpoint of the resumable mode.")
    resumable_client: bool = Field(description="Whether the app has tus-js-client to serve the page.")


class RecentUploads:
    """What the page can download back with ``FILESTORE_BACKEND=memory``: MemoryStorage hands
    the bytes to the handler and keeps nothing, so the app keeps the newest few itself."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._files: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0

    def keep(self, key: str, data: bytes) -> None:
        self._size -= len(self._files.pop(key, b""))
        self._files[key] = data
        self._size += len(data)
        while self._size > self.limit:
            self._size -= len(self._files.popitem(last=False)[1])

    def get(self, key: str) -> bytes | None:
        return self._files.get(key)


recent = RecentUploads(limit=32 * MiB)


def sha256_of(file: FileData) -> str:
    """The example keeps Config's default ``checksum="sha256"``: every stored file has one."""
    if file.sha256 is None:
        raise RuntimeError(f"{file.filename} has no sha256: the storage's checksum is not sha256")
    return file.sha256


def download_key(file: FileData) -> str:
    # Memory keys are free again once a request is over: the content tells two uploads apart.
    return f"{sha256_of(file)[:16]}/{file.filename}" if file.storage == "memory" else file.filename


def hidden(path: str) -> bool:
    return any(part.startswith(".") for part in path.split("/"))


class UploadedFiles(StaticFiles):
    """Static files that a browser never sniffs into another type (an upload posing as HTML),
    and never a hidden one: the resumable uploads keep their state in ``.tus/`` beside them."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        if hidden(Path(path).as_posix()):
            return PlainTextResponse("Not Found", status_code=404)
        return await super().get_response(path, scope)

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def describe(file: FileData) -> StoredDocument:
    # A cloud object's own URL needs a public bucket; the app's download route does not.
    url = file.url if settings.served_as_static_files and file.url else f"/files/{quote(download_key(file))}"
    return StoredDocument(
        name=file.filename.rsplit("/", 1)[-1],
        original_name=file.original_filename,
        size=file.size,
        sha256=sha256_of(file),
        content_type=file.content_type,
        download_url=url,
    )


@app.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC / "index.html")


@app.get("/api/settings")
async def upload_settings() -> UploadSettings:
    return UploadSettings(
        backend=settings.backend,
        field=FIELD,
        max_files_per_request=MAX_FILES_PER_REQUEST,
        max_file_size=settings.max_file_size,
        allowed_extensions=list(ALLOWED_EXTENSIONS),
        resumable_endpoint=RESUMABLE_PREFIX,
        resumable_client=(settings.tus_js_dist / TUS_JS).is_file(),
    )


@app.get("/vendor/tus.min.js", include_in_schema=False)
async def tus_js_client() -> Response:
    """tus-js-client for the page, from npm (``make run`` installs it), never from a CDN."""
    path = settings.tus_js_dist / TUS_JS
    if not path.is_file():
        message = "tus-js-client is not installed: run `make run` (it needs npm) or set FILESTORE_TUS_JS_DIST"
        return PlainTextResponse(message, status_code=404)
    return FileResponse(path, media_type="text/javascript")


def keep_for_download(file: FileData) -> None:
    """A resumable upload into memory: keep it for the download link, as ``/documents`` does."""
    if file.file is not None:
        recent.keep(download_key(file), file.file)


# Resumable uploads into the same storage, with the same limits and names as /documents.
# ``GET <upload URL>`` answers the stored file's FileData once the upload is complete.
app.include_router(
    tus_router(
        documents,
        prefix=RESUMABLE_PREFIX,
        on_complete=keep_for_download,
        lease=timedelta(seconds=settings.tus_lease_seconds),
    )
)


@app.post("/documents")
async def upload_documents(
    files: Annotated[list[FileData], Depends(documents)],
) -> list[StoredDocument]:
    """Store up to five documents sent as the multipart field `document`."""
    for file in files:
        if file.file is not None:  # a memory backend: keep it for the download link
            recent.keep(download_key(file), file.file)
    return [describe(file) for file in files]


@app.post("/images")
async def upload_images(files: Annotated[list[FileData], Depends(images)]) -> list[FileData]:
    """Keep up to three images (field `image`) in memory; the bytes stay out of the JSON."""
    return files


@app.get("/files/{key:path}", name="download")
async def download(key: str) -> Response:
    """Stream a stored file back; used by the backends that are not served as static files."""
    if hidden(key):  # the resumable uploads' state (.tus/) and temp objects are no download
        raise HTTPException(status_code=404, detail="file not found")
    if isinstance(documents, MemoryStorage):  # it keeps nothing: the app's own small cache does
        kept = recent.get(key)
        if kept is None:
            raise HTTPException(status_code=404, detail="file not found")
        name = key.rsplit("/", 1)[-1]
        media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        response: Response = Response(
            kept, media_type=media_type, headers={"Content-Disposition": attachment(name)}
        )
    else:
        response = await documents.download(key)  # 404 before any byte when the key is missing
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


app.mount("/static", StaticFiles(directory=STATIC), name="static")
if settings.served_as_static_files:
    Path(settings.destination).mkdir(parents=True, exist_ok=True)
    app.mount(LOCAL_BASE_URL, UploadedFiles(directory=settings.destination), name="media")
