"""``Storage``: a form field bound to a backend, which a route depends on; ``form_fields``
and ``FormModel`` for the text fields of the same body."""

# No ``from __future__ import annotations``: older FastAPI (0.115) reads the signature of a
# callable *instance* (``Depends(storage)``) without resolving string annotations.

import inspect
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from types import UnionType
from typing import Any, Generic, TypeVar, Union, get_args, get_origin

from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request
from starlette.responses import StreamingResponse

from .backends.base import Backend, StorageUnavailable
from .config import Config
from .download import download_response
from .filedata import FileData
from .resumable import remove_expired_uploads
from .session import UploadSession

ModelT = TypeVar("ModelT", bound=BaseModel)


class Storage(Backend):
    """A multipart file field, stored by a backend. Use it as ``Depends(storage)``.

    ``name`` is the form field, ``count`` the most files it takes, ``required`` whether a
    request without one is refused (422). All storages of a route share one pass over
    the body, so declaring several costs nothing extra. The backend comes next in the
    class's bases (``class S3Storage(Storage, S3Backend)``), built from ``config``.
    """

    def __init__(
        self, name: str, count: int = 1, required: bool = True, config: Config | None = None
    ) -> None:
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        self.name = name
        self.count = count
        self.required = required
        super().__init__(config)  # the backend's

    async def __call__(self, request: Request) -> AsyncIterator[list[FileData]]:
        session = UploadSession.of(request, storages_on_route(request, self))
        files = await session.files_for(self)
        session.hold()
        try:
            yield files
        except BaseException:
            # The handler raised, FastAPI refused another parameter, or a timeout or a
            # shutdown cancelled the request: it failed, so none of its files stay, and a
            # file one of them replaced is back (all or nothing, also after the body).
            await session.discard()
            raise
        await session.finish()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, count={self.count}, required={self.required})"

    async def download(self, key: str, filename: str | None = None) -> StreamingResponse:
        """A response that streams the object ``key`` with its content type, length and
        ``Content-Disposition: attachment`` (``filename``, else the key's last part).

        A missing key raises ``HTTPException(404)`` before any byte is sent.
        """
        return await download_response(self, key, filename)

    async def cleanup(self, older_than: timedelta = timedelta(days=1), **where: Any) -> int:
        """The backend's ``cleanup`` (``where`` are its options), then the resumable uploads
        (``tus_router``) whose ``Upload-Expires`` has passed; returns how many were removed."""
        removed: int = await super().cleanup(older_than, **where)
        return removed + await remove_expired_uploads(self)

    async def verify(self) -> None:
        """The backend's ``verify``, its message naming this storage. Call it at start-up
        (see ``verify_storages``) rather than learn at the first upload that it fails."""
        try:
            await super().verify()
        except StorageUnavailable as exc:
            raise StorageUnavailable(f"{self!r}: {exc}") from None


def _walk(dependant: Dependant) -> Iterator[Any]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _walk(sub)


ROUTE_STORAGES = "_filestore_fastapi_storages"
"""The attribute of a route that keeps its storages, found once per route, not per request."""


def storages_on_route(request: Request, requester: Storage | None = None) -> list[Storage]:
    """Every storage the matched route depends on, so one pass can serve them all."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if isinstance(dependant, Dependant):
        cached = getattr(route, ROUTE_STORAGES, None)
        if cached is None or cached[0] is not dependant:  # a route whose dependant was replaced
            storages: list[Storage] = []
            for call in _walk(dependant):
                if isinstance(call, Storage) and call not in storages:
                    storages.append(call)
            cached = (dependant, tuple(storages))
            setattr(route, ROUTE_STORAGES, cached)
        found = list(cached[1])
    else:
        found = []
    if requester is not None and requester not in found:
        found.append(requester)
    return found


async def form_fields(request: Request) -> ImmutableMultiDict[str, str]:
    """The text fields of the upload body: ``fields = Depends(form_fields)``.

    Reading them this way (instead of ``Form()``) keeps the body streaming.
    """
    session = UploadSession.of(request, storages_on_route(request))
    return await session.form()


class FormModel(Generic[ModelT]):
    """The text fields of an upload body, validated into a Pydantic model, and documented.

    ``meta: Annotated[Meta, Depends(FormModel(Meta))]`` is the streaming counterpart of
    FastAPI's ``Annotated[Meta, Form()]``: ``Form()`` would make FastAPI read (and spool)
    the whole body before any storage sees it. The fields appear in the route's OpenAPI
    body beside its files; invalid or missing fields answer 422 like FastAPI's own.
    """

    def __init__(self, model: type[ModelT]) -> None:
        self.model = model

    async def __call__(self, request: Request) -> ModelT:
        received = await form_fields(request)
        values: dict[str, Any] = {}
        for name, field in self.model.model_fields.items():
            key = field.alias or name
            # As FastAPI does for forms: an empty text input counts as not sent.
            sent = [value for value in received.getlist(key) if value != ""]
            if sent:
                values[key] = sent if _is_sequence(field) else sent[-1]
        try:
            return self.model.model_validate(values)
        except ValidationError as exc:
            # The text may follow the files in the body, so they are stored already.
            await UploadSession.of(request, storages_on_route(request)).discard()
            errors = exc.errors(include_url=False)
            raise RequestValidationError(
                [{**error, "loc": ("body", *error["loc"])} for error in errors]
            ) from None

    def __repr__(self) -> str:
        return f"FormModel({self.model.__name__})"


def _is_sequence(field: FieldInfo) -> bool:
    """``list[str]`` and ``list[str] | None`` take every value sent under the name."""
    candidates = (
        get_args(field.annotation) if _is_union(get_origin(field.annotation)) else (field.annotation,)
    )
    for candidate in candidates:
        origin = get_origin(candidate) or candidate
        if inspect.isclass(origin) and issubclass(origin, list | tuple | set | frozenset):
            return True
    return False


def _is_union(origin: Any) -> bool:
    return origin is Union or origin is UnionType
