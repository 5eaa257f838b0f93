"""Fixtures of the hardening suite: the contract harnesses (one per backend, opened once per
session and only when a test asks), and an in-process app around any storage."""

import contextlib
import importlib
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI
from starlette.datastructures import ImmutableMultiDict

from filestore_fastapi import FileData, Storage, form_fields
from tests.contract.conftest import ContractHarness

CLOUDS = ("s3", "gcs", "azure")
BACKENDS = ("local", "memory", *CLOUDS)


def _opened(backend: str) -> Callable[[], Iterator[ContractHarness]]:
    def opened() -> Iterator[ContractHarness]:
        module = importlib.import_module(f"tests.contract.harness_{backend}")
        open_harness: Callable[[], contextlib.AbstractContextManager[ContractHarness]] = module.open_harness
        with open_harness() as harness:
            yield harness

    return opened


for _backend in BACKENDS:
    globals()[f"hardening_{_backend}"] = pytest.fixture(scope="session", name=f"hardening_{_backend}")(
        _opened(_backend)
    )


@pytest.fixture(params=BACKENDS)
def harness(request: pytest.FixtureRequest) -> ContractHarness:
    """Every backend, through its contract harness."""
    harness: ContractHarness = request.getfixturevalue(f"hardening_{request.param}")
    return harness


@pytest.fixture(params=CLOUDS)
def cloud(request: pytest.FixtureRequest) -> ContractHarness:
    """Every cloud backend, through its contract harness."""
    harness: ContractHarness = request.getfixturevalue(f"hardening_{request.param}")
    return harness


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
