"""Safe names, and claiming a name so that concurrent uploads never replace each other."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import re
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from filestore_fastapi import sanitize_filename
from filestore_fastapi.naming import (
    UnsafeName,
    candidate_names,
    check_safe_name,
    claim_unique_path,
    ensure_inside,
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
    (" name with spaces .txt ", "name with spaces .txt"),
    ("CON", "_CON"),
    ("nul.txt", "_nul.txt"),
    # ordinary names are left alone
    ("report (final) v2.pdf", "report (final) v2.pdf"),
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


def test_long_name_is_capped_at_255_bytes_keeping_the_extension() -> None:
    assert sanitize_filename("a" * 300 + ".pdf") == "a" * 251 + ".pdf"


def test_long_multibyte_name_is_cut_on_a_character_boundary() -> None:
    safe = sanitize_filename("\u00e9" * 200 + ".txt")
    assert safe.endswith(".txt")
    assert len(safe.encode()) <= 255
    assert set(safe.removesuffix(".txt")) == {"\u00e9"}
    assert len(safe.encode()) >= 253  # only as much cut as needed


@pytest.mark.parametrize("name", ["../x.txt", "a/b.txt", ".hidden", "x\x00.txt", "con", "", " "])
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
