"""Requests that fail *after* their files were committed, the ways the reliability tests need:
the handler raising, a later file of another storage failing at its commit, an invalid form
after the file, the handler cancelled (a timeout middleware, a shutdown).

No ``from __future__ import annotations``: FastAPI must evaluate the routes' ``Depends``.
"""

import asyncio
from typing import Annotated

import pytest
from fastapi import Depends, FastAPI
from pydantic import BaseModel

from filestore_fastapi import FileData, FormModel, Storage
from tests.httpclient import httpx

from .support import content_type, file_part, form, text_part

HOWS = ("handler raises", "a later file fails", "the form is invalid", "the handler is cancelled")


class Note(BaseModel):
    copies: int


def in_process(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def fail_after_commit(storage: Storage, broken: Storage, how: str, filename: str, data: bytes) -> None:
    """POST ``data`` as ``filename`` (image/png) to a route that fails ``how``, after the commit.
    ``broken`` is a storage of the field ``other`` whose commit fails (a missing bucket)."""
    app = FastAPI()
    body = [file_part("file", filename, data, "image/png")]

    if how == "handler raises":

        @app.post("/fail")
        async def raises(files: Annotated[list[FileData], Depends(storage)]) -> None:
            raise RuntimeError("the handler failed after the files were stored")

    elif how == "a later file fails":
        body.append(file_part(broken.name, "other.bin", b"never stored"))

        @app.post("/fail")
        async def two_storages(
            files: Annotated[list[FileData], Depends(storage)],
            others: Annotated[list[FileData], Depends(broken)],
        ) -> None:
            raise AssertionError("never reached")

    elif how == "the form is invalid":
        body.append(text_part("copies", b"many"))  # after the file: refused once the file is stored

        @app.post("/fail")
        async def validated(
            files: Annotated[list[FileData], Depends(storage)],
            note: Annotated[Note, Depends(FormModel(Note))],
        ) -> None:
            raise AssertionError("never reached")

    else:
        assert how == "the handler is cancelled"

        @app.post("/fail")
        async def hangs(files: Annotated[list[FileData], Depends(storage)]) -> None:
            await asyncio.sleep(3600)

    async with in_process(app) as client:
        post = client.post("/fail", content=form(*body), headers={"content-type": content_type()})
        if how == "the handler is cancelled":
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(post, timeout=2)  # a timeout middleware, a shutdown
        else:
            reply = await post
            assert reply.status_code in (422, 500), reply.text
