"""``verify_storages``: learn at start-up, not at the first upload, that a store is unusable."""

from __future__ import annotations

from starlette.applications import Starlette

from .backends.base import StorageUnavailable
from .dependency import Storage
from .openapi import _api_routes, _declared_fields, check_upload_routes


async def verify_storages(app: Starlette, *storages: Storage) -> None:
    """``verify()`` every storage the app's routes depend on, and ``storages`` (a plain
    Starlette app's, which no route declares), and check that no route declares one
    field twice. Raises one ``StorageUnavailable`` listing every problem.

    For a FastAPI lifespan::

        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            await verify_storages(app)
            yield
    """
    check_upload_routes(app.routes)
    found = [s for route in _api_routes(app.routes) for s in _declared_fields(route.dependant)[0]]
    problems: list[str] = []
    for storage in dict.fromkeys([*found, *storages]):
        try:
            await storage.verify()
        except StorageUnavailable as exc:
            problems.append(str(exc))
        except NotImplementedError:
            continue  # a backend of the application's own, without a check
    if problems:
        raise StorageUnavailable("; ".join(problems))
