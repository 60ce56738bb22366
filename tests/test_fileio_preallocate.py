"""fileio.preallocate without fallocate support: the fallback backs the file and keeps its bytes."""

from __future__ import annotations

import errno
import os

import pytest

from robustbench_pp import fileio


@pytest.fixture
def no_fallocate(monkeypatch):
    def unsupported(fd, offset, length):
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(os, "posix_fallocate", unsupported)
    monkeypatch.setattr(fileio, "_CHUNK", 64)  # several blocks, one of them partial


@pytest.mark.parametrize("size", [1000, 1500])  # the file's own size (a resumed partial file) or larger
def test_the_fallback_keeps_the_files_bytes_and_zero_fills_beyond_them(tmp_path, no_fallocate, size):
    path = tmp_path / "cell.partial.npy"
    data = bytes(range(256)) * 3 + b"\x07" * 232  # 1000 bytes, none of them zero past the first
    path.write_bytes(data)
    fd = os.open(path, os.O_RDWR)
    try:
        fileio.preallocate(fd, size, path)
    finally:
        os.close(fd)
    assert path.read_bytes() == data + bytes(size - len(data))


def test_the_fallback_reports_a_failed_write_naming_the_file(tmp_path, no_fallocate, monkeypatch):
    def full(fd, data, offset):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    path = tmp_path / "cell.partial.npy"
    path.write_bytes(b"x" * 10)
    fd = os.open(path, os.O_RDWR)
    try:
        with pytest.raises(OSError, match="cannot reserve .* for .*cell.partial.npy: No space left") as caught:
            fileio.preallocate(fd, 100, path)
    finally:
        os.close(fd)
    assert caught.value.errno == errno.ENOSPC
    assert path.read_bytes() == b"x" * 10
