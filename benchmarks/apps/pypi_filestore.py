"""(c) The ``filestore`` package from PyPI (2.0.0) with its ``LocalEngine``.

``FileStore`` lets Starlette parse (and spool) the whole form first, then copies each
spooled file to a temp file it renames into place. It reports failures in the returned
``Store`` rather than raising, so the routes turn a failed store into an HTTP error.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException
from filestore import FileStore, LocalEngine, Store

from .settings import DESTINATION, LIMIT, MANY

engine = LocalEngine(base_dir=DESTINATION)
one_store = FileStore("file", required=True, engine=engine)
many_store = FileStore("file", count=MANY, required=True, engine=engine)
limited_store = FileStore("file", required=True, engine=engine, config={"max_file_size": LIMIT})

app = FastAPI()


def _answer(store: Store, failure_status: int) -> dict[str, int]:
    if not store:
        raise HTTPException(failure_status, store.message)
    return {"size": store.total_size}


@app.post("/one")
async def one(store: Annotated[Store, Depends(one_store)]) -> dict[str, int]:
    return _answer(store, 500)


@app.post("/many")
async def many(store: Annotated[Store, Depends(many_store)]) -> dict[str, int]:
    return _answer(store, 500)


@app.post("/limited")
async def limited(store: Annotated[Store, Depends(limited_store)]) -> dict[str, int]:
    return _answer(store, 413)
