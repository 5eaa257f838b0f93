"""Safe file names, and claiming one without ever replacing another upload's file."""

from __future__ import annotations

import errno
import itertools
import os
import re
import secrets
import stat
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import TypeVar
from urllib.parse import quote

from .backends.base import KeyTaken, WriteRequest

T = TypeVar("T")

MAX_NAME_BYTES = 255
MAX_SUFFIX_ATTEMPTS = 10_000
NUMBERED_SUFFIXES = 16
FALLBACK_NAME = "file"

_DRIVE = re.compile(r"^[A-Za-z]:")
# Whitespace and dots at either end: dropped, not replaced (a hidden name, or one Windows cuts).
_EDGES = re.compile(r"^[\s.]+|[\s.]+$")
_KEPT_PUNCTUATION = "._-"
# Combining solidus overlays: marks, but they draw a slash over the character before them.
_SLASH_MARKS = "\u0337\u0338"
# ntpath.isreserved (Python 3.13+), which also counts the superscript digits as COM/LPT numbers.
_WINDOWS_DEVICES = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{port}{digit}" for port in ("COM", "LPT") for digit in "123456789\u00b9\u00b2\u00b3"}
)
_WINDOWS_FORBIDDEN = frozenset('"*/:<>?\\|') | frozenset(map(chr, range(32)))


class UnsafeName(ValueError):
    """A name that cannot be stored as given (only raised with sanitising off)."""


def _drop_invisible(name: str) -> str:
    # Cc: control characters incl. NUL; Cf: format characters such as U+202E (RTL override)
    # and zero-width spaces, which make a name display as something it is not.
    return "".join(ch for ch in name if unicodedata.category(ch) not in ("Cc", "Cf"))


def is_windows_reserved(name: str) -> bool:
    """Whether Windows would not store the single component ``name`` under that name.

    The rule of ``ntpath.isreserved`` (only in Python 3.13+): a trailing space or dot (which
    Windows drops), a forbidden character (``:`` opens an alternate data stream), or a device
    name before the first dot, whatever the case and trailing spaces (``nul .txt`` is NUL).
    """
    if name[-1:] in (".", " "):
        return name not in (".", "..")
    if not _WINDOWS_FORBIDDEN.isdisjoint(name):
        return True
    return name.partition(".")[0].rstrip(" ").upper() in _WINDOWS_DEVICES


def _is_kept(ch: str) -> bool:
    # A letter, digit or mark that is one under NFKC too: "\uff23" (fullwidth C) is kept,
    # "\u2488" ("1." under NFKC), "\u2153" ("1\u20443") and "\u2122" (a symbol, "TM") are not.
    if ch in _KEPT_PUNCTUATION:
        return True
    return all(
        unicodedata.category(c)[0] in "LNM" and c not in _SLASH_MARKS
        for c in (ch, *unicodedata.normalize("NFKC", ch))
    )


def _replace_unsafe(name: str) -> str:
    """Each run of characters other than letters, digits, marks, ``.``, ``-`` and ``_``
    becomes one ``_``, as Django's ``get_valid_filename`` and Werkzeug's ``secure_filename``."""
    return "".join("".join(run) if kept else "_" for kept, run in itertools.groupby(name, _is_kept))


def _is_reserved_anywhere(name: str) -> bool:
    # NFKC, because some filesystems, archivers and comparisons apply it: "\uff23\uff2f\uff2e"
    # is "CON" there and "COM\u2074" is "COM4".
    return is_windows_reserved(name) or is_windows_reserved(unicodedata.normalize("NFKC", name))


def sanitize_filename(name: str) -> str:
    """Reduce a client-sent name to a single safe path component.

    Directories, drive letters and traversal are dropped, invisible characters removed, and
    anything but letters, digits, marks, ``.``, ``-`` and ``_`` replaced by ``_`` (one per
    run: ``my report (final).pdf`` -> ``my_report_final_.pdf``). The result is NFC, at most
    255 UTF-8 bytes, and never empty, hidden (leading dot), ``.``, ``..`` or reserved on
    Windows, also once NFKC-normalised; sanitising it again changes nothing.
    """
    name = unicodedata.normalize("NFC", _drop_invisible(name))
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _DRIVE.sub("", name)
    name = _replace_unsafe(_EDGES.sub("", name)) or FALLBACK_NAME
    if _is_reserved_anywhere(name):
        name = "_" + name
    # Cutting the stem keeps its first 220 bytes, so a device name (7 characters at most) or
    # the "_" before one cannot appear or go; only a trailing dot can, and goes.
    return truncate_name(name).rstrip(".")


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


def ensure_inside(directory: Path, name: str, *, follow_symlinks: bool = True) -> Path:
    """``directory / name``, refusing anything that resolves outside ``directory``.

    With ``follow_symlinks=False`` the last component is not resolved: the path names the
    entry itself, whatever it is (a planted symlink included), for an operation that does
    not follow it either (``link``, ``rename``, ``lstat``); only its directory is resolved.
    """
    root = directory.resolve()
    if follow_symlinks:
        target = (root / name).resolve()
    else:
        unresolved = root / name
        target = unresolved.parent.resolve() / unresolved.name
        if unresolved.name in ("", ".", ".."):
            target = root
    if target == root or not target.is_relative_to(root):
        raise UnsafeName(f"the file name {name!r} leaves the destination")
    return target


class NameTaken(UnsafeName):
    """The name is held by something that is not a regular file (a symlink, a directory):
    it is never followed nor replaced, even with ``overwrite``."""


def replace_regular_file(source: Path, target: Path) -> None:
    """``os.replace(source, target)``, unless ``target`` is anything but a regular file or
    absent: a symlink there is not replaced (nor followed, which rename never does)."""
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISREG(mode):
            raise NameTaken(f"the name {target.name!r} is taken by something that is not a file")
    os.replace(source, target)


def claim_unique_path(
    source: Path, directory: Path, name: str, *, overwrite: bool, exact: bool = False
) -> Path:
    """Move the finished temp file ``source`` to its final name in ``directory``.

    Without ``overwrite`` the name is claimed with ``os.link``, which fails atomically if
    the name exists, so concurrent uploads (threads or processes) never replace each other
    and no empty placeholder is ever visible. ``doc.pdf`` taken -> ``doc-1.pdf`` and so on.
    A name held by a symlink counts as taken and is never followed; with ``overwrite`` it
    is refused (``NameTaken``), as is a name held by a directory. With ``exact`` only
    ``name`` itself is tried (``KeyTaken`` when it exists).
    """
    if overwrite:
        target = ensure_inside(directory, name, follow_symlinks=False)
        replace_regular_file(source, target)
        return target

    def link(candidate: str) -> Path | None:
        target = ensure_inside(directory, candidate, follow_symlinks=False)
        try:
            os.link(source, target)
        except FileExistsError:
            return None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            return target if _claim_by_exclusive_create(source, target) else None
        os.unlink(source)
        return target

    return claim_first_free((name,) if exact else candidate_names(name), link)


def _claim_by_exclusive_create(source: Path, target: Path) -> bool:
    """Fallback for filesystems without hard links: reserve with O_EXCL, then replace."""
    try:
        fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    os.close(fd)
    os.replace(source, target)
    return True


def claim_first_free(candidates: Iterable[str], try_claim: Callable[[str], T | None]) -> T:
    """What ``try_claim`` returns for the first candidate it takes (it returns None when
    the name is taken); ``KeyTaken`` when every candidate is.

    The one loop of every backend's collision policy: each backend supplies only its
    atomic "create if absent" (``os.link``, ``If-None-Match: *``, ``ifGenerationMatch=0``,
    Azure's conditional commit), so the order of names and the bound on attempts are the
    same everywhere.
    """
    first = None
    for candidate in candidates:
        first = first or candidate
        claimed = try_claim(candidate)
        if claimed is not None:
            return claimed
    raise KeyTaken(f"no free name for {first!r}")


def probe_key(destination: object) -> str:
    """A hidden key that ``verify()`` writes and deletes: under a fixed destination (its
    root is what uploads need), at the top for a destination hook."""
    prefix = "" if callable(destination) else str(destination)
    return join_key(prefix, f".upload-verify-{secrets.token_hex(8)}.part")


def target_names(target: WriteRequest) -> Iterator[str]:
    """The names a writer may claim for ``target``, in order: its filename alone when it
    is ``exact``, else the filename and its suffixed variants (``candidate_names``)."""
    return iter((target.filename,)) if target.exact else candidate_names(target.filename)


def target_keys(target: WriteRequest) -> Iterator[str]:
    """``target_names`` as object-store keys under the target's destination."""
    for name in target_names(target):
        yield join_key(target.destination, name)


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
    "claim_first_free",
    "claim_unique_path",
    "ensure_inside",
    "join_key",
    "join_url",
    "probe_key",
    "sanitize_filename",
    "target_keys",
    "target_names",
    "truncate_name",
    "unique_keys",
]
