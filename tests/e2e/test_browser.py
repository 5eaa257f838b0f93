"""The example app's page, used in headless Chromium as a person would use it.

A real uvicorn serves ``example_app.main:app``; the browser chooses and drops files,
watches them upload, downloads them back, and reads the errors shown beside refused files.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from .browser import open_browser, screenshot_path
from .server import ROOT, Server, run_uvicorn

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page

MiB = 1024 * 1024
LIMIT = 1 * MiB
TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with open_browser() as opened:
        yield opened


@pytest.fixture(params=["local", "memory"])
def app_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Server, Path]]:
    backend: str = request.param
    env = {"FILESTORE_BACKEND": backend, "FILESTORE_MAX_FILE_SIZE": str(LIMIT)}
    if backend == "local":
        env["FILESTORE_DESTINATION"] = str(tmp_path / "documents")
    with run_uvicorn("example_app.main:app", env=env) as server:
        yield backend, server, tmp_path


@pytest.fixture
def page(browser: Browser, app_server: tuple[str, Server, Path]) -> Iterator[Page]:
    _, server, _ = app_server
    context = browser.new_context(base_url=server.url, viewport={"width": 1000, "height": 1100})
    context.set_default_timeout(TIMEOUT_MS)
    opened = context.new_page()
    opened.goto("/")
    opened.locator("#limits").filter(has_text="Accepted").wait_for()
    try:
        yield opened
    finally:
        context.close()


def row_for(page: Page, name: str) -> Locator:
    return page.locator("li.file").filter(has=page.locator(".file-name", has_text=name))


def choose(page: Page, *files: tuple[str, bytes]) -> None:
    payloads = [
        {"name": name, "mimeType": "application/octet-stream", "buffer": data} for name, data in files
    ]
    page.set_input_files("#file-input", payloads)  # type: ignore[arg-type]


def drop(page: Page, name: str, data: bytes) -> None:
    """What the browser dispatches when a file is dragged onto the drop zone."""
    page.evaluate(
        """([name, encoded]) => {
            const bytes = Uint8Array.from(atob(encoded), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: "text/plain" }));
            const zone = document.getElementById("dropzone");
            for (const type of ["dragenter", "dragover", "drop"]) {
                const init = { dataTransfer: transfer, bubbles: true, cancelable: true };
                zone.dispatchEvent(new DragEvent(type, init));
            }
        }""",
        [name, base64.b64encode(data).decode()],
    )


def download(page: Page, row: Locator) -> bytes:
    with page.expect_download() as started:
        row.locator("a.download").click()
    return Path(started.value.path()).read_bytes()


@pytest.mark.parametrize("app_server", ["local"], indirect=True)  # the page's part: one backend is enough
def test_progress_shows_while_a_file_uploads(page: Page) -> None:
    network = page.context.new_cdp_session(page)
    network.send("Network.enable")
    # About two seconds for this file, so the bar is caught part-way.
    network.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 400 * 1024},
    )
    choose(page, ("slow.pdf", os.urandom(800 * 1024)))
    row = row_for(page, "slow.pdf")
    part_way = row.locator('.progress:not([aria-valuenow="0"]):not([aria-valuenow="100"])')
    part_way.wait_for()
    assert part_way.is_visible()
    assert "Uploading…" in row.locator(".file-state").inner_text()
    row.and_(page.locator(".done")).wait_for()
    assert not row.locator(".progress").is_visible()


def test_upload_list_download_and_errors(page: Page, app_server: tuple[str, Server, Path]) -> None:
    backend, _, tmp_path = app_server
    report = os.urandom(300 * 1024)
    notes = "déjà vu — notes\n".encode() * 100

    choose(page, ("report.pdf", report))
    drop(page, "notes.txt", notes)

    for name, data in (("report.pdf", report), ("notes.txt", notes)):
        row = row_for(page, name)
        row.and_(page.locator(".done")).wait_for()
        assert row.locator(".sha256").inner_text() == hashlib.sha256(data).hexdigest()
        assert row.locator(".stored-size").inner_text() == f"{len(data):,} bytes"
        assert row.locator(".progress").get_attribute("aria-valuenow") == "100"
        assert download(page, row) == data
    if backend == "local":
        assert (tmp_path / "documents" / "report.pdf").read_bytes() == report

    choose(page, ("huge.pdf", b"\0" * (LIMIT + 2 * MiB)), ("setup.exe", b"MZ" * 100), ("empty.txt", b""))

    expected = {
        "huge.pdf": ("413", "Too large: this file is 3.0 MB, and files can be at most 1.0 MB."),
        "setup.exe": ("415", "“.exe” files are not accepted here."),
        "empty.txt": ("422", "This file is empty, so there is nothing to store."),
    }
    for name, (status, message) in expected.items():
        row = row_for(page, name)
        row.and_(page.locator(".failed")).wait_for()
        assert message in row.locator(".error").inner_text()
        assert row.get_attribute("data-status") == status  # the server's answer, not a lost connection
    assert page.locator("li.file.done").count() == 2

    shot = screenshot_path(f"browser-{backend}.png")
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot.relative_to(ROOT)}")
