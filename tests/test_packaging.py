"""The wheel installs into a clean venv and imports with no cloud SDK present."""

from __future__ import annotations

import importlib
import importlib.metadata
import subprocess
import sys
import venv
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHECK = """
import sys
import filestore_fastapi
from filestore_fastapi import Config, FileData, LocalStorage, MemoryStorage
for sdk in ("boto3", "botocore", "google.cloud.storage", "azure.storage.blob"):
    assert sdk not in sys.modules, sdk
    try:
        __import__(sdk)
    except ImportError:
        pass
    else:
        raise AssertionError(f"{sdk} is installed in the clean venv")
import importlib.resources
assert importlib.resources.files("filestore_fastapi").joinpath("py.typed").is_file()
print("ok")
"""


def test_wheel_installs_and_imports_without_cloud_sdks(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("filestore_fastapi-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", str(wheel)], check=True, capture_output=True)
    result = subprocess.run([python, "-c", CHECK], check=True, capture_output=True, text=True, cwd=tmp_path)
    assert result.stdout.strip() == "ok"


def test_the_azure_extra_brings_what_account_url_mode_needs() -> None:
    # AZURE_STORAGE_ACCOUNT_URL without a credential uses DefaultAzureCredential, so the
    # documented ``pip install "filestore-fastapi[azure]"`` must bring azure-identity.
    requires = importlib.metadata.requires("filestore-fastapi") or []
    azure = [r for r in requires if r.replace("'", '"').endswith('extra == "azure"')]
    assert any(r.startswith("azure-identity") for r in azure), azure
    assert any(r.startswith("azure-storage-blob") for r in azure), azure


def test_the_dev_extra_gives_starlettes_test_client_what_it_asks_for() -> None:
    # Starlette >= 1.2 deprecates httpx in its TestClient in favour of httpx2.
    import starlette.testclient

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        importlib.reload(starlette.testclient)
