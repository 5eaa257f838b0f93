"""``tus_router`` on a ``LocalStorage`` at ``/files``: the tus side of the tus bench case."""

from __future__ import annotations

from fastapi import FastAPI

from filestore_fastapi import Config, LocalStorage, tus_router

from .settings import DESTINATION

storage = LocalStorage("file", config=Config(destination=DESTINATION))

app = FastAPI()
app.include_router(tus_router(storage, prefix="/files"))
