"""Item 1: hostile file names, with sanitising on and off, on every backend.

The object always lands directly inside the destination (local) or under the key prefix
(memory, clouds). With sanitising off an unsafe name is refused (422), never stored raw;
a name the parser itself already reduced to a safe one may be stored as it arrived.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from filestore_fastapi import FileData, LocalStorage, Storage, sanitize_filename
from tests.contract.conftest import KEEPS_NOTHING, ContractHarness
from tests.test_naming import assert_safe_everywhere

from .routes import upload_app
from .support import asgi_post, file_part, form


@dataclass(frozen=True)
class Hostile:
    """A name as the client sends it. ``raw`` bytes go between the quotes unescaped;
    ``disposition`` replaces the whole Content-Disposition parameters after ``name``."""

    id: str
    name: str | bytes
    on: int = 200  # status with sanitising on
    off: int = 422  # status with sanitising off
    raw: bool = False
    disposition: bytes | None = None


HOSTILE = [
    Hostile("dotdot-posix", "../../../../etc/passwd"),
    Hostile("dotdot-windows", "..\\..\\..\\windows\\win.ini"),
    Hostile("dotdot-mixed", "..\\../..\\../x.txt"),
    Hostile("dotdot-alone", ".."),
    Hostile("dot-alone", "."),
    Hostile("only-dots", "......"),
    Hostile("only-spaces", "     "),
    Hostile("dots-and-spaces", " . . . "),
    Hostile("absolute-posix", "/etc/shadow"),
    Hostile("absolute-posix-deep", "/var/www/html/index.php"),
    # python-multipart already cuts an IE-style "C:\..." path to its last component.
    Hostile("absolute-windows", "C:\\Windows\\System32\\drivers\\etc\\hosts", off=200),
    Hostile("drive-relative", "C:evil.txt"),
    Hostile("drive-forward-slash", "c:/boot.ini"),
    Hostile("unc", "\\\\server\\share\\secret.txt"),
    Hostile("unc-forward-slash", "//server/share/secret.txt"),
    Hostile("win32-device-namespace", "\\\\?\\C:\\evil.txt"),
    Hostile("nul-byte", b"evil.txt\x00.png", raw=True, on=400, off=400),
    Hostile("cr-lf-injection", b"a.txt\r\nContent-Type: text/html", raw=True, on=400, off=400),
    Hostile("newline-escaped", "a\nb.txt"),  # a browser sends a%0Ab.txt: "%" is no name character
    Hostile("control-chars", b"a\x01b\x1fc\x7f.txt", raw=True),
    Hostile("tab", b"a\tb.txt", raw=True),
    Hostile("escape-sequence", b"\x1b[31mred\x1b[0m.txt", raw=True),
    Hostile("rtl-override", "invoice\u202egpj.exe"),
    Hostile("zero-width", "in\u200bvoice\u200d.pdf\u2060"),
    Hostile("bom", "\ufeffreport.txt"),
    Hostile("division-slash", "..\u2215..\u2215etc\u2215passwd"),
    Hostile("fraction-slash", "..\u2044secret.txt"),
    Hostile("fullwidth-slash", "..\uff0f..\uff0fsecret.txt"),
    Hostile("fullwidth-backslash", "..\uff3c..\uff3csecret.txt"),
    Hostile("big-solidus", "..\u29f8secret.txt"),
    Hostile("long-1000-bytes", "a" * 996 + ".txt"),
    Hostile("long-multibyte", "\u00e9" * 500 + ".png"),
    Hostile("windows-con", "CON"),
    Hostile("windows-nul-ext", "NUL.txt"),
    Hostile("windows-com1", "com1.log"),
    Hostile("windows-lpt9", "LPT9"),
    Hostile("windows-conin", "CONIN$"),
    Hostile("windows-conout-ext", "CONOUT$.log"),
    Hostile("windows-com-superscript", "COM\u00b9.txt"),
    Hostile("windows-lpt-superscript", "lpt\u00b2"),
    Hostile("windows-con-space-ext", "CON .txt"),
    Hostile("windows-con-ideographic-space", "CON\u3000.txt"),  # "CON .txt" under NFKC
    Hostile("truncation-exposes-con", "con" + " " * 252 + "zz"),
    # Characters that NFKC turns into path syntax, dots or device names.
    Hostile("small-reverse-solidus", "..\ufe68..\ufe68etc\ufe68passwd"),
    Hostile("fullwidth-dotdot", "\uff0e\uff0e"),
    Hostile("two-dot-leader", "\u2025"),
    Hostile("fullwidth-colon-drive", "C\uff1a"),
    Hostile("fullwidth-con", "\uff23\uff2f\uff2e"),
    Hostile("htaccess", ".htaccess"),
    Hostile("dotenv", ".env"),
    Hostile("trailing-dot-space", "shell.php. . "),
    Hostile("alternate-data-stream", "file.txt::$DATA"),
    Hostile("trailing-slash", "uploads/"),
    Hostile("url", "http://evil.example/x.txt"),
    Hostile("shell-metacharacters", "$(reboot);`id`|x.txt"),
    Hostile("percent-traversal", "..%2F..%2Fetc%2Fpasswd"),  # literal percent signs, leading dots
    Hostile("latin1-not-utf8", b"caf\xe9.txt", raw=True, off=200),
    Hostile("overlong-utf8-slash", b"..\xc0\xaf..\xc0\xafetc\xc0\xafpasswd", raw=True),
    Hostile("invalid-utf8", b"\xff\xfe\xfd.bin", raw=True, off=200),
    # filename* is decoded and wins over filename (RFC 6266): its traversal is sanitised too.
    Hostile("rfc5987-only", "", disposition=b"; filename*=UTF-8''..%2F..%2Fetc%2Fpasswd"),
    Hostile(
        "rfc5987-beside-filename",
        "",
        disposition=b"; filename=\"safe.txt\"; filename*=UTF-8''..%2F..%2Fevil.sh",
    ),
    Hostile("empty", "", on=422),
]


def body_for(case: Hostile, data: bytes) -> bytes:
    if case.disposition is not None:
        part = b'Content-Disposition: form-data; name="file"' + case.disposition + b"\r\n\r\n" + data
        return form(part)
    return form(file_part("file", case.name, data, raw_filename=case.raw))


def test_the_table_is_big_enough() -> None:
    assert len(HOSTILE) >= 60
    assert len({case.id for case in HOSTILE}) == len(HOSTILE)


def _assert_inside(harness: ContractHarness, storage: Storage, key: str) -> None:
    """``key`` is a single safe component directly in the destination or under the prefix."""
    destination = storage.config.destination
    if isinstance(storage, LocalStorage):
        assert isinstance(destination, Path)
        name = key
    else:
        prefix = str(destination).strip("/")
        if prefix in ("", "."):
            name = key
        else:
            assert key.startswith(prefix + "/"), f"{key!r} is not under {prefix!r}"
            name = key[len(prefix) + 1 :]
    assert name and "/" not in name and "\\" not in name, name
    assert name not in (".", "..") and not name.startswith("."), name
    assert sanitize_filename(name) == name, name
    assert_safe_everywhere(name)


@dataclass
class Shared:
    """One storage per backend and mode for the whole table (a cloud client and bucket cost
    far more than an upload; collisions between cases are part of the test), and the keys
    the uploads were answered with."""

    storage: Storage
    answered: set[str]


@pytest.fixture(scope="module")
def shared() -> dict[tuple[str, bool], Shared]:
    return {}


CHEAP_LISTING = ("local", "memory")


@pytest.mark.parametrize("sanitize", [True, False], ids=["sanitise-on", "sanitise-off"])
@pytest.mark.parametrize("case", HOSTILE, ids=[case.id for case in HOSTILE])
async def test_hostile_name_never_leaves_the_destination(
    harness: ContractHarness, case: Hostile, sanitize: bool, shared: dict[tuple[str, bool], Shared]
) -> None:
    if (harness.name, sanitize) not in shared:
        shared[harness.name, sanitize] = Shared(harness.make("file", sanitize_filename=sanitize), set())
    storage, answered = shared[harness.name, sanitize].storage, shared[harness.name, sanitize].answered
    expected = case.on if sanitize else case.off
    # Listing a cloud bucket costs more than the upload: list around refusals only there,
    # and compare the whole bucket with the answered keys once, at the end of the module.
    listed = expected != 200 or harness.name in CHEAP_LISTING
    before = await harness.leftovers(storage) if listed else []
    data = f"payload of {case.id}".encode()

    reply = await asgi_post(upload_app(storage), body_for(case, data))

    assert reply.status == expected, reply.body
    after = await harness.leftovers(storage) if listed else []
    if expected != 200:
        assert after == before
        return
    (stored,) = reply.json()["files"]
    key = stored["filename"]
    _assert_inside(harness, storage, key)
    answered.add(key)
    assert stored["sha256"] == hashlib.sha256(data).hexdigest()
    if harness.name not in KEEPS_NOTHING:  # memory: the bytes were the handler's, kept nowhere
        if listed:
            assert sorted(set(after) - set(before)) == [key] and set(before) <= set(after)
        assert await harness.read_back(storage, FileData.model_validate(stored)) == data
    if not sanitize:
        # Stored exactly as the parser delivered it, which then was no path.
        assert key.rsplit("/", 1)[-1] == stored["original_filename"]
    if isinstance(storage, LocalStorage):
        destination = storage.config.destination
        assert isinstance(destination, Path)
        stored_path = destination / stored["filename"]
        assert stored_path.is_file() and stored_path.resolve().parent == destination.resolve()
        # Nothing landed beside the destination (the harness keeps one root for all of them).
        beside = [p.name for p in destination.parent.iterdir() if not p.is_dir() or p.name[:5] != "dest-"]
        assert beside == []
    assert reply.json()["fields"] == []


async def test_every_destination_holds_exactly_the_answered_keys(
    harness: ContractHarness, shared: dict[tuple[str, bool], Shared]
) -> None:
    """Runs after the table: no upload left a second object, a temp object or a stray key."""
    for sanitize in (True, False):
        entry = shared.get((harness.name, sanitize))
        if entry is None:
            pytest.skip("the table did not run for this backend in this session")
        kept = [] if harness.name in KEEPS_NOTHING else sorted(entry.answered)
        assert sorted(await harness.leftovers(entry.storage)) == kept
