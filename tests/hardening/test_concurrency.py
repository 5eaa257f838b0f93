"""Item 6: 200 concurrent uploads of one file name against ``uvicorn --workers 2``.

Every upload gets a name of its own (``same.bin``, ``same-1.bin``, ...), and every stored
object holds exactly the bytes its own client sent: no upload replaced, truncated or mixed
into another, whichever worker process or thread claimed the name. Locally and, with
``overwrite=False``, on S3 and Azure (and GCS, which claims names the same way).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from filestore_fastapi import FileData, Storage
from tests.contract.conftest import ContractHarness
from tests.e2e.server import run_uvicorn
from tests.httpclient import httpx

from .support import content_type, file_part, form

UPLOADS = 200
APP = "tests.hardening.apps.upload_app:app"


def contents() -> list[bytes]:
    """Distinct contents of distinct sizes, so a mix-up changes a length as well as bytes."""
    return [os.urandom(16 * 1024 + 37 * i) for i in range(UPLOADS)]


async def upload_all(url: str, payloads: list[bytes]) -> list[dict[str, Any]]:
    limits = httpx.Limits(max_connections=UPLOADS, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:

        async def one(data: bytes) -> dict[str, Any]:
            body = form(file_part("file", "same.bin", data))
            response = await client.post("/upload", content=body, headers={"content-type": content_type()})
            assert response.status_code == 200, response.text
            (stored,) = response.json()["files"]
            assert stored["sha256"] == hashlib.sha256(data).hexdigest()
            return dict(stored)

        return await asyncio.gather(*(one(data) for data in payloads))


def serve(backend: str, config: dict[str, Any]) -> Any:
    env = {"HARDENING_BACKEND": backend, "HARDENING_CONFIG": json.dumps(config)}
    return run_uvicorn(APP, env, workers=2)


async def check_distinct_and_intact(
    stored: list[dict[str, Any]], payloads: list[bytes], read: Callable[[dict[str, Any]], Awaitable[bytes]]
) -> None:
    names = [entry["filename"] for entry in stored]
    assert len(set(names)) == UPLOADS, "two uploads were given the same name"
    for entry, data in zip(stored, payloads, strict=True):
        assert await read(entry) == data, f"{entry['filename']} does not hold what its client sent"


async def test_local_two_workers(tmp_path: Path) -> None:
    destination = tmp_path / "uploads"
    payloads = contents()
    with serve("local", {"destination": str(destination)}) as server:
        stored = await upload_all(server.url, payloads)

    async def read(entry: dict[str, Any]) -> bytes:
        return (destination / entry["filename"]).read_bytes()

    await check_distinct_and_intact(stored, payloads, read)
    assert sorted(p.name for p in destination.iterdir()) == sorted(e["filename"] for e in stored)


@pytest.mark.parametrize("backend", ["s3", "azure", "gcs"])
async def test_cloud_two_workers_never_replace(backend: str, request: pytest.FixtureRequest) -> None:
    harness: ContractHarness = request.getfixturevalue(f"hardening_{backend}")
    storage: Storage = harness.make("file", overwrite=False)
    payloads = contents()
    with serve(backend, storage.config.model_dump(mode="json", exclude_unset=True)) as server:
        stored = await upload_all(server.url, payloads)

    async def read(entry: dict[str, Any]) -> bytes:
        return await harness.read_back(storage, FileData.model_validate(entry))

    await check_distinct_and_intact(stored, payloads, read)
    assert sorted(await harness.leftovers(storage)) == sorted(e["filename"] for e in stored)
