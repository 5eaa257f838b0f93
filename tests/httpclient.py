"""The HTTP client of the tests: httpx2, which Starlette's TestClient now asks for, else httpx
(the same API). Import ``httpx`` from here, so that either works."""

try:
    import httpx2 as httpx
except ModuleNotFoundError:  # pragma: no cover - an environment with the older client only
    import httpx  # type: ignore[no-redef]

__all__ = ["httpx"]
