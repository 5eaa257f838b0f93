"""LocalBackend: files on the server's disk, each byte written once.

A file streams into a temp file inside its destination directory and is linked to its
final name when its part ends, so a partial file never carries a final name.

A temp file is named after its writer: ``.upload-<host>-<pid>-<start>-<random>.part``,
with a short hash of the host name, the process id and the process's start time (so that
a reused pid is not taken for its predecessor), and the writer holds a shared ``flock`` on
it while it lives. A temp file of this host whose process is gone, and that nobody holds,
belongs to an upload that can never finish (a server killed mid-body): a storage removes
such files from its destination when it starts, and from each directory it writes into
once every ``sweep_interval`` seconds. ``cleanup(older_than)`` removes old ``.upload-*``
files of any host, for disks that several machines share.

With ``overwrite=True`` the file a commit replaces is first hard-linked aside, to a
``.upload-…-<random>.bak`` of the same writer in the same directory, so that a request
failing after its commit (a later file, the handler, a cancellation) gets it back,
the same inode, bytes and mode; a request that succeeds unlinks it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import re
import secrets
import socket
import stat
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import ClassVar

import anyio

from ..buffer import ChunkBuffer
from ..config import Config
from ..filedata import FileData
from ..naming import NameTaken, UnsafeName, claim_unique_path, ensure_inside, join_url
from .base import (
    Backend,
    Chunk,
    KeyTaken,
    NotFound,
    ObjectInfo,
    StorageUnavailable,
    StoredFile,
    Writer,
    WriterClosed,
    WriteRequest,
)

logger = logging.getLogger("filestore_fastapi")

TEMP_PREFIX = ".upload-"
COPY_BLOCK = 1024 * 1024
_NO_COPY_RANGE = frozenset({errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL})
"""Why ``copy_file_range`` may refuse a pair of files: then they are copied through a buffer."""
TEMP_SUFFIX = ".part"
BACKUP_SUFFIX = ".bak"
FILE_MODE = 0o644
IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024
# A file this small is written, closed and linked on the event loop: on two busy cores a
# thread hop cost ~0.5 ms of CPU per upload, several times the syscalls it would carry
# (benchmarks case 3: 1050 uploads/s instead of 803).
SMALL_FILE = 64 * 1024
# Hard links unsupported (some FUSE, SMB and FAT mounts).
_NO_LINKS = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP)
_OWNED = re.compile(r"^\.upload-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-(?P<start>\d+)-.*\.(?:part|bak)$")

HOST_ID = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
"""This host, as temp file names carry it."""


def process_start_time(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (field 22 of ``/proc/<pid>/stat``);
    None where there is no such file."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_bytes().rpartition(b")")[2].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


_owner: tuple[int, str] | None = None


def owner_tag() -> str:
    """``<host>-<pid>-<start>`` of this process (start ``0`` where unknown)."""
    global _owner
    pid = os.getpid()
    if _owner is None or _owner[0] != pid:  # computed again in a forked child
        _owner = (pid, f"{HOST_ID}-{pid}-{process_start_time(pid) or 0}")
    return _owner[1]


def _owned_prefix() -> str:
    """How this process's hidden files begin: ``writer_is_gone`` reads the owner back."""
    return f"{TEMP_PREFIX}{owner_tag()}-"


def writer_is_gone(name: str) -> bool:
    """Whether the temp or backup file ``name`` is provably of a writer that no longer runs:
    it carries this host's id, and its pid is not alive or was started at another time.
    Any other name (another host, an older release's) is never taken for gone."""
    owner = _OWNED.match(name)
    if owner is None or owner["host"] != HOST_ID:
        return False
    pid, started = int(owner["pid"]), int(owner["start"])
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    except OSError:
        return False
    if started == 0:
        return False  # no start time to tell a reused pid from its predecessor
    current = process_start_time(pid)
    return current is not None and current != started


def _hold(fd: int) -> None:
    """A shared lock on ``fd`` for as long as it is open: the proof that the file is live,
    also for a sweeper in another pid namespace with the same host name."""
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)


def _remove_unheld(path: Path) -> bool:
    """Unlink the regular file ``path`` unless a live writer holds it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return False
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        current = os.lstat(path)
        if (current.st_dev, current.st_ino) != (info.st_dev, info.st_ino):
            return False  # renamed back meanwhile (a revert), or replaced
        os.unlink(path)
        return True
    except OSError:  # held (EWOULDBLOCK), gone, or not ours to remove
        return False
    finally:
        os.close(fd)


def sweep_dead(directory: Path) -> int:
    """Remove the temp and backup files in ``directory`` (not below) whose writer is gone."""
    removed = 0
    try:
        entries = os.scandir(directory)
    except OSError:
        return 0
    with entries:
        for entry in entries:
            if entry.name.startswith(TEMP_PREFIX) and writer_is_gone(entry.name):
                removed += _remove_unheld(Path(entry.path))
    if removed:
        logger.info("removed %d temp files of uploads whose process is gone from %s", removed, directory)
    return removed


def remove_old(directories: Iterable[Path], cutoff: float) -> int:
    """Remove the ``.upload-*`` files under ``directories`` last modified before ``cutoff``."""
    removed = 0
    for directory in directories:
        for root, _, names in os.walk(directory):  # symlinked directories are not entered
            for name in names:
                if not name.startswith(TEMP_PREFIX):
                    continue
                path = Path(root, name)
                try:
                    info = os.lstat(path)
                except OSError:
                    continue
                if stat.S_ISREG(info.st_mode) and info.st_mtime < cutoff:
                    removed += _remove_unheld(path)
    return removed


class _Sweeper:
    """Sweeps each directory a storage writes into at most once per ``interval``, in a
    daemon thread of its own, so that no upload waits for it."""

    MAX_DIRECTORIES = 4096  # remembered; a forgotten one is only swept again sooner

    def __init__(self, interval: float, name: str) -> None:
        self.interval = interval
        self._name = name
        self._lock = threading.Lock()
        self._swept: OrderedDict[str, float] = OrderedDict()
        self._queue: list[Path] = []
        self._running = False

    def _due(self, directory: Path) -> bool:
        key, now = os.fspath(directory), time.monotonic()
        last = self._swept.get(key)
        if last is not None and now - last < self.interval:
            return False
        self._swept[key] = now
        self._swept.move_to_end(key)
        while len(self._swept) > self.MAX_DIRECTORIES:
            self._swept.popitem(last=False)
        return True

    def sweep_now(self, directory: Path) -> None:
        with self._lock:
            due = self._due(directory)
        if due:
            self._sweep(directory)

    def note(self, directory: Path) -> None:
        """An upload goes to ``directory``: sweep it in the background if it is due."""
        with self._lock:
            if not self._due(directory):
                return
            self._queue.append(directory)
            if self._running:
                return
            self._running = True
        threading.Thread(target=self._drain, name=self._name, daemon=True).start()

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._running = False
                    return
                directory = self._queue.pop(0)
            self._sweep(directory)

    @staticmethod
    def _sweep(directory: Path) -> None:
        try:
            sweep_dead(directory)
        except Exception:
            logger.warning("could not look for dead uploads' temp files in %s", directory, exc_info=True)


def _open_temp(directory: Path) -> tuple[int, Path]:
    prefix = _owned_prefix()
    try:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=TEMP_SUFFIX, dir=directory)
    except FileNotFoundError:  # made only when missing: a mkdir per upload showed in the profile
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=TEMP_SUFFIX, dir=directory)
    try:
        os.fchmod(fd, FILE_MODE)  # mkstemp's 0600 would hide uploads from a static file server
        _hold(fd)
    except BaseException:
        os.close(fd)
        os.unlink(name)
        raise
    return fd, Path(name)


def _link_temp(directory: Path, source: Path) -> tuple[int, Path]:
    """A temp file that is another name of the file ``source`` (which must not change: a
    resumable upload's piece), open and held like one ``_open_temp`` made."""
    directory.mkdir(parents=True, exist_ok=True)
    while True:
        temp = directory / f"{_owned_prefix()}{secrets.token_hex(8)}{TEMP_SUFFIX}"
        try:
            os.link(source, temp)
        except FileExistsError:
            continue
        break
    try:
        fd = os.open(temp, os.O_RDWR)
        try:
            _hold(fd)
        except BaseException:
            os.close(fd)
            raise
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return fd, temp


def _write_all(fd: int, chunks: Sequence[Chunk]) -> None:
    """``writev`` the chunks, resuming after short writes."""
    pending = [memoryview(chunk) for chunk in chunks]
    while pending:
        batch = pending[:IOV_MAX]
        written = os.writev(fd, batch)
        while written and pending:
            head = pending[0]
            if written >= len(head):
                written -= len(head)
                pending.pop(0)
            else:
                pending[0] = head[written:]
                written = 0


def _append_file(source: Path, fd: int) -> None:
    """Append the file ``source`` to ``fd`` inside the kernel (``copy_file_range``, a
    reflink where the file system has them), else through a buffer."""
    with open(source, "rb") as handle:
        remaining = os.fstat(handle.fileno()).st_size
        while remaining:
            try:
                copied = os.copy_file_range(handle.fileno(), fd, remaining)
            except (AttributeError, OSError) as exc:  # not Linux, or not across these files
                if isinstance(exc, OSError) and exc.errno not in _NO_COPY_RANGE:
                    raise
                while block := handle.read(COPY_BLOCK):
                    _write_all(fd, [block])
                return
            if copied == 0:
                raise OSError(errno.EIO, f"{source.name} shrank while it was copied")
            remaining -= copied


class _Backup:
    """The file a commit replaced, hard-linked aside and held until release or revert."""

    def __init__(self, path: Path, fd: int | None, size: int) -> None:
        self.path = path
        self.fd = fd
        self.size = size

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)


def _backup_name(directory: Path) -> Path:
    return directory / f"{_owned_prefix()}{secrets.token_hex(4)}{BACKUP_SUFFIX}"


def _replace_keeping_backup(temp: Path, target: Path) -> _Backup | None:
    """Put ``temp`` at ``target``. A regular file there is first hard-linked to a backup
    (one ``link``); a symlink or anything but a regular file is refused (``NameTaken``)."""
    for _ in range(3):
        try:
            info = os.lstat(target)
        except FileNotFoundError:
            try:
                os.link(temp, target)  # only while the name is free: else back up what came
            except FileExistsError:
                continue
            except OSError as exc:
                if exc.errno not in _NO_LINKS:
                    raise
                os.replace(temp, target)
                return None
            os.unlink(temp)
            return None
        if not stat.S_ISREG(info.st_mode):
            raise NameTaken(f"the name {target.name!r} is taken by something that is not a file")
        backup = _backup_name(target.parent)
        try:
            os.link(target, backup, follow_symlinks=False)
            linked = True
        except FileNotFoundError:
            continue
        except OSError as exc:
            if exc.errno not in _NO_LINKS:
                raise
            os.rename(target, backup)  # no hard links here: the name is briefly absent
            linked = False
        try:
            fd = os.open(backup, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            fd = None  # a symlink raced in: refused below
        if fd is None or not stat.S_ISREG(os.fstat(fd).st_mode):
            if fd is not None:
                os.close(fd)
            if linked:
                backup.unlink()
            else:
                os.replace(backup, target)
            raise NameTaken(f"the name {target.name!r} is taken by something that is not a file")
        _hold(fd)
        kept = _Backup(backup, fd, info.st_size)
        try:
            os.replace(temp, target)
        except BaseException:
            if linked:
                backup.unlink(missing_ok=True)
            else:
                os.replace(backup, target)
            kept.close()
            raise
        return kept
    raise FileExistsError(errno.EEXIST, f"{target.name!r} kept changing while it was replaced")


class LocalWriter(Writer):
    """Gathers views (no copies) up to ``chunk_size``, then one ``writev`` off the loop.

    The temp file is created by the first write that reaches the disk, and the last write,
    link and close happen in one thread hop, or none for a file under ``SMALL_FILE``.
    """

    def __init__(self, storage: LocalBackend, target: WriteRequest) -> None:
        self._storage = storage
        self._target = target
        self._directory = Path(target.destination)
        self._fd: int | None = None
        self._temp: Path | None = None
        self._pending = ChunkBuffer()
        self._aborted = False
        self._committed: Path | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the committed file
        self._backup: _Backup | None = None

    async def write(self, chunk: Chunk) -> None:
        self._pending.append(chunk)
        if self._pending.size >= self._storage.config.chunk_size:
            chunks = self._pending.take()
            await anyio.to_thread.run_sync(self._write, chunks)

    def write_batch_blocking(self, chunks: Sequence[Chunk]) -> None:
        """``BatchWriter``: one ``writev`` of ``chunks`` now, in the caller's (worker) thread."""
        if self._aborted:
            raise WriterClosed("write after abort()")
        self._write(chunks)

    def fill_from(self, sources: Sequence[Path]) -> None:
        """Start the temp file as the concatenation of the files ``sources`` (in a thread).
        One source is not copied at all: the temp file is a second link to it."""
        if len(sources) == 1:
            try:
                self._fd, self._temp = _link_temp(self._directory, sources[0])
                return
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                    raise  # else a file system without hard links: copied
        self._write(())
        assert self._fd is not None
        for source in sources:
            _append_file(source, self._fd)

    def _write(self, chunks: Sequence[Chunk]) -> None:
        if self._fd is None:
            self._fd, self._temp = _open_temp(self._directory)
        if chunks:
            _write_all(self._fd, chunks)

    async def commit(self) -> StoredFile:
        if self._aborted:
            raise WriterClosed("commit() after abort(): nothing is stored")
        size = self._pending.size
        chunks = self._pending.take()
        try:
            if self._fd is None and size <= SMALL_FILE:
                path = self._finish(chunks)  # a few syscalls: cheaper here than a thread hop
            else:
                path = await anyio.to_thread.run_sync(self._finish, chunks)
        except NameTaken:
            raise KeyTaken(
                f"the name {self._target.filename!r} is taken by something that is not a file"
            ) from None
        self._committed = path
        return StoredFile(
            filename=path.name,
            path=path,
            url=join_url(self._storage.config.base_url, path.name),
            metadata={"relative_path": self._relative_path(path.name)},
        )

    def _relative_path(self, name: str) -> str:
        """``name`` relative to the destination: with a destination hook, under the folder
        the hook returned when it is relative (``2026/11/report.pdf``); never absolute."""
        if not callable(self._storage.config.destination):
            return name
        folder = PurePosixPath(Path(self._target.destination).as_posix())
        return name if folder.is_absolute() else (folder / name).as_posix()

    def _finish(self, chunks: Sequence[Chunk]) -> Path:
        self._write(chunks)
        assert self._fd is not None and self._temp is not None
        identity = os.fstat(self._fd)
        # Linked while still open, so its lock says "live" until it has its final name.
        if self._target.replaces(self._storage.config):
            path = ensure_inside(self._temp.parent, self._target.filename, follow_symlinks=False)
            self._backup = _replace_keeping_backup(self._temp, path)
        else:
            path = claim_unique_path(
                self._temp,
                self._temp.parent,
                self._target.filename,
                overwrite=False,
                exact=self._target.exact,
            )
        self._identity = (identity.st_dev, identity.st_ino)
        self._close()
        return path

    def _close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    async def abort(self) -> None:
        self._aborted = True
        self._pending.clear()
        if self._temp is not None or self._fd is not None:
            await anyio.to_thread.run_sync(self._discard)

    def _discard(self) -> None:
        self._close()
        if self._temp is not None:
            self._temp.unlink(missing_ok=True)

    async def revert(self) -> None:
        if self._committed is not None:
            await anyio.to_thread.run_sync(self._revert)

    def _revert(self) -> None:
        """Remove the committed file, or put back the one it replaced; a file another
        request put under the name since is left alone."""
        path, self._committed = self._committed, None
        backup, self._backup = self._backup, None
        assert path is not None
        try:
            try:
                current = os.lstat(path)
            except FileNotFoundError:
                ours, gone = False, True
            else:
                ours, gone = (current.st_dev, current.st_ino) == self._identity, False
            if backup is not None:
                if ours or gone:
                    os.replace(backup.path, path)
                else:
                    backup.path.unlink(missing_ok=True)
            elif ours:
                path.unlink(missing_ok=True)
        finally:
            if backup is not None:
                backup.close()

    async def release(self) -> None:
        backup, self._backup = self._backup, None
        self._committed = None
        if backup is None:
            return
        if backup.size <= SMALL_FILE:
            self._release(backup)  # one unlink
        else:  # freeing a large file's blocks can take a while
            await anyio.to_thread.run_sync(self._release, backup)

    def _release(self, backup: _Backup) -> None:
        # Closed first: unlinking a file that is still open makes ext4 keep it on its orphan
        # list until the close, which cost ~1.5 ms per file here instead of ~20 us. Our pid
        # is alive, so no sweeper takes the backup for a dead writer's in between.
        backup.close()
        try:
            backup.path.unlink(missing_ok=True)
        except OSError:
            path = backup.path
            self._storage.janitor.retry("a replaced file kept to revert an upload", lambda: path.unlink(True))


class LocalBackend(Backend):
    """Stores files under ``config.destination`` (created if missing)."""

    storage_name = "local"
    sweep_interval: ClassVar[float] = 600.0
    """Seconds between two looks for dead uploads' temp files in one directory."""

    def __init__(self, config: Config | None = None) -> None:
        super().__init__(config)
        self._sweeper = _Sweeper(self.sweep_interval, f"filestore-{self.storage_name}-sweeper")
        destination = self.config.destination
        if not callable(destination):
            # At start, before any upload of ours: what is there of a dead writer stays dead.
            self._sweeper.sweep_now(Path(destination))

    async def open_writer(self, target: WriteRequest) -> Writer:
        self._sweeper.note(Path(target.destination))
        return LocalWriter(self, target)

    def _path_of(self, file: FileData | str) -> Path:
        if isinstance(file, FileData) and file.path is not None:
            return file.path
        key = file.filename if isinstance(file, FileData) else file
        destination = self.config.destination
        if callable(destination):
            raise ValueError("with a callable destination, pass the FileData rather than a key")
        return ensure_inside(Path(destination), key)

    def _object_path(self, key: str) -> Path:
        """The file ``key`` names, or ``NotFound``: also for a key that leaves the
        destination, and for the hidden temp and backup files, which are no objects."""
        try:
            path = self._path_of(key)
        except UnsafeName:
            raise NotFound(f"no file {key!r} in the destination") from None
        if path.name.startswith(TEMP_PREFIX):
            raise NotFound(f"no file {key!r} in the destination")
        return path

    async def delete(self, file: FileData | str) -> None:
        await anyio.to_thread.run_sync(self._delete, self._path_of(file))

    def _delete(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        destination = self.config.destination
        if callable(destination):
            return
        # A hidden folder (the state of resumable uploads) goes with its last file; the
        # application's own folders stay, empty or not.
        root = Path(destination).resolve()
        for folder in path.resolve().parents:
            if folder == root or not folder.is_relative_to(root):
                break
            if not any(part.startswith(".") for part in folder.relative_to(root).parts):
                break
            try:
                folder.rmdir()
            except OSError:
                break  # not empty (or gone): its parents are not either

    async def stat(self, key: str) -> ObjectInfo:
        return await anyio.to_thread.run_sync(self._stat, key)

    def _stat(self, key: str) -> ObjectInfo:
        path = self._object_path(key)
        try:
            info = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"no file {key!r} in the destination") from None
        if not stat.S_ISREG(info.st_mode):
            raise NotFound(f"no file {key!r} in the destination")
        return ObjectInfo(key=key, size=info.st_size, content_type=None)

    async def open_composed(self, target: WriteRequest, sources: Sequence[ObjectInfo]) -> Writer:
        """A writer whose temp file is the files ``sources`` joined in the kernel."""
        paths = [self._object_path(source.key) for source in sources]
        self._sweeper.note(Path(target.destination))
        writer = LocalWriter(self, target)
        try:
            await anyio.to_thread.run_sync(writer.fill_from, paths)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await writer.abort()
            raise
        return writer

    def key_of(self, destination: str, name: str) -> str:
        root = self._root()
        return (Path(destination).resolve() / name).relative_to(root.resolve()).as_posix()

    def _root(self) -> Path:
        destination = self.config.destination
        if callable(destination):
            raise ValueError("with a callable destination, keys are relative to no directory")
        return Path(destination)

    async def list_objects(self, prefix: str) -> list[ObjectInfo]:
        return await anyio.to_thread.run_sync(self._list_objects, prefix)

    def _list_objects(self, prefix: str) -> list[ObjectInfo]:
        # Walk only the directory the prefix names, not the whole destination.
        root = self._root().resolve()
        folder, _, _ = prefix.rpartition("/")
        try:
            start = ensure_inside(root, folder) if folder else root
        except UnsafeName:
            return []
        found = []
        for directory, _, names in os.walk(start):  # symlinked directories are not entered
            for name in names:
                path = Path(directory, name)
                key = path.relative_to(root).as_posix()
                if name.startswith(TEMP_PREFIX) or not key.startswith(prefix):
                    continue
                try:
                    info = os.lstat(path)
                except OSError:
                    continue  # removed while we looked
                if stat.S_ISREG(info.st_mode):
                    found.append(ObjectInfo(key=key, size=info.st_size, content_type=None))
        return sorted(found, key=lambda info: info.key)

    async def open(self, key: str) -> AsyncIterator[bytes]:
        path = self._object_path(key)
        try:
            handle = await anyio.open_file(path, "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFound(f"no file {key!r} in the destination") from None
        try:
            while chunk := await handle.read(self.config.chunk_size):
                yield chunk
        finally:
            await handle.aclose()

    async def verify(self) -> None:
        """Create the destination if it is missing, then write and remove a hidden probe
        file there. A callable destination is decided per upload: nothing to check."""
        destination = self.config.destination
        if not callable(destination):
            await anyio.to_thread.run_sync(self._verify, Path(destination))

    def _verify(self, directory: Path) -> None:
        try:
            fd, probe = _open_temp(directory)
            os.close(fd)
            probe.unlink()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise StorageUnavailable(f"{directory} cannot be used: {reason}") from None

    async def cleanup(
        self,
        older_than: timedelta = timedelta(days=1),
        *,
        directories: Iterable[str | os.PathLike[str]] | None = None,
    ) -> int:
        """Remove the temp and backup files (``.upload-*``) under the destination, at any
        depth, last modified more than ``older_than`` ago, whichever host or process left
        them (for a disk several machines share); a file a live writer holds is kept.
        Returns how many were removed.

        With a callable destination, pass the ``directories`` to look under (such as the
        base the hook builds on); they may be given with a fixed destination too.
        """
        if directories is None:
            destination = self.config.destination
            if callable(destination):
                raise ValueError(
                    "with a callable destination, pass cleanup(directories=[...]) to say where to look"
                )
            directories = [destination]
        cutoff = time.time() - older_than.total_seconds()
        roots = [Path(directory) for directory in directories]
        return await anyio.to_thread.run_sync(remove_old, roots, cutoff)
