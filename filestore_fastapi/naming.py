"""Safe file names, and claiming one without ever replacing another upload's file."""

from __future__ import annotations

import errno
import os
import re
import secrets
import unicodedata
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from urllib.parse import quote

MAX_NAME_BYTES = 255
MAX_SUFFIX_ATTEMPTS = 10_000
NUMBERED_SUFFIXES = 16
FALLBACK_NAME = "file"

# Characters that are path syntax on some system, shell or URL, or that look like a slash.
_UNSAFE = re.compile(r'[<>:"/\\|?*\u2215\u2044\u29f8\u29f9\uff0f\uff3c\u2571\u2572]')
_WINDOWS_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$", re.IGNORECASE)
_DRIVE = re.compile(r"^[A-Za-z]:")


class UnsafeName(ValueError):
    """A name that cannot be stored as given (only raised with sanitising off)."""


def _drop_invisible(name: str) -> str:
    # Cc: control characters incl. NUL; Cf: format characters such as U+202E (RTL override)
    # and zero-width spaces, which make a name display as something it is not.
    return "".join(ch for ch in name if unicodedata.category(ch) not in ("Cc", "Cf"))


def sanitize_filename(name: str) -> str:
    """Reduce a client-sent name to a single safe path component.

    Directories, drive letters and traversal are dropped, invisible characters removed,
    path syntax replaced by ``_``; the result is NFC, at most 255 UTF-8 bytes, and never
    empty, hidden (leading dot), ``.``, ``..`` or a Windows device name.
    """
    name = unicodedata.normalize("NFC", _drop_invisible(name))
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _DRIVE.sub("", name)
    name = _UNSAFE.sub("_", name)
    name = name.strip(" .")
    if _WINDOWS_RESERVED.match(name):
        name = "_" + name
    # Cutting a long stem can expose a trailing dot or space again.
    return truncate_name(name or FALLBACK_NAME).rstrip(" .")


def check_safe_name(name: str) -> str:
    """Return ``name`` unchanged if it is already a safe single component, else raise."""
    if name != sanitize_filename(name):
        raise UnsafeName(f"the file name {name!r} is not safe to store as given")
    return name


def split_extension(name: str) -> tuple[str, str]:
    """``("report.tar", ".gz")``; an implausibly long extension counts as part of the stem."""
    suffix = PurePosixPath(name).suffix
    if not suffix or len(suffix.encode()) > 32 or suffix == name:
        return name, ""
    return name[: -len(suffix)], suffix


def truncate_name(name: str, limit: int = MAX_NAME_BYTES) -> str:
    """Cap ``name`` at ``limit`` UTF-8 bytes, shortening the stem and keeping the extension."""
    if len(name.encode()) <= limit:
        return name
    stem, ext = split_extension(name)
    budget = limit - len(ext.encode())
    stem = stem.encode()[:budget].decode("utf-8", errors="ignore")
    return stem + ext


def candidate_names(name: str) -> Iterator[str]:
    """``doc.pdf``, ``doc-1.pdf`` ... ``doc-16.pdf``, then ``doc-<8 random hex>.pdf``, each
    within the length cap.

    Counting on would make the n-th upload of a popular name probe n taken names, and on
    an object store each probe is a request: quadratic work a client can trigger at will.
    A random suffix is free at the first try, whatever the number of namesakes.
    """
    yield name
    stem, ext = split_extension(name)
    for n in range(1, MAX_SUFFIX_ATTEMPTS):
        tag = str(n) if n <= NUMBERED_SUFFIXES else secrets.token_hex(4)
        suffix = f"-{tag}{ext}"
        yield truncate_name(stem, MAX_NAME_BYTES - len(suffix.encode())) + suffix


def ensure_inside(directory: Path, name: str) -> Path:
    """``directory / name``, refusing anything that resolves outside ``directory``."""
    root = directory.resolve()
    target = (root / name).resolve()
    if target == root or not target.is_relative_to(root):
        raise UnsafeName(f"the file name {name!r} leaves the destination")
    return target


def claim_unique_path(source: Path, directory: Path, name: str, *, overwrite: bool) -> Path:
    """Move the finished temp file ``source`` to its final name in ``directory``.

    Without ``overwrite`` the name is claimed with ``os.link``, which fails atomically if
    the name exists, so concurrent uploads (threads or processes) never replace each other
    and no empty placeholder is ever visible. ``doc.pdf`` taken -> ``doc-1.pdf`` and so on.
    """
    if overwrite:
        target = ensure_inside(directory, name)
        os.replace(source, target)
        return target
    for candidate in candidate_names(name):
        target = ensure_inside(directory, candidate)
        try:
            os.link(source, target)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            if not _claim_by_exclusive_create(source, target):
                continue
        else:
            os.unlink(source)
        return target
    raise FileExistsError(errno.EEXIST, f"no free name for {name!r}")


def _claim_by_exclusive_create(source: Path, target: Path) -> bool:
    """Fallback for filesystems without hard links: reserve with O_EXCL, then replace."""
    try:
        fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    os.close(fd)
    os.replace(source, target)
    return True


def unique_keys(name: str, prefix: str = "") -> Iterator[str]:
    """Object-store keys under ``prefix`` in the same collision order as local files."""
    for candidate in candidate_names(name):
        yield join_key(prefix, candidate)


def join_key(prefix: str, name: str) -> str:
    """Join a key prefix and a name with exactly one slash (``.`` means no prefix)."""
    prefix = prefix.strip("/").removeprefix("./")
    if prefix == ".":
        prefix = ""
    return f"{prefix}/{name}" if prefix else name


def join_url(base_url: str | None, key: str) -> str | None:
    """``base_url`` + the percent-encoded key, or None without a base URL."""
    if base_url is None:
        return None
    return f"{base_url.rstrip('/')}/{quote(key)}"


__all__ = [
    "UnsafeName",
    "candidate_names",
    "check_safe_name",
    "claim_unique_path",
    "ensure_inside",
    "join_key",
    "join_url",
    "sanitize_filename",
    "truncate_name",
    "unique_keys",
]
