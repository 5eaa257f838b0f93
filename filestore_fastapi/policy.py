"""Per-file decisions: may this file be stored, under which name, where, at three moments.

- its headers (``check_count``, ``check_part``, ``target_name``, ``target_destination``),
  before any byte is stored;
- its bytes as they arrive (``check_size``; ``verify_content`` judges the first ones);
- its end (``check_complete``).

None of it needs a multipart body: a file that arrives another way (a resumable upload,
a direct upload confirmed later) is judged by the same functions. A new limit is a
``Config`` field and a line here.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from .config import Config, Hook
from .errors import PayloadTooLarge, UnsupportedMediaType, ValidationFailed
from .naming import UnsafeName, check_safe_name, sanitize_filename, split_extension

DEFAULT_CONTENT_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class UploadContext:
    """What a hook (``filename``, ``filters``, ``metadata``, ``destination``) receives."""

    request: Request
    field_name: str
    filename: str
    """The name the client sent, unmodified."""
    content_type: str
    form: Mapping[str, str]
    """Text fields that came before this file in the body (last value wins)."""


async def call_hook(hook: Hook, context: UploadContext, *args: Any) -> Any:
    """Hooks may be plain or async functions."""
    result = hook(context, *args)
    if inspect.isawaitable(result):
        result = await result
    return result


def content_type_allowed(content_type: str, allowed: tuple[str, ...]) -> bool:
    """Exact match, or a ``type/*`` wildcard; parameters (``; charset=...``) do not count."""
    media_type = content_type.split(";", 1)[0].strip()
    major = media_type.split("/", 1)[0]
    return media_type in allowed or f"{major}/*" in allowed


def check_count(field: str, number: int, count: int) -> None:
    """The ``number``-th file of ``field`` (from 1) is one too many for its ``count``: 422."""
    if number > count:
        raise ValidationFailed(field, f"{field}: more than count={count} files")


def check_size(config: Config, field: str, size: int) -> None:
    """``size`` bytes received so far: 413 the moment they pass ``max_file_size``."""
    limit = config.max_file_size
    if limit is not None and size > limit:
        raise PayloadTooLarge(field, f"{field}: file exceeds max_file_size of {limit} bytes")


def check_complete(config: Config, field: str, size: int) -> None:
    """The whole file is ``size`` bytes: 422 under ``min_file_size``."""
    limit = config.min_file_size
    if limit is not None and size < limit:
        raise ValidationFailed(field, f"{field}: file is smaller than min_file_size of {limit} bytes")


async def check_part(config: Config, context: UploadContext) -> None:
    """Refuse a part from its headers: extension and content type (415), filters (422)."""
    field = context.field_name
    if config.allowed_extensions is not None:
        name = sanitize_filename(context.filename)
        # endswith, not the last suffix alone, so that ".tar.gz" can be allowed.
        if not name.lower().endswith(config.allowed_extensions):
            _, ext = split_extension(name)
            allowed = ", ".join(config.allowed_extensions)
            raise UnsupportedMediaType(
                field, f"{field}: extension {ext or '(none)'!r} is not allowed (allowed: {allowed})"
            )
    if config.allowed_content_types is not None and not content_type_allowed(
        context.content_type, config.allowed_content_types
    ):
        allowed = ", ".join(config.allowed_content_types)
        raise UnsupportedMediaType(
            field, f"{field}: content type {context.content_type!r} is not allowed (allowed: {allowed})"
        )
    filters = config.filters
    if filters is None:
        return
    for hook in filters if isinstance(filters, list | tuple) else (filters,):
        verdict = await call_hook(hook, context)
        if verdict is True:
            continue
        message = verdict if isinstance(verdict, str) and verdict else "rejected by a filter"
        raise ValidationFailed(field, f"{field}: {message}")


async def target_name(config: Config, context: UploadContext) -> str:
    """The stored name: the ``filename`` hook's or the client's, sanitised or checked safe."""
    name = context.filename
    if config.filename is not None:
        name = str(await call_hook(config.filename, context))
    if config.sanitize_filename:
        return sanitize_filename(name)
    try:
        return check_safe_name(name)
    except UnsafeName as exc:
        raise ValidationFailed(context.field_name, f"{context.field_name}: {exc}") from None


async def target_destination(config: Config, context: UploadContext) -> str:
    """The directory or key prefix, from the config or its ``destination`` hook.

    A hook's result is often built from client input (``base + "/users/" + form["user"]``),
    so it is refused (422) when it has a ``..`` segment, split on ``/`` and ``\\`` alike;
    empty and ``.`` segments are dropped (a leading ``/`` stays). The message names the
    field only: the destination holds the application's paths.
    """
    destination = config.destination
    if not callable(destination):
        return str(destination)
    result = str(await call_hook(destination, context))
    if ".." in re.split(r"[/\\]", result):
        field = context.field_name
        raise ValidationFailed(field, f"{field}: the destination for this file would leave its base ('..')")
    kept = [segment for segment in result.split("/") if segment not in ("", ".")]
    root = "/" if result.startswith("/") else ""
    return root + "/".join(kept) if kept else root or "."
