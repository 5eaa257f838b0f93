"""The ``Storage`` base a route depends on; each backend adds a writer and a few lines."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar

from fastapi.dependencies.models import Dependant
from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request

from .backends.base import Writer, WriteRequest
from .config import Config
from .filedata import FileData
from .session import UploadSession


class Storage(ABC):
    """A multipart file field, stored by one backend. Use it as ``Depends(storage)``.

    ``name`` is the form field, ``count`` the most files it takes, ``required`` whether a
    request without one is refused (422). All storages of a route share one pass over
    the body, so declaring several costs nothing extra.
    """

    storage_name: ClassVar[str]

    def __init__(
        self, name: str, count: int = 1, required: bool = True, config: Config | None = None
    ) -> None:
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        self.name = name
        self.count = count
        self.required = required
        self.config = config if config is not None else Config()

    async def __call__(self, request: Request) -> list[FileData]:
        session = UploadSession.of(request, storages_on_route(request, self))
        return await session.files_for(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, count={self.count}, required={self.required})"

    @abstractmethod
    async def open_writer(self, target: WriteRequest) -> Writer:
        """Start storing one file; nothing is visible until the writer commits."""

    @abstractmethod
    async def delete(self, file: FileData | str) -> None:
        """Remove a stored file, given its ``FileData`` or its key (relative name)."""

    @abstractmethod
    def open(self, key: str) -> AsyncIterator[bytes]:
        """Stream a stored file's bytes, e.g. into a ``StreamingResponse``."""


def _walk(dependant: Dependant) -> Iterator[Any]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _walk(sub)


def storages_on_route(request: Request, requester: Storage | None = None) -> list[Storage]:
    """Every storage the matched route depends on, so one pass can serve them all."""
    found: list[Storage] = []
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if isinstance(dependant, Dependant):
        for call in _walk(dependant):
            if isinstance(call, Storage) and call not in found:
                found.append(call)
    if requester is not None and requester not in found:
        found.append(requester)
    return found


async def form_fields(request: Request) -> ImmutableMultiDict[str, str]:
    """The text fields of the upload body: ``fields = Depends(form_fields)``.

    Reading them this way (instead of ``Form()``) keeps the body streaming.
    """
    session = UploadSession.of(request, storages_on_route(request))
    return await session.form()
