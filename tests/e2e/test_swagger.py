"""Swagger UI's "Try it out" uploads files to a streaming route and gets 200.

The example app documents its upload fields with ``install_openapi`` only. FastAPI's
``/docs`` page loads Swagger UI from a CDN; with no network here, the browser is served
the same files from npm's ``swagger-ui-dist`` (``make test`` installs it under ``.tools``),
and every other request that would leave the machine is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from .browser import open_browser, screenshot_path
from .server import ROOT, run_uvicorn

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Route

CDN_PREFIX = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/"
OPERATION = "#operations-default-upload_documents_documents_post"


def swagger_ui_dist() -> Path:
    """npm's swagger-ui-dist: ``FILESTORE_SWAGGER_UI_DIST`` or ``.tools/swagger-ui``."""
    configured = os.environ.get("FILESTORE_SWAGGER_UI_DIST")
    dist = Path(configured) if configured else ROOT / ".tools/swagger-ui/node_modules/swagger-ui-dist"
    if not (dist / "swagger-ui-bundle.js").is_file():
        problem = f"swagger-ui-dist is not installed at {dist.relative_to(ROOT) if not configured else dist}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{problem}; CI must run the Swagger UI test")
        pytest.skip(problem)
    return dist


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with open_browser() as opened:
        yield opened


def offline(dist: Path, base_url: str) -> object:
    def route(route: Route) -> None:
        url = route.request.url
        if url.startswith(base_url):
            route.continue_()
        elif url.startswith(CDN_PREFIX) and (dist / url.removeprefix(CDN_PREFIX)).is_file():
            route.fulfill(path=dist / url.removeprefix(CDN_PREFIX))
        else:
            route.abort()  # e.g. FastAPI's favicon: nothing leaves the machine

    return route


def choose_file(page: Page, index: int, name: str, data: bytes) -> None:
    picker = page.locator(f'{OPERATION} tr[data-property-name="document"] input[type=file]').nth(index)
    picker.set_input_files({"name": name, "mimeType": "text/plain", "buffer": data})


def test_try_it_out_uploads_files(browser: Browser) -> None:
    dist = swagger_ui_dist()
    first, second = b"first file\n" * 1000, os.urandom(200_000)
    with run_uvicorn("example_app.main:app", env={"FILESTORE_BACKEND": "memory"}) as server:
        context = browser.new_context(base_url=server.url, viewport={"width": 1200, "height": 1400})
        context.set_default_timeout(15_000)
        page = context.new_page()
        page.route("**/*", offline(dist, server.url))  # type: ignore[arg-type]
        page.goto("/docs")

        page.locator(f"{OPERATION} .opblock-summary").click()
        page.locator(f"{OPERATION} button.try-out__btn").click()
        choose_file(page, 0, "first.txt", first)
        page.locator(f"{OPERATION} button.json-schema-form-item-add").click()
        choose_file(page, 1, "second.txt", second)
        page.locator(f"{OPERATION} button.execute").click()

        live = page.locator(f"{OPERATION} .live-responses-table .response")
        live.locator(".response-col_status").filter(has_text="200").wait_for()
        stored = json.loads(live.locator(".response-col_description pre.microlight").first.inner_text())
        shot = screenshot_path("swagger-try-it-out.png")
        page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot: {shot.relative_to(ROOT)}")
        context.close()

    assert [(f["name"], f["sha256"]) for f in stored] == [
        ("first.txt", hashlib.sha256(first).hexdigest()),
        ("second.txt", hashlib.sha256(second).hexdigest()),
    ]
