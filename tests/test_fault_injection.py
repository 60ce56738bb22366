"""A disk that fills up during ``generate``, ``evaluate``, ``merge`` and ``report`` (issue 12):
everything already written stays intact and readable, nothing incomplete looks complete, and
the same command run again with space finishes the job.

Each test runs twice: on a real small tmpfs (as root, which CI is) filled with a ballast file
down to a chosen headroom, and with ENOSPC injected into the writes (``open``, ``os.write``,
``os.pwrite``, ``posix_fallocate``) under the folder once a byte budget is spent, which needs
no privileges. Short writes are emulated as the kernel does them: what fits is written, the
next write fails. Writes through a memory map cannot be intercepted: only the tmpfs variant
would see generation die of SIGBUS on a sparse partial file (test_generate_robustness.py
checks that partial files are reserved, without root).
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import subprocess
import warnings

import pytest
from click.testing import CliRunner

from robustbench_pp import results
from robustbench_pp.cli import main
from robustbench_pp.datasets import generate, open_corrupted
from robustbench_pp.datasets.manifest import read_manifest
from robustbench_pp.evaluate import EvalSettings, Partition, run_evaluation
from test_datasets_support import fashion_root, synthetic_fashion_mnist  # noqa: F401  (fixtures)


def _no_space() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class _BudgetedFile:
    """A file object whose writes spend the disk's budget (the part that fits is written)."""

    def __init__(self, handle, disk):
        self._handle, self._disk = handle, disk

    def write(self, data):
        allowed = self._disk.take(len(data))
        self._handle.write(data[:allowed])
        if allowed < len(data):
            raise _no_space()
        return len(data)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.close()

    def __iter__(self):
        return iter(self._handle)

    def __getattr__(self, name):
        return getattr(self._handle, name)


class InjectedDisk:
    """ENOSPC once ``budget`` more bytes have been written under ``root`` (None: unlimited)."""

    kind = "injected"

    def __init__(self, root, monkeypatch):
        self.root, self.budget = root, None
        root.mkdir()
        real_open, real_write, real_pwrite, real_fallocate = builtins.open, os.write, os.pwrite, os.posix_fallocate

        def open_(file, mode="r", *args, **kwargs):
            handle = real_open(file, mode, *args, **kwargs)
            if not isinstance(file, int) and any(c in mode for c in "wax+") and self._under(os.fspath(file)):
                return _BudgetedFile(handle, self)
            return handle

        def write(fd, data):
            return real_write(fd, bytes(data)[: self.take(len(data))] if self._fd_under(fd) else data)

        def pwrite(fd, data, offset):
            return real_pwrite(fd, bytes(data)[: self.take(len(data))] if self._fd_under(fd) else data, offset)

        def fallocate(fd, offset, length):
            if self._fd_under(fd) and self.budget is not None:
                needed = max(0, offset + length - os.fstat(fd).st_blocks * 512)  # what is not reserved yet
                if needed > self.budget:
                    raise _no_space()
                self.budget -= needed
            return real_fallocate(fd, offset, length)

        for module in (builtins, io):
            monkeypatch.setattr(module, "open", open_)
        monkeypatch.setattr(os, "write", write)
        monkeypatch.setattr(os, "pwrite", pwrite)
        monkeypatch.setattr(os, "posix_fallocate", fallocate)

    def _under(self, path) -> bool:
        return os.path.abspath(os.fsdecode(path)).startswith(str(self.root) + os.sep)

    def _fd_under(self, fd: int) -> bool:
        try:
            return self._under(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            return False

    def take(self, size: int) -> int:
        """How many of ``size`` bytes fit (raising ENOSPC when none does)."""
        if self.budget is None or size == 0:
            return size
        if self.budget <= 0:
            raise _no_space()
        allowed = min(size, self.budget)
        self.budget -= allowed
        return allowed

    def fill(self, headroom: int) -> None:
        self.budget = headroom

    def free(self) -> None:
        self.budget = None


class TmpfsDisk:
    """A real tmpfs, filled by a ballast file down to ``headroom`` free bytes."""

    kind = "tmpfs"

    def __init__(self, root, size: str = "4m"):
        self.root = root
        root.mkdir()
        if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(root)],
                                               capture_output=True).returncode != 0:
            pytest.skip("mounting a tmpfs needs root (the injected variant covers this without)")
        self.ballast = root / ".ballast"

    def fill(self, headroom: int) -> None:
        stat = os.statvfs(self.root)
        size = max(0, stat.f_bavail * stat.f_frsize - headroom)
        with open(self.ballast, "wb") as handle:
            handle.write(bytes(size))

    def free(self) -> None:
        self.ballast.unlink(missing_ok=True)

    def unmount(self) -> None:
        if subprocess.run(["umount", str(self.root)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(self.root)], check=True)


@pytest.fixture(params=["tmpfs", "injected"])
def disk(request, tmp_path, monkeypatch, synthetic_fashion_mnist):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    if request.param == "injected":
        yield InjectedDisk(tmp_path / "disk", monkeypatch)
        return
    real = TmpfsDisk(tmp_path / "disk")
    try:
        yield real
    finally:
        real.unmount()


def _files(folder) -> dict[str, bytes]:
    """Every data file under ``folder`` (not the ballast, nor the empty lock files that writers keep
    beside their targets: robustbench_pp.fileio.exclusive_lock)."""
    from robustbench_pp.fileio import lock_path

    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".ballast" and not _is_lock_file(p, lock_path)}


def _is_lock_file(path, lock_path) -> bool:
    return path.name.startswith(".") and path.name.endswith(".lock") and lock_path(path.parent / path.name[1:-5]) == path


# ---------------------------------------------------------------------------------------------


SET = dict(severities=[1, 2], limit=50, batch_size=20, workers=1, progress=False)
PARTIAL_BYTES = 2 * 50 * 32 * 32 * 3 + 128  # one corruption's .partial/<name>.npy


def test_generate(disk):
    generate("fashion-mnist-c", out=disk.root, corruptions=["brightness"], **SET)
    folder = disk.root / "fashion-mnist-c"
    complete = {name: data for name, data in _files(folder).items() if name in ("brightness.npy", "labels.npy")}
    # From a failure at the first write to one between the reservation of the partial file
    # and the last manifest update (the manifest is about 3 kB).
    near = PARTIAL_BYTES - 4096
    for headroom in (0, 3000, 150_000, near + 500, near + 1500, near + 2500, near + 3500, PARTIAL_BYTES + 9000):
        disk.fill(headroom)
        try:
            generate("fashion-mnist-c", out=disk.root, corruptions=["brightness", "contrast"], **SET)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC or "No space left" in str(exc), exc
        finally:
            disk.free()
        manifest = read_manifest(folder)  # readable and self-consistent
        assert {name: (folder / name).read_bytes() for name in complete} == complete
        assert manifest["corruptions_complete"] in (["brightness"], ["brightness", "contrast"])
        data = open_corrupted("fashion-mnist-c", data_root=folder)  # what is recorded opens and verifies
        assert len(data.verify()) == len(manifest["corruptions_complete"]) + 1
        if "contrast" not in manifest["corruptions_complete"]:
            with pytest.raises(ValueError, match="contrast is not recorded as complete"):
                open_corrupted("fashion-mnist-c", data_root=folder, corruptions=["contrast"])
    generate("fashion-mnist-c", out=disk.root, corruptions=["brightness", "contrast"], **SET)
    assert len(open_corrupted("fashion-mnist-c", data_root=folder).verify()) == 3


def _settings(**changes) -> EvalSettings:
    base = dict(dataset="fashion-mnist-c", model="resnet18", num_classes=10, width=4, on_the_fly=True,
                corruptions=("contrast", "gaussian_noise"), severities=(1, 2), limit=30, device="cpu",
                batch_size=30, num_workers=0, bootstrap_resamples=10)
    return EvalSettings(**{**base, **changes})


def _counts(records):
    return sorted((r.cell, r.n_correct, r.n_total) for r in records)


@pytest.mark.filterwarnings("ignore::robustbench_pp.results.TornLineWarning")  # the full disk tore a record
def test_evaluate(disk):
    import torch

    torch.manual_seed(0)  # the same random weights in every run (no checkpoint)
    reference = _counts(run_evaluation(_settings(), out=None).written)
    out = disk.root / "run.jsonl"
    line = len(out.read_bytes()) if out.exists() else 0
    for headroom in (0, 700, 2500, 6000):
        before = out.read_bytes() if out.exists() else b""
        disk.fill(headroom)
        try:
            torch.manual_seed(0)
            run_evaluation(_settings(), out=out, resume=out.exists())
        except OSError as exc:
            assert exc.errno == errno.ENOSPC or "No space left" in str(exc), exc
        finally:
            disk.free()
        if out.exists():
            after = out.read_bytes()
            complete = before[: before.rfind(b"\n") + 1]
            assert after.startswith(complete)  # records written before are untouched
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a torn last record is reported and skipped
                kept = results.read_records(out)
            assert len(kept) >= complete.count(b"\n")
            line = max(line, len(after))
    torch.manual_seed(0)
    run_evaluation(_settings(), out=out, resume=out.exists())
    assert _counts(results.read_records(out)) == reference


def test_merge(disk):
    import torch

    shards = []
    for rank in range(2):
        torch.manual_seed(0)
        path = disk.root / f"run.shard-{rank}-of-2.jsonl"
        run_evaluation(_settings(), out=path, shard=Partition(rank, 2))
        shards.append(path)
    saved = _files(disk.root)
    merged = disk.root / "merged.jsonl"
    for headroom in (0, 500, 4000):
        disk.fill(headroom)
        try:
            result = CliRunner().invoke(main, ["merge", *map(str, shards), "--out", str(merged)])
        finally:
            disk.free()
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert _files(disk.root) == saved  # shards intact, no merged file, no temporary leftover
    result = CliRunner().invoke(main, ["merge", *map(str, shards), "--out", str(merged)])
    assert result.exit_code == 0, result.output
    assert len(results.read_records(merged)) == 5


def test_report(disk):
    import torch

    runs = []
    for model in ("resnet18", "resnet18_pp3"):
        torch.manual_seed(0)
        path = disk.root / f"{model}.jsonl"
        run_evaluation(_settings(model=model), out=path)
        runs.append(path)
    reports = disk.root / "reports"
    result = CliRunner().invoke(main, ["report", str(runs[0]), "--out", str(reports)])
    assert result.exit_code == 0, result.output
    saved = _files(reports)
    for headroom in (0, 5000, 40_000):
        disk.fill(headroom)
        try:
            result = CliRunner().invoke(main, ["report", *map(str, runs), "--out", str(reports)])
        finally:
            disk.free()
        if result.exit_code == 0:  # it fitted: a complete new report
            break
        assert "Traceback" not in result.output, result.output
        assert _files(reports) == saved  # the earlier report is untouched, no staging left
    result = CliRunner().invoke(main, ["report", *map(str, runs), "--out", str(reports)])
    assert result.exit_code == 0, result.output
