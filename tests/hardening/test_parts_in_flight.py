"""Parts in flight (issue 13): S3 parts and Azure blocks of one file go up ``parts_in_flight``
at a time, on the real emulators.

A file of eight 5 MiB parts round-trips byte for byte with one and with four in flight,
also when the parts finish out of order (even parts made slow); a part that fails (the
store answering 500, or resetting the connection) fails the request cleanly, the other
parts waited out before the clean-up, and nothing is left; and the memory of one upload
stays within ``(parts_in_flight + 1) x part_size + 32 MiB`` with the default ``parts_in_flight``
and ``part_size``, every part in flight at once, measured in a subprocess as in
``test_memory_bounds`` (``python -m tests.hardening.test_parts_in_flight``).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import filestore_fastapi
from filestore_fastapi import Config, FileData, GCSStorage, Storage
from filestore_fastapi.backends.azure import AzureBackend, AzureWriter
from filestore_fastapi.backends.parts import PartReader
from filestore_fastapi.backends.s3 import S3Backend, S3Writer
from tests.contract.conftest import ContractHarness

from .apps.chunked_client import post_in_chunks, vm_kib
from .proxy import FaultyProxy
from .routes import upload_app
from .support import asgi_post
from .test_faults import assert_clean_500, secrets_of, through_proxy, upload, upstream_port

MiB = 1024 * 1024
PART = 5 * MiB
SIZE = 7 * PART + 3 * MiB  # eight parts, the last one short
ROOT = Path(__file__).resolve().parents[2]
WRITERS: dict[str, tuple[type[Any], str, str]] = {
    "s3": (S3Writer, "_send_part", "_upload_id"),
    "azure": (AzureWriter, "_stage_part", "_blob"),
}
"""A writer class, its blocking part call, and what its claim (``start``) sets."""


def data_of(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


class Parts:
    """Wraps a writer's blocking part call: records the order parts finish in and how many
    run at once, makes the parts ``slow`` picks sleep first, and fails the one ``fail`` names."""

    def __init__(
        self, send: Callable[..., None], slow: Callable[[int], float] = lambda number: 0.0, fail: int = 0
    ) -> None:
        self._send = send
        self._slow = slow
        self._fail = fail
        self._lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.finished: list[int] = []
        self.unclaimed: list[int] = []
        """Parts that started before the claim had finished."""
        self.last_end = 0.0

    def __call__(self, writer: Any, pieces: list[Any], number: int, claimed: bool = True) -> None:
        with self._lock:
            if not claimed:
                self.unclaimed.append(number)
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(self._slow(number))
            if number == self._fail:
                raise RuntimeError(f"part {number} failed")
            self._send(writer, pieces, number)
        finally:
            with self._lock:
                self.running -= 1
                self.finished.append(number)
                self.last_end = time.monotonic()


def wrap_parts(monkeypatch: pytest.MonkeyPatch, backend: str, **options: Any) -> Parts:
    writer, method, claim = WRITERS[backend]
    parts = Parts(getattr(writer, method), **options)

    def send(self: Any, pieces: list[Any], number: int) -> None:
        parts(self, pieces, number, getattr(self, claim) is not None)

    monkeypatch.setattr(writer, method, send)
    return parts


def slow_even(number: int) -> float:
    return 0.4 if number % 2 == 0 else 0.0


@pytest.mark.parametrize("in_flight", [1, 4])
@pytest.mark.parametrize("backend", ["s3", "azure"])
@pytest.mark.parametrize("out_of_order", [False, True], ids=["as-they-come", "even-parts-slow"])
async def test_eight_parts_round_trip_byte_exactly(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
    in_flight: int,
    out_of_order: bool,
) -> None:
    harness: ContractHarness = request.getfixturevalue(f"hardening_{backend}")
    storage = harness.make("file", part_size=PART, parts_in_flight=in_flight)
    parts = wrap_parts(monkeypatch, backend, slow=slow_even if out_of_order else lambda number: 0.0)
    data = data_of(SIZE, seed=in_flight * 2 + out_of_order)

    body = upload(data, "eight.bin")
    # In messages of an odd size, as a server reads them: parts made of many pieces.
    messages = [body[start : start + 99_991] for start in range(0, len(body), 99_991)]

    reply = await asgi_post(upload_app(storage), messages)

    assert reply.status == 200, reply.body
    [stored] = reply.json()["files"]
    assert await harness.read_back(storage, FileData.model_validate(stored)) == data
    assert sorted(parts.finished) == list(range(1, 9))
    assert parts.unclaimed == [], "every part must wait for the claim of the name"
    assert parts.most <= in_flight
    if in_flight == 1:
        assert parts.finished == list(range(1, 9))
    elif out_of_order:
        assert parts.most >= 2
        assert parts.finished != sorted(parts.finished), "the slow even parts should have finished late"
    assert await harness.leftovers(storage) == [stored["filename"]]


@pytest.mark.parametrize("backend", ["s3", "azure"])
async def test_a_failing_part_waits_out_the_others_before_the_clean_up(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    harness: ContractHarness = request.getfixturevalue(f"hardening_{backend}")
    storage = harness.make("file", part_size=PART, parts_in_flight=4)
    # Part 3 fails at once while 2 and 4 are still going up (slowly): their uploads must not
    # land after the clean-up (an aborted S3 upload, discarded Azure blocks).
    parts = wrap_parts(monkeypatch, backend, slow=slow_even, fail=3)
    clean_ups: list[float] = []
    backend_class, clean_up = (S3Backend, "_abort_or_retry") if backend == "s3" else (AzureBackend, "discard")
    original = getattr(backend_class, clean_up)

    def recorded(self: Any, *args: Any) -> Any:
        clean_ups.append(time.monotonic())
        return original(self, *args)

    monkeypatch.setattr(backend_class, clean_up, recorded)

    reply = await asgi_post(upload_app(storage), upload(data_of(SIZE, seed=7), "failing.bin"))

    assert_clean_500(reply)
    assert 2 in parts.finished and 3 in parts.finished
    assert clean_ups and min(clean_ups) >= parts.last_end, "a part landed after the clean-up began"
    assert await harness.leftovers(storage) == []


INTERNAL = (
    b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\nConnection: close\r\n"
    b"Content-Length: 0\r\n\r\n"
)


@pytest.mark.parametrize("answer", [INTERNAL, None], ids=["500", "reset"])
@pytest.mark.parametrize("backend", ["s3", "azure"])
async def test_a_part_the_store_fails_fails_the_request_cleanly(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, backend: str, answer: bytes | None
) -> None:
    harness: ContractHarness = request.getfixturevalue(f"hardening_{backend}")
    storage = harness.make("file", part_size=PART, parts_in_flight=4, max_retries=0)
    upstream = upstream_port(storage, harness)
    with FaultyProxy(("127.0.0.1", upstream)) as proxy:
        faulty = through_proxy(storage, harness, proxy, upstream)
        app = upload_app(faulty)

        def fault_from_part_three(number: int) -> float:
            # The name is claimed and the first parts are up; from now on every request
            # carrying more than 1 MiB (a part, not an abort) is answered 500 or reset.
            if number >= 3:
                proxy.cut_after, proxy.answer = MiB, answer
            return 0.0

        wrap_parts(monkeypatch, backend, slow=fault_from_part_three)

        reply = await asgi_post(app, upload(data_of(SIZE, seed=11), "faulty.bin"))

        assert proxy.cuts >= 1, "the fault never fired"
        assert_clean_500(reply, *secrets_of(faulty, proxy))
        assert await harness.leftovers(storage) == []


def test_parts_in_flight_is_a_key_of_s3_and_azure_only() -> None:
    assert Config().parts_in_flight == 10
    with pytest.raises(ValueError):
        Config(parts_in_flight=0)
    with pytest.raises(TypeError, match="parts_in_flight"):
        GCSStorage("file", config=Config(GCP_BUCKET_NAME="b", parts_in_flight=2))


# -- memory: one upload in a subprocess of its own ---------------------------------------------


@pytest.mark.parametrize("backend", ["s3", "azure"])
def test_memory_with_the_default_parts_in_flight_is_bounded(
    request: pytest.FixtureRequest, backend: str
) -> None:
    """The bound of ``Config.parts_in_flight`` at its worst: the default number of parts in
    flight, of the default ``part_size``, every one of them held up at once (each part waits
    until all of them are, then ``HOLD`` seconds more, as on a slow path), the next one filling
    behind them."""
    harness: ContractHarness = request.getfixturevalue(f"hardening_{backend}")
    defaults = Config()
    in_flight, part = defaults.parts_in_flight, defaults.part_size
    storage = harness.make("file")
    assert (storage.config.parts_in_flight, storage.config.part_size) == (in_flight, part)
    result = upload_in_subprocess(storage, (in_flight + 3) * part + MiB, hold=HOLD)
    assert result["status"] == 200
    assert result["most_in_flight"] == in_flight, (
        "not every part was in flight at once: the bound is untested"
    )
    bound = (in_flight + 1) * part + 32 * MiB
    assert result["growth"] <= bound, (
        f"peak RSS grew {result['growth'] / MiB:.1f} MiB, over {bound / MiB:.0f}"
    )


HOLD = 0.3
"""Seconds the parts wait, once all are in flight, before they go up in the memory test."""


def upload_in_subprocess(storage: Storage, size: int, hold: float = 0.0) -> dict[str, int]:
    """Status and peak RSS growth of one upload of ``size`` bytes, as ``upload_in_chunks`` of
    ``test_memory_bounds`` measures them, except that the body is generated while it is sent
    (that one builds it in the measured process first, which would count it twice). Each part
    waits, before it is sent, until ``parts_in_flight`` parts are (a barrier: the first parts only,
    so that a slow machine cannot let one finish before the last starts), then ``hold`` seconds."""
    config = storage.config.model_dump(exclude_defaults=True, mode="json")
    env = {**os.environ, "CHUNKED_CONFIG": json.dumps(config)}
    command = [
        sys.executable,
        "-m",
        "tests.hardening.test_parts_in_flight",
        type(storage).__name__,
        str(size),
        str(hold),
    ]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, int] = json.loads(done.stdout)
    return result


async def _measure(storage: Storage, size: int, hold: float) -> dict[str, int]:
    app = upload_app(storage)
    # Warm-up with two parts: imports, the SDK's models, a client; small, so that what the
    # measured upload holds is not memory the allocator kept from it.
    await post_in_chunks(app, storage.config.part_size + 64 * 1024, 64 * 1024)
    writer, method, _ = WRITERS[storage.storage_name]
    in_flight = storage.config.parts_in_flight
    together = threading.Barrier(in_flight)

    def slow(number: int) -> float:
        if hold and number <= in_flight:
            together.wait(timeout=60)
        return hold

    parts = Parts(getattr(writer, method), slow=slow)
    setattr(writer, method, lambda self, pieces, number: parts(self, pieces, number))
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM starts again from VmRSS
    before = vm_kib("VmRSS")
    status = await post_in_chunks(app, size, 64 * 1024)
    return {"status": status, "growth": (vm_kib("VmHWM") - before) * 1024, "most_in_flight": parts.most}


def main() -> None:
    storage_class, size, hold = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    config = Config(**json.loads(os.environ.get("CHUNKED_CONFIG", "{}")))
    storage: Storage = getattr(filestore_fastapi, storage_class)("file", config=config)
    print(json.dumps(asyncio.run(_measure(storage, size, hold))))


if __name__ == "__main__":
    main()


@pytest.mark.parametrize(("scheme", "checked"), [("http", True), ("https", False), ("HTTPS", False)])
def test_azure_blocks_carry_their_md5_over_plain_http_only(scheme: str, checked: bool) -> None:
    """Over HTTPS TLS already detects a changed byte (the SDK's docs of ``validate_content``);
    MD5 of every block would cost about 3 s of CPU a GiB."""
    calls: list[dict[str, Any]] = []

    class Blob:
        def stage_block(self, block_id: str, body: Any, **options: Any) -> None:
            calls.append({"id": block_id, "data": body.read(), **options})

    blob = Blob()
    blob.scheme = scheme  # type: ignore[attr-defined]
    writer: Any = type("Writer", (), {})()
    writer._blob, writer._staged, writer._block_id = blob, set(), lambda index: f"block-{index}"

    AzureWriter._stage_part(writer, [b"ab", memoryview(b"cd")], 3)

    [call] = calls
    assert (call["id"], call["data"], call["length"]) == ("block-3", b"abcd", 4)
    assert call["validate_content"] is checked
    assert writer._staged == {3}


def test_a_part_reads_as_views_of_its_pieces_and_rewinds() -> None:
    """``read(n)`` hands out views of the pieces (no copy in the sending thread), never past a
    piece's end, ``b""`` at the end; ``seek`` rewinds for a retry; ``read()`` is the rest."""
    pieces = [b"abc", memoryview(b"defgh")[1:], b"ij"]
    reader = PartReader(list(pieces))
    blocks = []
    while block := reader.read(2):
        assert isinstance(block, memoryview | bytes)
        blocks.append(bytes(block))
    assert blocks == [b"ab", b"c", b"ef", b"gh", b"ij"]
    assert reader.read(2) == b""
    assert reader.seek(4) == 4
    assert reader.read() == b"fghij"
    reader.seek(0)
    target = bytearray(10)
    assert reader.readinto(target) == 9
    assert bytes(target[:9]) == b"abcefghij"
