"""Optional dependencies: imported on first use, never by ``import filestore_fastapi``."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, hint: str) -> ModuleType:
    """``module``, or an ImportError whose message (``hint``) says what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(hint) from exc
