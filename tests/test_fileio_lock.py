"""robustbench_pp.fileio.exclusive_lock: one writer per target, across processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from robustbench_pp.fileio import LockedError, exclusive_lock, lock_path

_HOLD = """
import sys, time
from robustbench_pp.fileio import exclusive_lock
with exclusive_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _holder(target, seconds: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen([sys.executable, "-c", _HOLD, str(target), str(seconds)], stdout=subprocess.PIPE,
                               text=True, env=env)
    assert process.stdout.readline().strip() == "locked"
    return process


def test_a_second_process_is_refused_with_the_holders_pid_and_the_target(tmp_path):
    target = tmp_path / "run.jsonl"
    holder = _holder(target, 30)
    try:
        with pytest.raises(LockedError, match=rf"run\.jsonl is being written by another process \(pid {holder.pid}\)"):
            with exclusive_lock(target):
                pass
        assert not target.exists()  # the lock never creates the target itself
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_is_released_when_its_holder_is_killed(tmp_path):
    target = tmp_path / "set"
    holder = _holder(target, 30)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with exclusive_lock(target) as path:
        assert path == lock_path(target) == tmp_path / ".set.lock"


def test_waiting_takes_the_lock_once_the_holder_finishes(tmp_path):
    target = tmp_path / "run.jsonl"
    holder = _holder(target, 1.0)
    started = time.monotonic()
    try:
        with exclusive_lock(target, wait=True):
            assert holder.poll() is not None or time.monotonic() - started > 0.5
    finally:
        holder.wait()


def test_a_bounded_wait_gives_up_with_a_message(tmp_path):
    target = tmp_path / "run.jsonl"
    holder = _holder(target, 30)
    try:
        with pytest.raises(LockedError):
            with exclusive_lock(target, wait=0.3, poll_seconds=0.05):
                pass
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_file_that_cannot_be_created_is_an_os_error_naming_it(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(OSError, match="a-file"):
        with exclusive_lock(blocker / "run.jsonl"):
            pass
