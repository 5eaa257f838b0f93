"""Safe names, and claiming a name so that concurrent uploads never replace each other."""

from __future__ import annotations

import itertools
import multiprocessing
import ntpath
import os
import re
import sys
import threading
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from filestore_fastapi import sanitize_filename
from filestore_fastapi.naming import (
    UnsafeName,
    candidate_names,
    check_safe_name,
    claim_unique_path,
    ensure_inside,
    is_windows_reserved,
    join_key,
    join_url,
    unique_keys,
)

SANITIZED = [
    # traversal and directories
    ("../../etc/passwd", "passwd"),
    ("/etc/passwd", "passwd"),
    ("uploads/../../../secret.txt", "secret.txt"),
    ("..\\..\\windows\\system32\\cmd.exe", "cmd.exe"),
    ("C:\\Users\\me\\report.pdf", "report.pdf"),
    ("C:report.pdf", "report.pdf"),
    ("\\\\server\\share\\doc.txt", "doc.txt"),
    # NUL, control and invisible characters
    ("evil\x00.txt", "evil.txt"),
    ("a\nb\rc\td\x7f.txt", "abcd.txt"),
    ("invoice\u202efdp.exe", "invoicefdp.exe"),
    ("zero\u200bwidth.txt", "zerowidth.txt"),
    # Unicode: NFC, kept otherwise
    ("e\u0301te\u0301.txt", "\u00e9t\u00e9.txt"),
    ("\u6587\u4ef6.pdf", "\u6587\u4ef6.pdf"),
    # unsafe characters become "_"
    ('a<b>c:d"e|f?g*h.txt', "a_b_c_d_e_f_g_h.txt"),
    ("fake\u2215slash.txt", "fake_slash.txt"),
    # never empty, ".", "..", hidden or a device name
    ("", "file"),
    (".", "file"),
    ("..", "file"),
    ("../", "file"),
    ("...", "file"),
    ("/", "file"),
    ("\x00", "file"),
    (".htaccess", "htaccess"),
    (" name with spaces .txt ", "name_with_spaces_.txt"),
    ("CON", "_CON"),
    ("nul.txt", "_nul.txt"),
    # ordinary names are left alone
    ("report_final-v2.pdf", "report_final-v2.pdf"),
    ("archive.tar.gz", "archive.tar.gz"),
]


@pytest.mark.parametrize(("raw", "safe"), SANITIZED)
def test_sanitize_filename(raw: str, safe: str) -> None:
    assert sanitize_filename(raw) == safe


@pytest.mark.parametrize(
    "raw",
    [raw for raw, _ in SANITIZED]
    + ["a" * 254 + " " + "b" * 10, "a" * 254 + "." + "b" * 40, "x" * 300, "\u00e9" * 200 + ". "],
)
def test_sanitized_names_are_single_safe_components_and_stable(raw: str) -> None:
    safe = sanitize_filename(raw)
    assert safe not in ("", ".", "..")
    assert not safe.startswith(".")
    assert "/" not in safe and "\\" not in safe and "\x00" not in safe
    assert len(safe.encode()) <= 255
    assert sanitize_filename(safe) == safe, "sanitising twice must change nothing"
    assert check_safe_name(safe) == safe


# Django's get_valid_filename and Werkzeug's secure_filename: what is not a letter, digit,
# mark, ".", "-" or "_" becomes "_", one "_" per run; edge whitespace is dropped, not replaced.
CONVENTION = [
    ("my report (final).pdf", "my_report_final_.pdf"),
    ("a    b.txt", "a_b.txt"),
    ("  padded name.txt  ", "padded_name.txt"),
    ("q&a; notes #1.txt", "q_a_notes_1.txt"),
    ('it\'s "quoted".txt', "it_s_quoted_.txt"),
    ("100%,$[x]{y}=@!~^`+.png", "100_x_y_.png"),
    ("keep_these-chars.v1.2.tar.gz", "keep_these-chars.v1.2.tar.gz"),
    ("client__underscores.txt", "client__underscores.txt"),  # only replaced runs collapse
    ("a_ b.txt", "a__b.txt"),
    ("na\u00efve\u2014draft.txt", "na\u00efve_draft.txt"),  # em dash
    ("A\u030angstro\u0308m re\u0301sume\u0301.pdf", "\u00c5ngstr\u00f6m_r\u00e9sum\u00e9.pdf"),
    ("\u6587\u4ef6 \u540d.pdf", "\u6587\u4ef6_\u540d.pdf"),
    ("\u3000\u5168\u89d2\u3000\u30b9\u30da\u30fc\u30b9.txt", "\u5168\u89d2_\u30b9\u30da\u30fc\u30b9.txt"),
    # marks are kept: Devanagari vowel signs and virama are part of their letters
    (
        "\u0939\u093f\u0928\u094d\u0926\u0940 \u092b\u093e\u0907\u0932.pdf",
        "\u0939\u093f\u0928\u094d\u0926\u0940_\u092b\u093e\u0907\u0932.pdf",
    ),
    ("x\u00b2 \u00bd.txt", "x\u00b2_.txt"),  # superscript two is a digit even under NFKC; "1/2" is not
    ("\ufb01le.txt", "\ufb01le.txt"),  # the "fi" ligature is letters under NFKC too
    ("report\u2122.pdf", "report_.pdf"),  # a symbol, though NFKC makes it "TM"
    ("\u2474 \u2488 draft.txt", "_draft.txt"),  # "(1)" and "1." under NFKC
    ("a\u0338b.txt", "a_b.txt"),  # a combining slash overlay draws a slash
    ("#", "_"),
]


@pytest.mark.parametrize(("raw", "safe"), CONVENTION)
def test_unsafe_characters_become_one_underscore_per_run(raw: str, safe: str) -> None:
    assert sanitize_filename(raw) == safe


# Names that today's rules stored unsafely (issue "Reliability", item 9), and what they become.
NFKC_AND_WINDOWS = [
    ("con" + " " * 252 + "zz", "con_zz"),  # cutting at 255 bytes used to leave "con"
    ("CONIN$", "CONIN_"),
    ("CONOUT$.log", "CONOUT_.log"),
    ("COM\u00b9.txt", "_COM\u00b9.txt"),
    ("lpt\u00b2", "_lpt\u00b2"),
    ("COM\u2074.txt", "_COM\u2074.txt"),  # COM4 under NFKC
    ("CON .txt", "CON_.txt"),
    ("..\ufe68..\ufe68etc\ufe68passwd", "_.._etc_passwd"),  # small reverse solidus
    ("\uff0e\uff0e", "_"),  # fullwidth full stops: ".." under NFKC
    ("\u2025", "_"),  # two dot leader
    ("\u2024htaccess", "_htaccess"),  # one dot leader
    ("C\uff1a", "C_"),  # fullwidth colon
    ("\uff23\uff2f\uff2e", "_\uff23\uff2f\uff2e"),  # fullwidth CON
    ("\uff2e\uff35\uff2c.txt", "_\uff2e\uff35\uff2c.txt"),
    ("CON\u3000.txt", "CON_.txt"),  # ideographic space
    ("COM\uff11", "_COM\uff11"),  # fullwidth digit one
    ("_" * 250 + "\u00e9" * 10, "_" * 250 + "\u00e9" * 2),  # cut on a character boundary
]


@pytest.mark.parametrize(("raw", "safe"), NFKC_AND_WINDOWS)
def test_names_stay_safe_under_nfkc_and_on_windows(raw: str, safe: str) -> None:
    assert sanitize_filename(raw) == safe
    assert_safe_everywhere(safe)


def assert_safe_everywhere(name: str) -> None:
    """What every sanitised name is, also once NFKC-normalised (as some filesystems, tools
    and comparisons do) and on Windows."""
    assert name and len(name.encode()) <= 255, name
    assert unicodedata.is_normalized("NFC", name), name
    assert not [ch for ch in name if unicodedata.category(ch) in ("Cc", "Cf")], name
    for form in (name, unicodedata.normalize("NFKC", name)):
        assert form not in (".", "..") and not form.startswith("."), form
        assert not set(form) & set("/\\:"), form
        assert not is_windows_reserved(form), form
        if hasattr(ntpath, "isreserved"):
            assert not ntpath.isreserved(form), form


# The characters the rules are about, so that random names hit them often.
TRICKY = (
    "./\\:$ _-"  # path syntax, the "$" of CONIN$, the kept punctuation
    "\u3000\u00a0\u2002"  # ideographic, no-break and en spaces
    "\uff0e\u2024\u2025\u2026\ufe52"  # full stops and dot leaders
    "\uff1a\ufe55\ufe13"  # colons
    "\uff0f\uff3c\ufe68\u2215\u2044\u29f8\u0338"  # slashes and look-alikes
    "\u00b9\u00b2\u00b3\u2074\u2460\u2488\uff11"  # superscript, circled, "1." and fullwidth digits
    "\uff23\uff2f\uff2e\u0131\u0301\u093f"  # fullwidth C O N, dotless i, combining marks
    "\x00\x1f\u200b\u202e\ufeff"  # control, zero-width, RTL override, BOM
)
DEVICES = [
    "CON",
    "con",
    "Aux",
    "NUL",
    "CONIN$",
    "conout$",
    "COM1",
    "LPT9",
    "COM\u00b9",
    "lpt\u00b2",
    "\uff23\uff2f\uff2e",
]
CHARACTERS = st.one_of(
    st.sampled_from(TRICKY),
    st.characters(),
    st.characters(min_codepoint=0xFF00, max_codepoint=0xFFEF),  # fullwidth and halfwidth forms
    st.characters(categories=["Mn", "Mc", "Me"]),
)
PIECES = st.one_of(
    st.text(CHARACTERS, max_size=12),
    st.sampled_from(DEVICES),
    st.sampled_from([" ", "  ", ".", "..", "\u3000", ".txt", "/", "\\", "C:"]),
    # long runs, so that cutting at 255 bytes happens in all sorts of places
    st.builds(
        lambda ch, n: ch * n,
        st.sampled_from([" ", ".", "_", "a", "\u00e9", "\u3000", "\u0301"]),
        st.integers(0, 300),
    ),
)
NAMES = st.lists(PIECES, max_size=6).map("".join)


@settings(max_examples=1000, deadline=None)
@given(NAMES)
def test_sanitising_twice_changes_nothing(raw: str) -> None:
    safe = sanitize_filename(raw)
    assert sanitize_filename(safe) == safe
    assert check_safe_name(safe) == safe


@settings(max_examples=1000, deadline=None)
@given(NAMES)
def test_every_sanitised_name_is_safe_everywhere(raw: str) -> None:
    safe = sanitize_filename(raw)
    assert_safe_everywhere(safe)
    kept = "._-"
    assert all(ch in kept or unicodedata.category(ch)[0] in "LNM" for ch in safe), safe


@pytest.mark.parametrize(
    ("name", "reserved"),
    [
        ("CON", True),
        ("con", True),
        ("nul.txt", True),
        ("NUL .tar.gz", True),
        ("CONIN$", True),
        ("conout$.log", True),
        ("COM1", True),
        ("LPT9.x", True),
        ("COM\u00b9", True),
        ("lpt\u00b3.txt", True),
        ("name.", True),
        ("name ", True),
        ("a:b", True),
        ("a|b", True),
        ("a\x1fb", True),
        ("COM0", False),
        ("COM10", False),
        ("COM\u2074", False),  # only the Latin-1 superscripts are device numbers
        ("CONIN", False),
        ("_CON", False),
        ("CON_.txt", False),
        ("console", False),
        (".", False),
        ("..", False),
        ("", False),
        ("report.pdf", False),
    ],
)
def test_windows_reserved_names(name: str, reserved: bool) -> None:
    assert is_windows_reserved(name) is reserved


@pytest.mark.skipif(not hasattr(ntpath, "isreserved"), reason="ntpath.isreserved is new in Python 3.13")
@settings(max_examples=2000, deadline=None)
@given(
    st.lists(st.one_of(st.sampled_from(DEVICES), st.text(CHARACTERS, max_size=4)), max_size=3).map("".join)
)
def test_the_windows_rule_is_ntpath_isreserved(name: str) -> None:
    component = name.replace("\\", "").replace("/", "")
    assume(not ntpath.splitroot(component)[0])  # "C:x" is a drive and a relative name to ntpath
    assert is_windows_reserved(component) == ntpath.isreserved(component)


def test_long_name_is_capped_at_255_bytes_keeping_the_extension() -> None:
    assert sanitize_filename("a" * 300 + ".pdf") == "a" * 251 + ".pdf"


def test_long_multibyte_name_is_cut_on_a_character_boundary() -> None:
    safe = sanitize_filename("\u00e9" * 200 + ".txt")
    assert safe.endswith(".txt")
    assert len(safe.encode()) <= 255
    assert set(safe.removesuffix(".txt")) == {"\u00e9"}
    assert len(safe.encode()) >= 253  # only as much cut as needed


@pytest.mark.parametrize(
    "name",
    [
        "../x.txt",
        "a/b.txt",
        ".hidden",
        "x\x00.txt",
        "con",
        "",
        " ",
        "my report.pdf",
        "CONIN$",
        "\uff23\uff2f\uff2e",
    ],
)
def test_check_safe_name_refuses_what_sanitising_would_change(name: str) -> None:
    with pytest.raises(UnsafeName):
        check_safe_name(name)


def test_candidate_names_add_a_numeric_suffix_before_the_extension() -> None:
    names = candidate_names("doc.pdf")
    assert [next(names) for _ in range(4)] == ["doc.pdf", "doc-1.pdf", "doc-2.pdf", "doc-3.pdf"]
    no_ext = candidate_names("README")
    assert [next(no_ext) for _ in range(2)] == ["README", "README-1"]


def test_candidate_names_stay_within_the_length_cap() -> None:
    long = sanitize_filename("a" * 300 + ".pdf")
    names = candidate_names(long)
    for name in [next(names) for _ in range(12)][1:]:
        assert len(name.encode()) <= 255
        assert name.endswith(".pdf")
    assert name.endswith("-11.pdf")


def test_object_keys_follow_the_same_order() -> None:
    keys = unique_keys("doc.pdf", "images/")
    assert [next(keys) for _ in range(3)] == ["images/doc.pdf", "images/doc-1.pdf", "images/doc-2.pdf"]
    assert join_key(".", "a.txt") == "a.txt"
    assert join_key("", "a.txt") == "a.txt"
    assert join_key("/a/b/", "c.txt") == "a/b/c.txt"


def test_join_url_percent_encodes_the_key() -> None:
    assert join_url("/media/", "my report #1?.pdf") == "/media/my%20report%20%231%3F.pdf"
    assert join_url("https://cdn.example/x", "dir/\u00e9.txt") == "https://cdn.example/x/dir/%C3%A9.txt"
    assert join_url(None, "a.txt") is None


@pytest.mark.parametrize("name", ["../escape.txt", "/etc/passwd", "", ".", "a/../../b"])
def test_ensure_inside_refuses_names_that_leave_the_directory(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnsafeName):
        ensure_inside(tmp_path, name)


def test_ensure_inside_checks_after_resolving_symlinks(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    destination = tmp_path / "uploads"
    destination.mkdir()
    (destination / "link").symlink_to(outside)
    (destination / "dangling.txt").symlink_to(outside / "not-yet.txt")
    with pytest.raises(UnsafeName):
        ensure_inside(destination, "link/x.txt")
    with pytest.raises(UnsafeName):
        ensure_inside(destination, "dangling.txt")
    assert ensure_inside(destination, "fine.txt") == destination.resolve() / "fine.txt"


def _temp(directory: Path, content: bytes) -> Path:
    path = directory / f".upload-{os.getpid()}-{threading.get_ident()}-{content.hex()}.part"
    path.write_bytes(content)
    return path


def test_claim_unique_path_suffixes_collisions(tmp_path: Path) -> None:
    claimed = [
        claim_unique_path(_temp(tmp_path, bytes([i])), tmp_path, "doc.pdf", overwrite=False) for i in range(3)
    ]
    assert [path.name for path in claimed] == ["doc.pdf", "doc-1.pdf", "doc-2.pdf"]
    assert [path.read_bytes() for path in claimed] == [b"\x00", b"\x01", b"\x02"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["doc-1.pdf", "doc-2.pdf", "doc.pdf"]


def test_claim_unique_path_with_overwrite_replaces(tmp_path: Path) -> None:
    first = claim_unique_path(_temp(tmp_path, b"old"), tmp_path, "doc.pdf", overwrite=True)
    second = claim_unique_path(_temp(tmp_path, b"new"), tmp_path, "doc.pdf", overwrite=True)
    assert first == second
    assert second.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["doc.pdf"]


def test_claim_unique_path_never_follows_a_symlink_out(tmp_path: Path) -> None:
    destination = tmp_path / "uploads"
    destination.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    (destination / "doc.txt").symlink_to(victim)
    for overwrite in (False, True):
        try:
            claimed = claim_unique_path(
                _temp(destination, b"upload"), destination, "doc.txt", overwrite=overwrite
            )
        except UnsafeName:
            continue  # refusing is fine; writing through the link is not
        assert claimed.parent == destination.resolve()
        assert not claimed.is_symlink()
        assert claimed.read_bytes() == b"upload"
    assert victim.read_bytes() == b"precious"


def test_claim_unique_path_is_atomic_across_threads(tmp_path: Path) -> None:
    workers, rounds = 12, 12
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show up
    barrier = threading.Barrier(workers)
    claimed: list[tuple[Path, bytes]] = []
    lock = threading.Lock()

    def claim(worker: int) -> None:
        temps = [(_temp(tmp_path, f"thread {worker} round {i}".encode()), i) for i in range(rounds)]
        barrier.wait()
        for temp, i in temps:
            path = claim_unique_path(temp, tmp_path, "same.txt", overwrite=False)
            with lock:
                claimed.append((path, f"thread {worker} round {i}".encode()))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(workers)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(previous)

    assert len({path for path, _ in claimed}) == workers * rounds
    for path, content in claimed:
        assert path.read_bytes() == content
    assert len(list(tmp_path.iterdir())) == workers * rounds, "no temp file left, none lost"


def _claim_in_process(
    directory: str, worker: int, rounds: int, barrier: threading.Barrier, results: multiprocessing.Queue[Any]
) -> None:
    """Runs in a child process: prepare temp files, wait for the others, claim one name."""
    temps = [_temp(Path(directory), f"process {worker} round {i}".encode()) for i in range(rounds)]
    barrier.wait()
    paths = [str(claim_unique_path(temp, Path(directory), "same.txt", overwrite=False)) for temp in temps]
    results.put((worker, paths))


def test_claim_unique_path_is_atomic_across_processes(tmp_path: Path) -> None:
    workers, rounds = 4, 50
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])  # import once, then fork: a spawn per worker is slow
    barrier = context.Barrier(workers)
    queue = context.Queue()
    processes = [
        context.Process(target=_claim_in_process, args=(str(tmp_path), worker, rounds, barrier, queue))
        for worker in range(workers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0, "a claiming process failed"
    results = dict(queue.get(timeout=5) for _ in processes)

    claimed = [path for paths in results.values() for path in paths]
    assert len(set(claimed)) == workers * rounds
    for worker, paths in results.items():
        for i, path in enumerate(paths):
            assert Path(path).read_bytes() == f"process {worker} round {i}".encode()
    assert len(list(tmp_path.iterdir())) == workers * rounds


def test_after_sixteen_namesakes_the_suffix_is_random_so_probing_stays_short() -> None:
    names = list(itertools.islice(candidate_names("doc.pdf"), 20))
    assert names[:3] == ["doc.pdf", "doc-1.pdf", "doc-2.pdf"]
    assert names[16] == "doc-16.pdf"
    random_tail = names[17:]
    assert all(re.fullmatch(r"doc-[0-9a-f]{8}\.pdf", name) for name in random_tail)
    assert len(set(random_tail)) == len(random_tail)
