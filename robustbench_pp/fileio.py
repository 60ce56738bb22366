"""Small file helpers shared by every module that writes: atomic replacement, digests, locks.

A file reaches its final name only complete: it is written to a temporary name in the same
folder, flushed to disk, and moved onto the target with ``os.replace`` (atomic on POSIX).
A crash or a kill at any point leaves either the old file or the new one, never a mix, and
at worst a hidden ``.<name>.*.tmp`` leftover.

Two processes writing the same target (a results file, a generated folder) take
:func:`exclusive_lock` first: an OS lock (``fcntl.flock``) on a hidden ``.<name>.lock`` file
beside the target, released by the kernel when its holder exits, also on ``kill -9``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

_CHUNK = 8 << 20


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in 8 MiB chunks (bounded memory).

    Raises:
        FileNotFoundError: when the file does not exist.
    """
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsync'ed and moved onto ``path``.

    The file gets the permissions of a normally created file (mkstemp's are 0600). On an
    exception the temporary file is removed and ``path`` is untouched.

    Example:
        >>> with atomic_path("out.png") as tmp:   # doctest: +SKIP
        ...     figure.savefig(tmp, format="png")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def writable_folder(path: str | os.PathLike) -> Path:
    """Create ``path`` (with its parents) when missing and check that files can be made in it.

    Commands call it before any work, so that an output under a regular file or on a
    read-only filesystem fails at once with one message, not after an hour of computing.

    Returns:
        ``path`` as a Path.

    Raises:
        OSError: naming the folder and the reason (a file in the way, a read-only filesystem,
            no permission); ``errno`` is kept.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), path)
        raise _os_error(exc.errno, f"cannot create the folder {path}: {blocker} is a file, not a folder") from None
    except OSError as exc:
        raise _os_error(exc.errno, f"cannot create the folder {path}: {exc.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        read_only = bool(os.statvfs(path).f_flag & os.ST_RDONLY)
        reason = "read-only file system" if read_only else "permission denied"
        raise _os_error(errno.EROFS if read_only else errno.EACCES, f"cannot write into {path}: {reason}")
    return path


def preallocate(fd: int, size: int, path: str | os.PathLike) -> None:
    """Reserve ``size`` bytes of disk for an open file (``posix_fallocate``).

    A memory-mapped file whose pages cannot be backed on a full disk kills the writer with
    SIGBUS; reserving the space first turns a full disk into an OSError (ENOSPC) here.

    Raises:
        OSError: naming the file, when the space cannot be reserved.
    """
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise _os_error(exc.errno, f"cannot reserve {size / 1e6:.1f} MB for {path}: {exc.strerror}") from None
        # No fallocate on this filesystem: write every block ourselves (same guarantee). The
        # bytes already in the file are written back as they are (a resumed file keeps its
        # data; its holes get backed), zeros beyond its end.
        current = os.fstat(fd).st_size
        for offset in range(0, size, _CHUNK):
            length = min(_CHUNK, size - offset)
            try:
                kept = os.pread(fd, length, offset) if offset < current else b""
                os.pwrite(fd, kept + bytes(length - len(kept)), offset)
            except OSError as error:
                raise _os_error(error.errno, f"cannot reserve {size / 1e6:.1f} MB for {path}: "
                                f"{error.strerror}") from None


def _os_error(code: int | None, message: str) -> OSError:
    """An OSError whose text is ``message`` alone (no "[Errno n]" prefix) but keeps ``errno``."""
    error = OSError(message)
    error.errno = code
    return error


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` (text is UTF-8 encoded) to ``path`` atomically (see :func:`atomic_path`)."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)


class LockedError(BlockingIOError):
    """Another process holds the lock of a target; the message names the target and the holder."""


def lock_path(target: str | os.PathLike) -> Path:
    """The lock file of ``target``: ``.<name>.lock`` in the same folder (hidden; never deleted,
    since removing a lock file another process is waiting on would let a third one in)."""
    target = Path(target)
    return target.with_name(f".{target.name}.lock")


@contextlib.contextmanager
def exclusive_lock(target: str | os.PathLike, *, wait: bool | float = False,
                   poll_seconds: float = 0.1) -> Iterator[Path]:
    """Hold an exclusive OS lock on ``target`` (a file or folder, which need not exist yet).

    The lock is ``fcntl.flock`` on :func:`lock_path`, which records the holder's pid for the
    message of a process that finds it taken. The kernel drops it when the holder exits in
    any way, so a killed run never leaves a stale lock. Locks are per open file: the same
    process taking the lock of one target twice waits on itself (or fails with ``wait=False``).

    Args:
        target: what the caller is about to write.
        wait: False fails at once when the lock is taken; True waits as long as it takes; a
            number waits at most that many seconds.
        poll_seconds: how often a bounded wait retries.

    Yields:
        The lock file's path.

    Raises:
        LockedError: the lock is held by another process (after ``wait``).
        OSError: the lock file cannot be created (missing or read-only folder, a file in
            the way); the message names it.

    Example:
        >>> with exclusive_lock("results/run.jsonl"):   # doctest: +SKIP
        ...     append_records("results/run.jsonl", records)
    """
    import fcntl

    path = lock_path(target)
    writable_folder(path.parent)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise _os_error(exc.errno, f"cannot create the lock file {path}: {exc.strerror}") from None
    try:
        _acquire(fd, fcntl, path, target, wait, poll_seconds)
        try:  # best effort: the pid only improves another process's message
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass
        yield path
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def _acquire(fd: int, fcntl, path: Path, target, wait: bool | float, poll_seconds: float) -> None:
    if wait is True:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    deadline = time.monotonic() + (0.0 if wait is False else float(wait))
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
        if time.monotonic() >= deadline:
            holder = _holder(path)
            error = LockedError(f"{target} is being written by another process"
                                f"{f' (pid {holder})' if holder else ''}, which holds {path}; wait for it to "
                                "finish, or write elsewhere")
            error.errno = errno.EWOULDBLOCK
            raise error
        time.sleep(poll_seconds)


def _holder(path: Path) -> str | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return text if text.isdigit() else None
