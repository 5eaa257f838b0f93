"""The example page's resumable mode in headless Chromium: npm's tus-js-client against the
example app under a real uvicorn.

The app serves tus-js-client (``make test`` installs it under ``.tools``); the browser
reaches nothing but the app on 127.0.0.1 (anything else is refused, and none is asked for).
Each upload is a 2 MiB file on disk in 256 KiB PATCHes; the sha256 the page shows, the one
``GET <upload URL>`` answers and the stored object's are the source's.

- Pause stops the upload (the page's count and the server's offset), Resume goes on from
  the server's offset; ``parallelUploads: 2`` is two partial uploads and a final one.
- The server SIGKILLed mid-PATCH and restarted on its port: tus-js-client retries and goes
  on, on local disk, S3 (moto), GCS (fake-gcs-server) and Azure (Azurite); a connection
  reset mid-PATCH by a proxy: it goes on from the bytes the server kept.
- A reloaded page resumes the upload the browser remembers (``findPreviousUploads``).
- A refused file shows the server's reason; ``overridePatchMethod`` works; without
  tus-js-client (``make run`` without npm) the section says so and the rest works.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias
from urllib.parse import urlsplit

import pytest

from tests.emulators import Azurite, EmulatorNotInstalledError, FakeGcsServer, MotoServer
from tests.httpclient import httpx

from .browser import open_browser, screenshot_path
from .server import ROOT, Server, run_uvicorn
from .tus_support import Proxy, emulator

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page, Request, Response, Route

MiB = 1024 * 1024
SIZE = 2 * MiB
CHUNK_KIB = 256
TIMEOUT_MS = 30_000
APP = "example_app.main:app"
TUS = {"Tus-Resumable": "1.0.0"}
BUCKET = "e2e-tus-browser"
STORES = ("local", "s3", "gcs", "azure")


def tus_js_dist() -> Path:
    """npm's tus-js-client: ``FILESTORE_TUS_JS_DIST`` or ``.tools/tus-js-client``."""
    configured = os.environ.get("FILESTORE_TUS_JS_DIST")
    dist = Path(configured) if configured else ROOT / ".tools/tus-js-client/node_modules/tus-js-client/dist"
    if not (dist / "tus.min.js").is_file():
        problem = "tus-js-client is not installed (make test installs it with npm)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{problem}; CI must run the resumable browser tests")
        pytest.skip(problem)
    return dist


@pytest.fixture(scope="module")
def dist() -> Path:
    return tus_js_dist()


@pytest.fixture(scope="module")
def browser(dist: Path) -> Iterator[Browser]:  # skips before a browser starts
    with open_browser() as opened:
        yield opened


@dataclass
class Traffic:
    """What the page sent: every URL, and the tus requests with their headers."""

    base: str
    urls: list[str] = field(default_factory=list)
    tus: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    """The methods of the requests that got no response."""

    def seen(self, request: Request) -> None:
        self.urls.append(request.url)
        if "/uploads/resumable" in request.url and request.method in ("POST", "PATCH"):
            self.tus.append((request.method, request.headers))

    def patches(self) -> list[int]:
        """The ``Upload-Offset`` of each PATCH, in order."""
        return [int(headers["upload-offset"]) for method, headers in self.tus if method == "PATCH"]

    def guard(self, route: Route) -> None:
        if route.request.url.startswith(self.base):
            route.continue_()
        else:
            route.abort()  # nothing leaves 127.0.0.1


class Store:
    """Where the example app keeps the documents (``FILESTORE_BACKEND``), read back with the
    store's own SDK rather than through the library."""

    kind: str

    def env(self) -> dict[str, str]:
        raise NotImplementedError

    def read(self, name: str) -> bytes:
        raise NotImplementedError

    def objects(self) -> list[str]:
        """Every object under the destination, the hidden tus state included."""
        raise NotImplementedError


class LocalStore(Store):
    kind = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    def env(self) -> dict[str, str]:
        return {"FILESTORE_BACKEND": "local", "FILESTORE_DESTINATION": str(self.root)}

    def read(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    def objects(self) -> list[str]:
        return [p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file()]


class S3Store(Store):
    kind = "s3"

    def __init__(self, moto: MotoServer, prefix: str) -> None:
        from tests.contract.harness_s3 import moto_client

        self.moto, self.prefix, self.client = moto, prefix, moto_client(moto)
        if BUCKET not in {bucket["Name"] for bucket in self.client.list_buckets().get("Buckets", [])}:
            self.client.create_bucket(Bucket=BUCKET)

    def env(self) -> dict[str, str]:
        return {
            "FILESTORE_BACKEND": "s3",
            "FILESTORE_DESTINATION": self.prefix,
            "AWS_BUCKET_NAME": BUCKET,
            "AWS_DEFAULT_REGION": self.moto.region,
            "AWS_ACCESS_KEY_ID": self.moto.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.moto.secret_access_key,
            "AWS_ENDPOINT_URL": self.moto.endpoint_url,
        }

    def read(self, name: str) -> bytes:
        return bytes(self.client.get_object(Bucket=BUCKET, Key=f"{self.prefix}/{name}")["Body"].read())

    def objects(self) -> list[str]:
        listed = self.client.list_objects_v2(Bucket=BUCKET, Prefix=self.prefix + "/").get("Contents", [])
        return [item["Key"].removeprefix(self.prefix + "/") for item in listed]


class GCSStore(Store):
    kind = "gcs"

    def __init__(self, gcs: FakeGcsServer, prefix: str) -> None:
        from google.cloud import storage

        self.gcs, self.prefix = gcs, prefix
        client = storage.Client(**gcs.client_kwargs())
        self.bucket = client.bucket(BUCKET)
        if not self.bucket.exists():
            self.bucket = client.create_bucket(BUCKET)

    def env(self) -> dict[str, str]:
        return {
            "FILESTORE_BACKEND": "gcs",
            "FILESTORE_DESTINATION": self.prefix,
            "GCP_BUCKET_NAME": BUCKET,
            "GCP_PROJECT": self.gcs.project,
            "STORAGE_EMULATOR_HOST": self.gcs.endpoint_url,
        }

    def read(self, name: str) -> bytes:
        return bytes(self.bucket.blob(f"{self.prefix}/{name}").download_as_bytes())

    def objects(self) -> list[str]:
        return [
            blob.name.removeprefix(self.prefix + "/")
            for blob in self.bucket.list_blobs(prefix=self.prefix + "/")
        ]


class AzureStore(Store):
    kind = "azure"

    def __init__(self, azurite: Azurite, prefix: str) -> None:
        from azure.storage.blob import BlobServiceClient

        self.azurite, self.prefix = azurite, prefix
        service = BlobServiceClient.from_connection_string(azurite.connection_string)
        self.container = service.get_container_client(BUCKET)
        if not self.container.exists():
            self.container.create_container()

    def env(self) -> dict[str, str]:
        return {
            "FILESTORE_BACKEND": "azure",
            "FILESTORE_DESTINATION": self.prefix,
            "AZURE_STORAGE_CONTAINER": BUCKET,
            "AZURE_STORAGE_CONNECTION_STRING": self.azurite.connection_string,
        }

    def read(self, name: str) -> bytes:
        return bytes(self.container.download_blob(f"{self.prefix}/{name}").readall())

    def objects(self) -> list[str]:
        return [
            name.removeprefix(self.prefix + "/")
            for name in self.container.list_blob_names(name_starts_with=self.prefix + "/")
        ]


_serial = itertools.count()


def store_for(kind: str, tmp_path: Path) -> Store:
    """A fresh folder on ``kind``; the emulators are the session's, shared with the other
    tus tests (``tus_support.emulator``)."""
    if kind == "local":
        return LocalStore(tmp_path / "documents")
    try:
        running = emulator(kind)
    except EmulatorNotInstalledError as missing:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{missing}; CI must run the resumable browser tests on {kind}")
        pytest.skip(str(missing))
    prefix = f"documents-{next(_serial)}"  # each test its own folder
    if isinstance(running, MotoServer):
        return S3Store(running, prefix)
    if isinstance(running, FakeGcsServer):
        return GCSStore(running, prefix)
    return AzureStore(running, prefix)


@dataclass
class Setup:
    tmp_path: Path
    store: Store
    env: dict[str, str]


def app_setup(dist: Path, store: Store, tmp_path: Path) -> Setup:
    env = {
        **store.env(),
        "FILESTORE_TUS_JS_DIST": str(dist),
        "FILESTORE_TUS_LEASE": "2",  # a killed server's lease on its upload: 2 s, not 30
    }
    return Setup(tmp_path, store, env)


@pytest.fixture(params=STORES)
def setup(request: pytest.FixtureRequest, dist: Path, tmp_path: Path) -> Setup:
    """The app's environment on each store, for a test that runs its own servers."""
    return app_setup(dist, store_for(request.param, tmp_path), tmp_path)


@pytest.fixture(scope="module")
def local(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Setup, Server]]:
    """One app on local disk for the tests that leave it running (each its own file name)."""
    tmp_path = tmp_path_factory.mktemp("tus-browser")
    setup = app_setup(dist, LocalStore(tmp_path / "documents"), tmp_path)
    with run_uvicorn(APP, env=setup.env) as server:
        yield setup, server


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Callable[[Server], tuple[Page, Traffic]]]:
    """Opens the app's page in a fresh browser context (closed after the test), recording
    its traffic and refusing any request that is not to the app."""
    contexts: list[BrowserContext] = []

    def opener(server: Server) -> tuple[Page, Traffic]:
        context = browser.new_context(base_url=server.url, viewport={"width": 1000, "height": 1300})
        contexts.append(context)
        context.set_default_timeout(TIMEOUT_MS)
        traffic = Traffic(base=server.url + "/")
        context.route("**/*", traffic.guard)
        context.on("request", traffic.seen)
        context.on("requestfailed", lambda request: traffic.failed.append(request.method))
        page = context.new_page()
        page.goto("/")
        page.locator('#tus-state[data-state="idle"]').wait_for()
        return page, traffic

    yield opener
    for context in contexts:
        context.close()


def throttler(page: Page) -> Callable[[int], None]:
    """Sets Chromium's upload throughput (bytes/s, -1: none) for the page's requests."""
    session = page.context.new_cdp_session(page)
    session.send("Network.enable")

    def throttle(bytes_per_second: int) -> None:
        conditions = {"offline": False, "latency": 0, "downloadThroughput": -1}
        session.send("Network.emulateNetworkConditions", {**conditions, "uploadThroughput": bytes_per_second})

    return throttle


def source_file(setup: Setup, name: str) -> tuple[Path, str]:
    path = setup.tmp_path / "source" / name
    path.parent.mkdir(exist_ok=True)
    data = os.urandom(SIZE)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def start(page: Page, path: Path, *, parallel: bool = False) -> None:
    page.set_input_files("#tus-file", str(path))
    page.fill("#tus-chunk", str(CHUNK_KIB))
    if parallel:
        page.check("#tus-parallel")
    page.click("#tus-start")


def percent(page: Page) -> int:
    return int(page.locator("#tus-progress").get_attribute("aria-valuenow") or 0)


def sent_bytes(page: Page) -> int:
    return int(page.locator("#tus-progress").get_attribute("data-bytes") or 0)


def wait_for_percent(page: Page, at_least: int) -> None:
    page.wait_for_function(
        f"Number(document.getElementById('tus-progress').getAttribute('aria-valuenow')) >= {at_least}"
    )


def check_stored(page: Page, setup: Setup, name: str, digest: str, traffic: Traffic) -> None:
    """The page shows what ``GET <upload URL>`` answers, and the stored object is the source."""
    page.locator('#tus-state[data-state="done"]').wait_for()
    assert page.locator("#tus-sha256").inner_text() == digest
    stored = httpx.get(page.locator("#tus-result").get_attribute("data-upload-url") or "").json()
    assert stored["sha256"] == digest and stored["filename"].rsplit("/", 1)[-1] == name
    assert page.locator("#tus-name").inner_text() == stored["filename"]  # a cloud key has its folder
    assert page.locator("#tus-url").get_attribute("href") == stored["url"]
    if setup.store.kind == "local":
        assert stored["url"] == f"/media/documents/{name}"
    assert hashlib.sha256(setup.store.read(name)).hexdigest() == digest
    assert percent(page) == 100
    assert all(url.startswith(traffic.base) for url in traffic.urls), traffic.urls
    left = [key for key in setup.store.objects() if key.startswith(".tus/") and "/data-" in key]
    assert left == []  # no piece left behind


def upload_url(server: Server, traffic: Traffic) -> str:
    """The one upload the page created (tus-js-client's POST answered its Location)."""
    [(method, headers)] = [entry for entry in traffic.tus if entry[0] == "POST"]
    assert method == "POST" and headers["upload-length"] == str(SIZE)
    [location] = {
        urlsplit(url).path
        for url in traffic.urls
        if "/uploads/resumable/" in url and len(url.rsplit("/", 1)[1]) == 32
    }
    return server.url + location


def settled_offset(url: str) -> int:
    """The server's offset once the bytes of a cut-off PATCH are all stored."""
    offset = -1
    while True:
        now = int(httpx.head(url, headers=TUS).headers["Upload-Offset"])
        if now == offset:
            return offset
        offset = now
        time.sleep(0.3)


Opener: TypeAlias = "Callable[[Server], tuple[Page, Traffic]]"


def test_pause_stops_the_upload_and_resume_finishes_it(
    local: tuple[Setup, Server], open_page: Opener
) -> None:
    setup, server = local
    path, digest = source_file(setup, "paused.pdf")
    page, traffic = open_page(server)
    throttle = throttler(page)
    throttle(2 * MiB)  # about a second for the file: Pause lands part-way
    start(page, path)
    wait_for_percent(page, 25)
    page.click("#tus-pause")
    page.locator('#tus-state[data-state="paused"]').wait_for()
    assert page.locator("#tus-resume").is_enabled()
    paused_at = sent_bytes(page)
    offset = settled_offset(upload_url(server, traffic))
    time.sleep(0.5)
    assert sent_bytes(page) == paused_at and percent(page) < 100, "progress went on while paused"
    assert settled_offset(upload_url(server, traffic)) == offset  # the server's too
    assert 0 < offset < SIZE
    patches_before = len(traffic.patches())

    throttle(-1)
    page.click("#tus-resume")
    check_stored(page, setup, "paused.pdf", digest, traffic)
    offsets = traffic.patches()
    assert offsets[patches_before] == offset  # resumed where the server was, not from 0
    assert len(offsets) >= SIZE // (CHUNK_KIB * 1024)  # several PATCHes, 256 KiB each at most
    page.screenshot(path=str(screenshot_path("browser-tus.png")), full_page=True)


def test_two_parallel_uploads_are_concatenated(local: tuple[Setup, Server], open_page: Opener) -> None:
    setup, server = local
    path, digest = source_file(setup, "parallel.pdf")
    page, traffic = open_page(server)
    start(page, path, parallel=True)
    check_stored(page, setup, "parallel.pdf", digest, traffic)
    concat = [headers.get("upload-concat", "") for method, headers in traffic.tus if method == "POST"]
    assert concat.count("partial") == 2
    assert [c for c in concat if c.startswith("final;")] and len(concat) == 3
    assert len(traffic.patches()) >= SIZE // (CHUNK_KIB * 1024)


def test_a_reloaded_page_resumes_the_upload_it_remembers(
    local: tuple[Setup, Server], open_page: Opener
) -> None:
    setup, server = local
    path, digest = source_file(setup, "reloaded.pdf")
    page, traffic = open_page(server)
    throttler(page)(2 * MiB)
    start(page, path)
    wait_for_percent(page, 25)
    page.reload()  # the PATCH in flight is cut off; tus-js-client kept the upload's URL
    page.locator('#tus-state[data-state="idle"]').wait_for()
    offset = settled_offset(upload_url(server, traffic))
    assert 0 < offset < SIZE
    patches_before = len(traffic.patches())
    start(page, path)  # the same file chosen again: found by its fingerprint
    check_stored(page, setup, "reloaded.pdf", digest, traffic)
    assert [method for method, _ in traffic.tus].count("POST") == 1  # no second upload created
    assert traffic.patches()[patches_before] == offset
    # Done, the browser forgets it: the same file again would be a new upload.
    assert page.evaluate("Object.keys(localStorage).filter((k) => k.startsWith('tus::'))") == []


def is_final_post(response: Response) -> bool:
    """The answer to a creation, the final one of a parallel upload if there is one."""
    headers = response.request.headers
    return response.request.method == "POST" and not headers.get("upload-concat", "").startswith("partial")


def test_a_refused_file_shows_the_servers_reason(local: tuple[Setup, Server], open_page: Opener) -> None:
    setup, server = local
    path = setup.tmp_path / "setup.exe"
    path.write_bytes(b"MZ" * 1000)
    page, traffic = open_page(server)
    start(page, path)
    page.locator('#tus-state[data-state="failed"]').wait_for()
    message = page.locator("#tus-state").inner_text()
    assert "HTTP 415" in message and "extension '.exe' is not allowed" in message, message
    assert traffic.patches() == [] and page.locator("#tus-result").is_hidden()
    # An empty file, also split in two empty partial uploads: the reason, not "not complete".
    empty = setup.tmp_path / "empty.pdf"
    empty.write_bytes(b"")
    for parallel in (False, True):
        posts = len(traffic.tus)
        with page.expect_response(is_final_post) as final:
            start(page, empty, parallel=parallel)
        page.wait_for_function("document.getElementById('tus-state').dataset.state === 'failed'")
        page.wait_for_function("!document.getElementById('tus-start').disabled")
        assert page.locator("#tus-state").inner_text() == "This file is empty, so there is nothing to store."
        sent = [headers.get("upload-concat", "") for _, headers in traffic.tus[posts:]]
        assert sent == (["partial", "partial", sent[-1]] if parallel else [""]), sent
        assert not parallel or sent[-1].startswith("final;")
    # The final upload was refused for its size: its empty partial uploads were complete.
    assert "min_file_size" in final.value.text(), final.value.text()


def test_an_upload_survives_the_server_killed_and_restarted(setup: Setup, open_page: Opener) -> None:
    """On every store: the upload's state is in the store, so the restarted server goes on."""
    path, digest = source_file(setup, "cut.pdf")
    with ExitStack() as servers:
        first = servers.enter_context(run_uvicorn(APP, env=setup.env))
        page, traffic = open_page(first)
        throttle = throttler(page)
        throttle(2 * MiB)
        start(page, path)
        wait_for_percent(page, 20)
        first.process.kill()  # SIGKILL mid-PATCH: no response, the lease left behind
        first.process.wait()
        page.locator('#tus-state[data-state="retrying"]').wait_for()
        assert "PATCH" in traffic.failed  # a PATCH was cut off, not only the next one refused
        throttle(-1)
        patches_before = len(traffic.patches())
        port = urlsplit(first.url).port
        second = servers.enter_context(run_uvicorn(APP, env=setup.env, port=port))
        check_stored(page, setup, "cut.pdf", digest, traffic)
        resumed = traffic.patches()[patches_before:]
        assert resumed and resumed[0] > 0  # tus-js-client went on from the server's offset
        assert second.process.poll() is None


def test_an_upload_survives_its_connection_reset_mid_patch(setup: Setup, open_page: Opener) -> None:
    """On every store, through a proxy that resets the PATCH's connection 100 KiB into its
    body (a mobile network, a proxy's cap): tus-js-client retries from the server's offset,
    which kept the bytes that arrived."""
    with run_uvicorn(APP, env=setup.env) as server:
        proxy = Proxy(server.url)
        try:
            path, digest = source_file(setup, "reset.pdf")
            proxied = Server(url=f"http://127.0.0.1:{proxy.port}", process=server.process)
            page, traffic = open_page(proxied)
            proxy.cut_after = 100 * 1024  # bytes a connection carries: 100 KiB into a PATCH
            start(page, path)
            deadline = time.monotonic() + 30
            while not proxy.cuts:  # Playwright's own wait: the page's routed requests go on meanwhile
                assert time.monotonic() < deadline, "no connection was reset"
                page.wait_for_timeout(50)
            proxy.cut_after = None
            check_stored(page, setup, "reset.pdf", digest, traffic)
            assert proxy.cuts >= 1  # (the retry may be cut too, before the cut is turned off)
            offsets = traffic.patches()
            assert offsets == sorted(set(offsets))  # no PATCH went back to an offset already sent
            # One PATCH resumed mid-chunk: at the bytes the server kept of the one cut off.
            assert any(offset % (CHUNK_KIB * 1024) for offset in offsets), offsets
        finally:
            proxy.close()


def test_patch_sent_as_post_for_proxies_that_refuse_patch(
    local: tuple[Setup, Server], open_page: Opener
) -> None:
    """tus-js-client's ``overridePatchMethod``: POST with ``X-HTTP-Method-Override: PATCH``."""
    setup, server = local
    path, digest = source_file(setup, "override.pdf")
    page, traffic = open_page(server)
    page.set_input_files("#tus-file", str(path))
    outcome = page.evaluate(
        """() => new Promise((resolve) => {
            const file = document.getElementById("tus-file").files[0];
            const upload = new tus.Upload(file, {
                endpoint: new URL("/uploads/resumable", location.href).href,
                chunkSize: 512 * 1024,
                overridePatchMethod: true,
                retryDelays: null,
                metadata: { filename: file.name, filetype: file.type },
                onSuccess: () => fetch(upload.url).then((r) => r.json()).then(resolve),
                onError: (error) => resolve({ error: String(error) }),
            });
            upload.start();
        })"""
    )
    assert outcome.get("sha256") == digest, outcome
    assert hashlib.sha256(setup.store.read("override.pdf")).hexdigest() == digest
    assert traffic.patches() == []
    assert [method for method, _ in traffic.tus].count("POST") == 1 + SIZE // (512 * 1024)


def test_without_tus_js_client_the_page_says_so_and_still_uploads(browser: Browser, tmp_path: Path) -> None:
    """``make run`` without npm: the resumable section is off, the multipart upload works."""
    setup = app_setup(tmp_path / "no-tus-js-client", LocalStore(tmp_path / "documents"), tmp_path)
    with run_uvicorn(APP, env=setup.env) as server:
        context = browser.new_context(base_url=server.url)
        try:
            page = context.new_page()
            page.goto("/")
            state = page.locator('#tus-state[data-state="unavailable"]')
            assert "make run" in state.inner_text(timeout=TIMEOUT_MS)
            assert page.locator("#tus-file").is_disabled() and page.locator("#tus-start").is_disabled()
            page.set_input_files("#file-input", {"name": "a.txt", "mimeType": "text/plain", "buffer": b"hi"})
            page.locator("li.file.done").wait_for(timeout=TIMEOUT_MS)
            assert setup.store.read("a.txt") == b"hi"
        finally:
            context.close()
