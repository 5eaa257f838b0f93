"""Fixtures of the hardening suite: the contract harnesses (one per backend, opened once per
session and only when a test asks), and an in-process app around any storage."""

import contextlib
import importlib
from collections.abc import Callable, Iterator

import pytest

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
