"""One writer per results file (issue 12, item 3): concurrent runs never record a cell twice.

``rbpp evaluate`` holds its ``--out`` from the "already exists" check to its last record, so
a second run on the same file exits at once with a message; ``rbpp merge`` checks that its
``--out`` is new under the same lock.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from _records import record, rich_record
from robustbench_pp import results
from robustbench_pp.cli import main

ROOT = Path(__file__).resolve().parents[1]
CK = ROOT / "results" / "reference" / "ci-model" / "model.json"

HOLD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    from _records import record, rich_record
    from robustbench_pp import results
    path = sys.argv[1]
    with results.writer_lock(path):
        print("locked", flush=True)
        time.sleep(float(sys.argv[2]))
        if sys.argv[3] == "write":
            results.write_records(path, [record("fog", 1)])
    """
)


def _hold(path: Path, seconds: float, then: str = "nothing") -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    script = HOLD.format(tests=str(Path(__file__).parent))
    child = subprocess.Popen([sys.executable, "-c", script, str(path), str(seconds), then], stdout=subprocess.PIPE,
                             text=True, env=env)
    assert child.stdout.readline().strip() == "locked"
    return child


def test_writer_lock_is_reentrant_in_a_thread_and_exclusive_across_processes(tmp_path):
    path = tmp_path / "run.jsonl"
    with results.writer_lock(path):
        results.append_records(path, [record()])  # the run's own appends go through its lock
        results.append_records(path, [record("fog", 1)])
    assert [r.cell for r in results.read_records(path)] == [("clean", 0), ("fog", 1)]
    with results.writer_lock(path):
        results.append_records(path, [record("fog", 2)])
        with open(path, "ab") as handle:  # a writer that ignores the lock (an editor)
            handle.write(b"my notes\n")
        with pytest.raises(results.ResultsFileError, match="run.jsonl:4: not valid JSON"):
            results.append_records(path, [record("fog", 3)])  # the held lock skips no check of a changed file
    holder = _hold(path, 30)
    try:
        with pytest.raises(OSError, match="being written by another process"):
            with results.writer_lock(path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with results.writer_lock(path):  # released by the kernel when the holder dies
        pass


@pytest.mark.slow
def test_merge_checks_that_out_is_new_under_the_lock(tmp_path):
    """Two merges into one --out: the second used to replace the first's file; now it waits and refuses."""
    shards = []
    for index in range(2):
        path = tmp_path / f"shard{index}.jsonl"
        shard = rich_record(shard=f"{index}/2")
        results.write_records(path, [shard])
        shards.append(str(path))
    out = tmp_path / "merged.jsonl"
    holder = _hold(out, 1.0, then="write")  # another merge, about to write the same --out
    result = CliRunner().invoke(main, ["merge", *shards, "--out", str(out)])
    assert holder.wait(timeout=60) == 0
    assert result.exit_code == 1 and "already exists" in result.output and "--out" in result.output, result.output
    assert [r.cell for r in results.read_records(out)] == [("fog", 1)]  # the first merge's file, whole


SLOW_RUN = textwrap.dedent(
    """
    import sys, time
    from robustbench_pp.cli import main
    from robustbench_pp.evaluate import runner
    write = runner._CellWriter.write
    def slow_write(self, cell, outcome):
        record = write(self, cell, outcome)
        print("wrote", *cell, flush=True)
        time.sleep(1.5)  # a long cell: the second run starts while this one is mid-way
        return record
    runner._CellWriter.write = slow_write
    main(sys.argv[1:])
    """
)


@pytest.mark.slow
def test_two_concurrent_evaluations_on_one_out_record_every_cell_once(tmp_path):
    from _fixtures import tiny_fashion_mnist

    data = tiny_fashion_mnist(tmp_path / "fmnist", test=20, train=10)
    out = tmp_path / "run.jsonl"
    args = ["evaluate", "--checkpoint", str(CK), "--dataset", "fashion-mnist-c", "--on-the-fly", "--corruptions", "fog",
            "--severities", "1,2,3", "--device", "cpu", "--quiet", "--workers", "0", "--out", str(out), "--resume"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "FASHION_MNIST_ROOT": str(data)}
    first = subprocess.Popen([sys.executable, "-c", SLOW_RUN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env)
    try:
        assert first.stdout.readline().split() == ["wrote", "clean", "0"]
        second = CliRunner(env={"FASHION_MNIST_ROOT": str(data)}).invoke(main, args)
        assert second.exit_code == 1, second.output
        assert "being written by another process" in second.output and f"pid {first.pid}" in second.output
        assert first.wait(timeout=300) == 0, first.stderr.read()
    finally:
        first.kill()
        first.wait()
    cells = [r.cell for r in results.read_records(out)]
    assert sorted(cells) == [("clean", 0), ("fog", 1), ("fog", 2), ("fog", 3)]
    again = CliRunner(env={"FASHION_MNIST_ROOT": str(data)}).invoke(main, args)  # after it: resumes, nothing to do
    assert again.exit_code == 0 and "4 cell(s) already done" in again.output, again.output
