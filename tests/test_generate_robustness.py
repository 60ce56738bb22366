"""Generation under clumsy and hostile input (issue 12, items 1, 3, 7 and 11): bad numbers and
devices fail before anything is written, one writer per folder, workers die with their
parent, unwritable outputs are one-line errors."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from robustbench_pp.cli import main
from robustbench_pp.datasets import generate, open_corrupted
from robustbench_pp.datasets.manifest import read_manifest
from robustbench_pp.fileio import LockedError
from test_datasets_support import fashion_root, private_hash_cache, synthetic_fashion_mnist  # noqa: F401  (fixtures)

SMALL = dict(corruptions=["brightness"], severities=[1], limit=50, progress=False)


pytestmark = pytest.mark.usefixtures("private_hash_cache")


def _env(**extra) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", **extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


# ---------------------------------------------------------------------------------------------
# Item 1: counts are checked before anything is written; a piece never records missing images.


@pytest.mark.parametrize("bad", [dict(batch_size=-4), dict(batch_size=0), dict(workers=0), dict(workers=-1),
                                 dict(limit=0), dict(threads=0), dict(seed=-1), dict(seed=1.5),
                                 dict(batch_size=True)])
def test_bad_counts_are_refused_before_anything_is_written(tmp_path, bad):
    name = next(iter(bad))
    with pytest.raises(ValueError, match=f"`{name}` must be a whole number"):
        generate("fashion-mnist-c", out=tmp_path / "out", **{**SMALL, **bad})
    assert not (tmp_path / "out").exists()


def test_a_piece_whose_batches_write_nothing_is_not_recorded(tmp_path, monkeypatch):
    """The mechanism behind the all-zero file: an empty batch loop must not count as a written block."""
    generate_module = importlib.import_module("robustbench_pp.datasets.generate")
    monkeypatch.setattr(generate_module._Corruptor, "batches", lambda *args, **kwargs: iter(()))
    with pytest.raises(RuntimeError, match="0 of 50 images were written"):
        generate("fashion-mnist-c", out=tmp_path, **SMALL)
    manifest = read_manifest(tmp_path / "fashion-mnist-c")
    assert manifest["corruptions_complete"] == [] and "brightness.npy" not in manifest["files"]
    assert not (tmp_path / "fashion-mnist-c" / "brightness.npy").exists()


def test_a_run_ended_between_the_last_block_and_the_move_is_finished_by_the_next(tmp_path, monkeypatch):
    from robustbench_pp.datasets.layouts import NpyLayout

    finalise = NpyLayout._finalise

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt  # every block written and listed as done, the file not yet moved

    monkeypatch.setattr(NpyLayout, "_finalise", interrupted)
    with pytest.raises(KeyboardInterrupt):
        generate("fashion-mnist-c", out=tmp_path, **SMALL)
    monkeypatch.setattr(NpyLayout, "_finalise", finalise)
    report = generate("fashion-mnist-c", out=tmp_path, **SMALL)
    assert report.cells_written == 0 and report.cells_skipped == 1
    assert read_manifest(tmp_path / "fashion-mnist-c")["corruptions_complete"] == ["brightness"]
    assert len(open_corrupted("fashion-mnist-c", data_root=tmp_path / "fashion-mnist-c").verify()) == 2


def test_partial_files_are_reserved_on_disk_before_they_are_memory_mapped(tmp_path, monkeypatch):
    """A sparse memory-mapped file on a full disk kills the writer with SIGBUS (exit 135); a
    reserved one cannot run out of space (tests/test_fault_injection.py fills a real tmpfs)."""
    generate_module = importlib.import_module("robustbench_pp.datasets.generate")

    def stop(*args, **kwargs):
        raise RuntimeError("stopped before the first batch")

    monkeypatch.setattr(generate_module._Corruptor, "corrupt", stop)
    with pytest.raises(RuntimeError, match="stopped"):
        generate("fashion-mnist-c", out=tmp_path, **SMALL)
    partial = tmp_path / "fashion-mnist-c" / ".partial" / "brightness.npy"
    assert partial.stat().st_blocks * 512 >= partial.stat().st_size


def test_cli_batch_size_reproducer_writes_nothing(tmp_path):
    result = CliRunner().invoke(main, ["generate", "fashion-mnist-c", "--out", str(tmp_path / "t"), "--limit", "50",
                                       "--corruptions", "brightness", "--severities", "1", "--workers", "1",
                                       "--batch-size", "-4", "--quiet"])
    assert result.exit_code == 2 and "--batch-size" in result.output
    assert not (tmp_path / "t").exists()


# ---------------------------------------------------------------------------------------------
# Item 11: devices and outputs that cannot work fail first, leaving nothing behind.


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
@pytest.mark.parametrize("device,message", [("cuda", "no CUDA device is available"), ("tpu", "is not a device")])
def test_an_unusable_device_leaves_nothing_behind(tmp_path, device, message):
    result = CliRunner().invoke(main, ["generate", "fashion-mnist-c", "--out", str(tmp_path / "g"), "--limit", "50",
                                       "--corruptions", "brightness", "--severities", "1", "--device", device,
                                       "--quiet"])
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "g").exists()


def test_an_output_under_a_regular_file_is_one_line(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("mine\n")
    result = CliRunner().invoke(main, ["generate", "fashion-mnist-c", "--out", str(blocker / "sub"), "--limit", "50",
                                       "--corruptions", "brightness", "--severities", "1", "--quiet"])
    assert result.exit_code == 1, result.output
    assert result.output.strip() == f"Error: cannot create the folder {blocker / 'sub'}: {blocker} is a file, not a folder"
    assert blocker.read_text() == "mine\n"


def _mount_tmpfs(folder: Path, options: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    return done.returncode == 0


def test_an_output_on_a_read_only_filesystem_is_one_line(tmp_path):
    folder = tmp_path / "ro"
    if not _mount_tmpfs(folder, "ro,size=1m"):
        pytest.skip("mounting a read-only tmpfs needs root")
    try:
        result = CliRunner().invoke(main, ["generate", "fashion-mnist-c", "--out", str(folder), "--limit", "50",
                                           "--corruptions", "brightness", "--severities", "1", "--quiet"])
        assert result.exit_code == 1 and result.output.strip() == f"Error: cannot write into {folder}: read-only file system"
    finally:
        subprocess.run(["umount", str(folder)], check=True)


# ---------------------------------------------------------------------------------------------
# Item 3: one writer per generated folder.

_HOLD_LOCK = """
import sys, time
from robustbench_pp.fileio import exclusive_lock
with exclusive_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_folder_being_generated_is_refused_and_left_alone(tmp_path):
    generate("fashion-mnist-c", out=tmp_path, **SMALL)
    folder = tmp_path / "fashion-mnist-c"
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(folder)], stdout=subprocess.PIPE, text=True,
                              env=_env())
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockedError, match=rf"fashion-mnist-c is being written by another process \(pid {holder.pid}\)"):
            generate("fashion-mnist-c", out=tmp_path, **{**SMALL, "corruptions": ["contrast"]})
    finally:
        holder.kill()
        holder.wait()
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before
    generate("fashion-mnist-c", out=tmp_path, **{**SMALL, "corruptions": ["contrast"]})  # free again
    assert read_manifest(folder)["corruptions_complete"] == ["brightness", "contrast"]


# A generation run whose corruption calls take a while, so that two runs overlap and a kill
# lands while the workers are busy.
_SLOW_GENERATE = """
import importlib, sys, time
generate_module = importlib.import_module("robustbench_pp.datasets.generate")
corrupt = generate_module._Corruptor.corrupt
def slow(self, *args, **kwargs):
    time.sleep(float(sys.argv[4]))
    return corrupt(self, *args, **kwargs)
generate_module._Corruptor.corrupt = slow
from robustbench_pp.datasets import generate
generate("fashion-mnist-c", out=sys.argv[1], corruptions=sys.argv[2].split(","), severities=[1, 2], limit=100,
         batch_size=25, workers=int(sys.argv[3]), progress=False)
"""


@pytest.mark.slow  # two child processes that import torch
def test_two_concurrent_runs_never_lose_each_others_corruptions(tmp_path, synthetic_fashion_mnist):
    runs = [subprocess.Popen([sys.executable, "-c", _SLOW_GENERATE, str(tmp_path), names, "1", "0.05"], env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for names in ("brightness,contrast", "fog,frost")]
    outcomes = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    manifest = read_manifest(tmp_path / "fashion-mnist-c")
    succeeded = [names for (code, _), names in zip(outcomes, (("brightness", "contrast"), ("fog", "frost"))) if code == 0]
    assert succeeded, outcomes
    for names in succeeded:  # every run that reports success has its corruptions recorded
        assert set(names) <= set(manifest["corruptions_complete"]), (outcomes, manifest["corruptions_complete"])
    for code, stderr in outcomes:
        if code != 0:
            assert "is being written by another process" in stderr.strip().splitlines()[-1], stderr
    open_corrupted("fashion-mnist-c", data_root=tmp_path / "fashion-mnist-c").verify()


# ---------------------------------------------------------------------------------------------
# Item 7: pool workers die with the generating process.


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow  # a child process with two workers, killed
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_exit_when_the_generating_process_is_killed(tmp_path, synthetic_fashion_mnist):
    parent = subprocess.Popen([sys.executable, "-c", _SLOW_GENERATE, str(tmp_path), "brightness,contrast,fog", "2",
                               "0.5"], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while len(workers) < 2 and time.monotonic() < deadline and parent.poll() is None:
            workers = _children(parent.pid)
            time.sleep(0.05)
        assert len(workers) >= 2, "the pool never started"
        time.sleep(1.0)  # the workers are inside their first pieces
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 15
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        survivors = [pid for pid in workers if _alive(pid)]
        assert not survivors, f"workers {survivors} outlived their parent"
    finally:
        for pid in workers:  # never leave our own orphans behind, even when the test fails
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    manifest = json.loads((tmp_path / "fashion-mnist-c" / "manifest.json").read_text())
    for relpath, entry in manifest["files"].items():  # what was recorded is complete
        assert (tmp_path / "fashion-mnist-c" / relpath).stat().st_size == entry["bytes"]
    assert np.load(tmp_path / "fashion-mnist-c" / "labels.npy").shape == (200,)
