"""Small file helpers shared by every module that writes: atomic replacement and digests.

A file reaches its final name only complete: it is written to a temporary name in the same
folder, flushed to disk, and moved onto the target with ``os.replace`` (atomic on POSIX).
A crash or a kill at any point leaves either the old file or the new one, never a mix, and
at worst a hidden ``.<name>.*.tmp`` leftover.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
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


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` (text is UTF-8 encoded) to ``path`` atomically (see :func:`atomic_path`)."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)
