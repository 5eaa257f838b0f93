"""Headless Chromium for the browser tests: Debian's ``chromium`` driven by Playwright.

Nothing downloads a browser: Playwright only drives the system binary. Without one the
tests skip, except under ``CI=true``, where a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from .server import ROOT

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OUTPUT = ROOT / "test-output"


def chromium_path() -> str | None:
    """``FILESTORE_CHROMIUM`` if set, else Debian's ``chromium`` on the PATH."""
    return shutil.which(os.environ.get("FILESTORE_CHROMIUM") or "chromium")


def require_browser() -> str:
    """The Chromium to drive; skips (fails under CI=true) when it or Playwright is missing."""
    problem = None
    path = chromium_path()
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problem = "Playwright for Python is not installed (pip install playwright)"
    if problem is None and path is None:
        problem = "Chromium is not installed (apt-get install chromium)"
    if problem is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{problem}; CI must run the browser tests")
        pytest.skip(problem)
    assert path is not None
    return path


@contextmanager
def open_browser() -> Iterator[Browser]:
    executable = require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def screenshot_path(name: str) -> Path:
    """Where a test's screenshot goes: ``test-output/`` (git-ignored) in the repository."""
    OUTPUT.mkdir(exist_ok=True)
    return OUTPUT / name
