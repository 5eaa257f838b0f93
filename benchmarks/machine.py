"""A description of the machine and software a run measured, for the results page."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = (
    "fastapi",
    "starlette",
    "uvicorn",
    "httptools",
    "uvloop",
    "python-multipart",
    "filestore",
    "boto3",
    "moto",
)


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def _memory() -> str:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return "unknown"


def _filesystem(path: Path) -> str:
    done = subprocess.run(["df", "--output=fstype", str(path)], capture_output=True, text=True, check=False)
    lines = done.stdout.split()
    return lines[-1] if done.returncode == 0 and len(lines) > 1 else "unknown"


def _curl() -> str:
    done = subprocess.run(["curl", "--version"], capture_output=True, text=True, check=False)
    return done.stdout.split("\n", 1)[0].split(" (")[0]


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe(scratch: Path) -> list[tuple[str, str]]:
    """(label, value) pairs: CPU, cores, memory, kernel, Python, disk, client, packages."""
    return [
        ("CPU", _cpu_model()),
        ("cores", str(os.cpu_count())),
        ("memory", _memory()),
        ("kernel", f"{platform.system()} {platform.release()}"),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("scratch filesystem", _filesystem(scratch)),
        ("client", _curl()),
        ("server", "uvicorn --http httptools (loop: uvloop), one process per contender, 127.0.0.1"),
        ("packages", ", ".join(f"{name} {_version(name)}" for name in PACKAGES)),
    ]
