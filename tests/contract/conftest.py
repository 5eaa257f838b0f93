"""The ``harness`` fixture: every contract test runs once per backend that has a harness.

A backend takes part when ``tests/contract/harness_<backend>.py`` exists. Each harness is
opened at most once per session, and only when a test asks for it, so selecting
``-k memory`` never starts an emulator.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, cast

import pytest

from filestore_fastapi import FileData, Storage

BACKENDS = ("local", "memory", "s3", "gcs", "azure")
#: Stores that keep nothing once the request is over (the bytes were in ``FileData.file``):
#: their ``leftovers`` is always empty and ``read_back`` needs the handler's ``FileData``.
KEEPS_NOTHING = frozenset({"memory"})
HERE = Path(__file__).parent


class ContractHarness(Protocol):
    """What each ``harness_<backend>.Harness`` provides (see the module of any backend).

    Its coroutines run on the event loop of the test's ``TestClient``, a new loop per test,
    so a harness must not keep loop-bound clients between calls.
    """

    name: str

    def make(self, field: str, *, count: int = 1, required: bool = True, **config: Any) -> Storage:
        """A storage on a fresh, isolated destination or key prefix; ``config`` goes into ``Config``."""
        ...

    async def read_back(self, storage: Storage, file: FileData) -> bytes:
        """The object's bytes straight from the store, not through ``storage.open``; raises if absent."""
        ...

    async def leftovers(self, storage: Storage) -> list[str]:
        """Everything under the storage's destination, temp files and unfinished uploads included."""
        ...

    async def stored_content_type(self, storage: Storage, file: FileData) -> str | None:
        """The content type the store keeps for the object; None if the store keeps none."""
        ...


def _session_harness(backend: str) -> Callable[[], Iterator[ContractHarness]]:
    """A session fixture ``<backend>_harness``; the module is imported only when it is first used."""

    def opened() -> Iterator[ContractHarness]:
        module = importlib.import_module(f"{__package__}.harness_{backend}")
        open_harness: Callable[[], contextlib.AbstractContextManager[ContractHarness]] = module.open_harness
        with open_harness() as harness:
            assert harness.name == backend, f"harness_{backend}.py names itself {harness.name!r}"
            yield harness

    opened.__name__ = f"{backend}_harness"
    return pytest.fixture(scope="session", name=f"{backend}_harness")(opened)


for _backend in BACKENDS:
    globals()[f"{_backend}_harness"] = _session_harness(_backend)


@pytest.fixture(params=BACKENDS)
def harness(request: pytest.FixtureRequest) -> ContractHarness:
    return cast(ContractHarness, request.getfixturevalue(f"{request.param}_harness"))
