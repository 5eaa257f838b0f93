"""The clouds on a realistic path (issue 13): every cloud storage, with its default config,
through ``benchmarks.latency_proxy.LatencyProxy`` (10 ms round trip, 25 MB/s a connection)
to its emulator, once: the path ``make bench`` measures (cases 7 to 9), driven here for
correctness only. Speed is measured there, never asserted here.

A file of a few parts round-trips byte for byte; S3 parts and Azure blocks go up on several
connections at once (the proxy counts them), GCS chunks one after another on one session.
"""

from __future__ import annotations

import random

import pytest

from benchmarks.latency_proxy import LatencyProxy
from filestore_fastapi import Config, FileData
from tests.contract.conftest import ContractHarness

from .routes import upload_app
from .support import asgi_post
from .test_faults import through_proxy, upload, upstream_port

MiB = 1024 * 1024
PARTS = 4
"""Full parts (S3, Azure) or chunks (GCS) of the file, and a short one: all of them held while
the name is claimed, then sent at once; about 1.4 s of link time on one connection."""

pytestmark = pytest.mark.large


@pytest.mark.parametrize("backend", ["s3", "azure", "gcs"])
async def test_a_file_crosses_the_latency_proxy_byte_for_byte(
    request: pytest.FixtureRequest, backend: str
) -> None:
    harness: ContractHarness = request.getfixturevalue(f"hardening_{backend}")
    storage = harness.make("file")
    part = Config().part_size
    data = random.Random(13).randbytes(PARTS * part + MiB)
    upstream = upstream_port(storage, harness)
    with LatencyProxy(("127.0.0.1", upstream), rtt=0.010, rate=25e6) as proxy:
        # fake-gcs-server names itself in resumable-upload Locations: keep those chunks on the proxy.
        proxy.rewrite = (f"127.0.0.1:{upstream}".encode(), f"127.0.0.1:{proxy.port}".encode())
        slow = through_proxy(storage, harness, proxy, upstream)  # type: ignore[arg-type]
        assert slow.config.parts_in_flight == Config().parts_in_flight

        reply = await asgi_post(upload_app(slow), upload(data, "far.bin"))

        assert reply.status == 200, reply.body
        [stored] = reply.json()["files"]
        connections = proxy.connections
    assert await harness.leftovers(storage) == [stored["filename"]]
    assert await harness.read_back(storage, FileData.model_validate(stored)) == data
    if backend in ("s3", "azure"):
        # The full parts went up at once, each on a connection of its own.
        assert connections >= PARTS, f"{connections} connections for {PARTS} parts in flight"
