"""Case 8, Azure blocks on a realistic path (issue 13, target 2): AzureStorage under uvicorn
(default config: 8 MiB blocks, ``parts_in_flight`` blocks at once) against the SDK's own
``BlobClient.upload_blob(file, max_concurrency=10)`` (its default 4 MiB blocks; 10 is boto3's
thread count, and as many blocks as ours in flight), both through ``LatencyProxy`` to Azurite.

Azurite serves HTTPS here, as Azure does, with a certificate made for the run (the clients
trust it through ``REQUESTS_CA_BUNDLE``): over HTTPS AzureStorage leaves the blocks' MD5 to
TLS, as the SDK does, so what is compared is what a user of either gets from Azure.

Azurite keeps the extents of deleted blobs in memory for the whole run (its limit is half the
machine's memory, 12 GiB here): two contenders of five 1 GiB rounds fit, a third does not.

Standalone: ``python -m benchmarks.azure_latency [--size-mib 1024] [--runs 5]``.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import sys
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from importlib.metadata import version
from pathlib import Path
from typing import Any

from filestore_fastapi import Config

from . import cloud_latency
from .cases import Bench, CaseResult, GiB
from .cloud_latency import SLACK, Mine, Plan, proxy_to, sdk_sample, title
from .measure import Contender, MiB, Sample

PART_SIZE = Config().part_size
IN_FLIGHT = Config().parts_in_flight
SDK_CONCURRENCY = 10
SDK = Contender(
    "azure-sdk", f"azure-storage-blob upload_blob(max_concurrency={SDK_CONCURRENCY})", "", "Azure SDK"
)
MINE = Contender("azure", f"AzureStorage, parts_in_flight={IN_FLIGHT} (default)", "cloud_latency", "Azure")


def certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files in ``directory``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "azurite.pem", directory / "azurite.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def azurite_https(cert: Path, key: Path) -> Any:
    """``tests.emulators.Azurite`` serving HTTPS with ``cert``."""
    from tests.emulators import Azurite, EmulatorError

    class AzuriteHttps(Azurite):
        @property
        def endpoint_url(self) -> str:
            return f"https://{self.host}:{self.port}"

        def _command(self, workdir: Path) -> list[str]:
            return [*super()._command(workdir), "--cert", str(cert), "--key", str(key)]

        def _wait_ready(self) -> None:
            context = ssl.create_default_context(cafile=str(cert))
            url = self.endpoint_url + self.ready_path
            deadline = time.monotonic() + self.start_timeout
            while time.monotonic() < deadline:
                try:
                    urllib.request.urlopen(url, timeout=2, context=context).close()
                    return
                except urllib.error.HTTPError:
                    return  # any answer: it is up
                except OSError:
                    time.sleep(0.1)
            raise EmulatorError(f"azurite did not answer on {url}:\n{self.output()}")

    return AzuriteHttps()


def azure_latency(bench: Bench, stack: ExitStack, nominal: int = GiB) -> CaseResult:
    from azure.storage.blob import BlobServiceClient

    cert, key = certificate(bench.scratch / "tls")
    azurite = stack.enter_context(azurite_https(cert, key))
    proxy = proxy_to(stack, azurite.endpoint_url)
    container_name = "bench-latency"
    direct = BlobServiceClient.from_connection_string(azurite.connection_string, connection_verify=str(cert))
    container = direct.create_container(container_name)  # direct: emptying it is not measured
    through_proxy = azurite.connection_string.replace(azurite.endpoint_url, f"https://127.0.0.1:{proxy.port}")
    trust = {"REQUESTS_CA_BUNDLE": str(cert)}
    env = {
        **trust,
        "BENCH_CLOUD": "azure",
        "BENCH_AZURE_CONNECTION_STRING": through_proxy,
        "BENCH_AZURE_CONTAINER": container_name,
    }
    running = cloud_latency.start(stack, bench, MINE, env, 3 * PART_SIZE)
    size = bench.size(nominal)
    path = bench.file(size)

    def empty() -> None:
        for item in container.list_blobs(include=["uncommittedblobs"]):
            container.delete_blob(item.name)

    def baseline() -> Sample:
        arguments = [str(path), through_proxy, container_name, str(SDK_CONCURRENCY)]
        return sdk_sample(SDK.key, size, ["benchmarks.cloud_baseline", "azure", *arguments], trust)

    bound = (IN_FLIGHT + 1) * PART_SIZE + SLACK
    return cloud_latency.run(
        bench,
        Plan(
            key="case8",
            title=title(8, "Azure blocks (Azurite)", size, PART_SIZE),
            size=size,
            sdk=SDK,
            run_sdk=baseline,
            mine=[Mine(MINE, running, bound, f"({IN_FLIGHT} + 1) x part_size + 32 MiB")],
            empty=empty,
            default=MINE.key,
            notes=[
                "Azurite serves HTTPS (a certificate made for the run): TLS checks every block, for both.",
                "The SDK uploads in its default 4 MiB blocks, AzureStorage in 8 MiB ones (part_size).",
                f"azure-storage-blob {version('azure-storage-blob')}, Azurite 3 (in memory).",
            ],
        ),
    )


def main(argv: list[str]) -> int:
    return cloud_latency.standalone(argv, azure_latency, GiB // MiB, "azure_latency")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
