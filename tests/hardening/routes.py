"""The upload route the hardening tests run against, in-process or under uvicorn.

No ``from __future__ import annotations``: FastAPI must evaluate the route's annotations,
which name the ``storage`` argument of ``upload_app``.
"""

from typing import Annotated, Any

from fastapi import Depends, FastAPI
from starlette.datastructures import ImmutableMultiDict

from filestore_fastapi import FileData, Storage, form_fields


def upload_app(storage: Storage) -> FastAPI:
    """``POST /upload`` depending on ``storage``; answers the stored files and text fields."""
    app = FastAPI()
    app.state.calls = 0

    @app.post("/upload")
    async def upload(
        files: Annotated[list[FileData], Depends(storage)],
        fields: Annotated[ImmutableMultiDict[str, str], Depends(form_fields)],
    ) -> dict[str, Any]:
        app.state.calls += 1
        return {"files": [f.model_dump(mode="json") for f in files], "fields": list(fields.multi_items())}

    return app
