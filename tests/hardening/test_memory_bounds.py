"""Reliability items 1 and 2: what one request can make the server hold in memory.

A file's bytes are bounded by bytes *and* objects, whatever the client's chunking: each
upload of the same 6 MiB file runs in a subprocess of its own, the body handed over in 1-, 7-
or 65,536-byte chunks (what a client sending that many bytes per TCP segment produces), and the peak RSS
growth of that process is compared with ``2 x (chunk_size + part_size) + 16 MiB``. Text
fields are bounded all together by ``max_form_memory``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from filestore_fastapi import Config, MemoryStorage, Storage
from tests.contract.conftest import ContractHarness
from tests.hardening.routes import upload_app

from .support import content_type, file_part, form, text_part

MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parents[2]
CHUNK_SIZE = MiB  # the default


def upload_in_chunks(storage: Storage, chunk: int, size: int) -> dict[str, int]:
    """Status and peak RSS growth of one upload of ``size`` bytes cut into ``chunk``-byte pieces."""
    config = storage.config.model_dump(exclude_defaults=True, mode="json")
    env = {**os.environ, "CHUNKED_CONFIG": json.dumps(config)}
    command = [sys.executable, "-m", "tests.hardening.apps.chunked_client", type(storage).__name__]
    done = subprocess.run(
        [*command, str(chunk), str(size)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, int] = json.loads(done.stdout)
    return result


SIZE = 6 * MiB  # more than one chunk_size batch, and two parts of PART_SIZE
PART_SIZE = 5 * MiB  # the smallest S3 allows: the pipelines and the GCS chunk hold data too


@pytest.mark.parametrize("chunk", [1, 7, 64 * 1024])
def test_upload_memory_is_bounded_whatever_the_chunking(harness: ContractHarness, chunk: int) -> None:
    # One-byte chunks: before, a batch of a million one-byte views (hundreds of MiB); ~30 s of parsing.
    if harness.name == "memory":
        pytest.skip("a memory storage holds the file itself: 16 MiB at most, by max_file_size")
    local = harness.name == "local"
    storage = harness.make("file") if local else harness.make("file", part_size=PART_SIZE)
    result = upload_in_chunks(storage, chunk, SIZE)
    assert result["status"] == 200
    bound = 2 * (CHUNK_SIZE + (0 if local else PART_SIZE)) + 16 * MiB  # local disk has no parts
    assert result["growth"] < bound, f"peak RSS grew {result['growth'] / MiB:.0f} MiB"


def post(client: TestClient, body: bytes) -> Any:
    return client.post("/upload", content=body, headers={"content-type": content_type()})


def test_text_fields_are_bounded_in_total_by_default() -> None:
    # Three fields, each well under max_field_size (1 MiB): 2.25 MiB together.
    client = TestClient(upload_app(MemoryStorage("file", required=False)))
    fields = [text_part(f"note{n}", b"x" * (768 * 1024)) for n in range(3)]
    reply = post(client, form(*fields))
    assert reply.status_code == 413
    [error] = reply.json()["detail"]
    assert error["loc"] == ["body", "note2"]
    assert "max_form_memory of 2097152 bytes" in error["msg"]


def test_many_empty_fields_count_against_max_form_memory() -> None:
    storage = MemoryStorage("file", required=False, config=Config(max_form_memory=64 * 1024))
    client = TestClient(upload_app(storage))
    reply = post(client, form(*[text_part(f"f{n}", b"") for n in range(500)]))
    assert reply.status_code == 413, "500 empty fields hold ~60 KiB of objects: not free"


def test_text_fields_within_max_form_memory_are_accepted() -> None:
    storage = MemoryStorage("file", required=False, config=Config(max_form_memory=4 * MiB))
    client = TestClient(upload_app(storage))
    fields = [text_part(f"note{n}", b"x" * (768 * 1024)) for n in range(3)]
    reply = post(client, form(*fields, file_part("file", "a.txt", b"a")))
    assert reply.status_code == 200
    assert [name for name, _ in reply.json()["fields"]] == ["note0", "note1", "note2"]
