"""The results store: schema, atomic appends, killed writers, resume, loading."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from _records import full_run, provenance, record
from robustbench_pp import results
from robustbench_pp.results import CellRecord, RecordError, ResultsFileError, TornLineWarning


def test_record_round_trip_and_derived_values(tmp_path):
    r = CellRecord(
        model="resnet18_pp3", dataset="fashion-mnist-c", corruption="fog", severity=3, n_correct=70, n_total=100,
        seconds=1.25, provenance=provenance(), recipe="augmix", n_correct_top5=95,
        calibration=[[60, 50.0, 55.0], [40, 30.0, 15.0]], ci95=(0.2, 0.4),
    )
    assert r.top1_error == pytest.approx(0.3) and r.top5_error == pytest.approx(0.05)
    assert r.ece == pytest.approx((5.0 + 15.0) / 100)
    path = tmp_path / "run.jsonl"
    results.append_records(path, [r])
    (back,) = results.read_records(path)
    assert back == r
    line = json.loads(path.read_text())
    assert line["schema_version"] == results.SCHEMA_VERSION and line["top1_error"] == pytest.approx(0.3)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"corruption": "rain"}, "unknown corruption 'rain'"),
        ({"severity": 6}, "severity must be 1..5"),
        ({"corruption": "clean", "severity": 2}, "clean cell has severity 0"),
        ({"n_correct": 101}, "n_correct must be an integer in"),
        ({"n_total": 0}, "n_total must be a positive integer"),
        ({"provenance": {"device": "cpu"}}, "provenance lacks"),
        ({"ci95": (0.5, 0.2)}, "ci95 must satisfy"),
    ],
)
def test_invalid_records_are_refused(changes, message):
    fields = dict(model="m", dataset="d", corruption="fog", severity=1, n_correct=1, n_total=10, seconds=0.0,
                  provenance=provenance())
    fields.update(changes)
    with pytest.raises(RecordError, match=message):
        CellRecord(**fields)


def test_newer_schema_and_malformed_lines_name_file_and_line(tmp_path):
    path = tmp_path / "run.jsonl"
    results.append_records(path, [record()])
    newer = record("fog", 1).to_json()
    newer["schema_version"] = results.SCHEMA_VERSION + 1
    with open(path, "a") as handle:
        handle.write(json.dumps(newer) + "\n")
    with pytest.raises(ResultsFileError, match=rf"{path.name}:2: schema_version 2 is newer.*upgrade"):
        results.read_records(path)
    path.write_text(json.dumps(record().to_json()) + "\n{not json\n" + json.dumps(record().to_json()) + "\n")
    with pytest.raises(ResultsFileError, match=rf"{path.name}:2: not valid JSON"):
        results.read_records(path)
    with pytest.raises(ResultsFileError, match="not found"):
        results.read_records(tmp_path / "missing.jsonl")


def test_torn_last_line_is_dropped_with_warning_and_repaired_on_append(tmp_path):
    path = tmp_path / "run.jsonl"
    results.append_records(path, [record(), record("fog", 1)])
    whole = path.read_bytes()
    path.write_bytes(whole + json.dumps(record("fog", 2).to_json()).encode()[:57])
    with pytest.warns(TornLineWarning, match="incomplete"):
        assert [r.cell for r in results.read_records(path)] == [("clean", 0), ("fog", 1)]
    with pytest.warns(TornLineWarning, match="removing an incomplete last line"):
        results.append_records(path, [record("fog", 2)])
    assert [r.cell for r in results.read_records(path)] == [("clean", 0), ("fog", 1), ("fog", 2)]
    assert path.read_bytes().startswith(whole)


WRITER = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, {tests!r})
    from _records import record
    from robustbench_pp import results
    from robustbench_pp.names import CORRUPTIONS
    path = sys.argv[1]
    real_write = os.write
    def half_then_hang(fd, data):
        # Write half of the record, then hang: the parent kills us mid-write.
        real_write(fd, data[: len(data) // 2])
        os.fsync(fd)
        print("torn", flush=True)
        time.sleep(60)
    for i, name in enumerate(CORRUPTIONS[:4]):
        if i == 3:
            os.write = half_then_hang
        results.append_records(path, [record(name, 1)])
        print("wrote", name, flush=True)
    """
)


def test_killed_writer_loses_only_the_record_in_flight_and_resumes(tmp_path):
    path = tmp_path / "run.jsonl"
    script = WRITER.format(tests=str(Path(__file__).parent))
    child = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True)
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = child.stdout.readline()
        lines.append(line.strip())
        if line.strip() == "torn" or not line:
            break
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    assert lines[-1] == "torn", lines
    assert not path.read_bytes().endswith(b"\n")  # the kill really left a torn line
    with pytest.warns(TornLineWarning):
        done = results.completed_cells(path, results.run_identity(record()))
    assert sorted(done) == sorted([("gaussian_noise", 1), ("shot_noise", 1), ("impulse_noise", 1)])
    # Resume: write what is missing; the file is whole again and has every cell once.
    with pytest.warns(TornLineWarning):
        results.append_records(path, [record("defocus_blur", 1)])
    assert [r.cell for r in results.read_records(path)] == [
        ("gaussian_noise", 1), ("shot_noise", 1), ("impulse_noise", 1), ("defocus_blur", 1)
    ]


def test_resume_refuses_a_different_run(tmp_path):
    path = tmp_path / "run.jsonl"
    results.append_records(path, [record(), record("fog", 1)])
    assert set(results.completed_cells(path, results.run_identity(record()))) == {("clean", 0), ("fog", 1)}
    other = results.run_identity(record(checkpoint_sha256="ff" * 32))
    with pytest.raises(ResultsFileError, match="different run.*checkpoint_sha256"):
        results.completed_cells(path, other)
    with pytest.raises(ResultsFileError, match="model: 'resnet18' in the file vs 'alexnet' now"):
        results.completed_cells(path, results.run_identity(record(model="alexnet")))
    assert results.completed_cells(tmp_path / "new.jsonl", other) == {}


def test_write_records_is_atomic_and_load_results_is_tidy(tmp_path):
    path = tmp_path / "merged.jsonl"
    run = full_run()
    results.write_records(path, run)
    assert not list(tmp_path.glob("*.tmp"))  # only the writer lock (.merged.jsonl.lock) is left beside it
    frame = results.load_results([path])
    assert len(frame) == 76
    assert {"model", "corruption", "severity", "top1_error", "checkpoint_sha256", "dataset_fingerprint"} <= set(frame.columns)
    assert frame.loc[frame.corruption == "clean", "top1_error"].item() == pytest.approx(0.1)


def test_run_table_and_summary_against_a_reference_run():
    model = results.run_table(full_run(error_of=lambda c, s: 0.05 * s, clean_error=0.05))
    reference = results.reference_from_run(results.run_table(full_run(error_of=lambda c, s: 0.1 * s, clean_error=0.2, model="alexnet")))
    summary = results.summarize_run(model, reference)
    assert summary.mce == pytest.approx(0.5)
    assert summary.unnormalized_mean_error == pytest.approx(0.15)
    # relative: Σ(0.05s − 0.05) / Σ(0.1s − 0.2) = (0.75 − 0.25) / (1.5 − 1.0)
    assert summary.relative_mce == pytest.approx(1.0)
    incomplete = results.run_table(full_run()[:-3])
    assert incomplete.missing == (("jpeg_compression", 3), ("jpeg_compression", 4), ("jpeg_compression", 5))
    with pytest.raises(results.IncompleteRunError, match="missing 3 corruption cell"):
        results.summarize_run(incomplete)
    with pytest.raises(ValueError, match="different runs mixed"):
        results.run_table([record(), record("fog", 1, model="other")])


def test_records_written_before_the_inhibition_mode_rename_resume_the_same_run(tmp_path):
    card = {"name": "resnet18_pp3", "first_layer": "pushpull", "avg_kernel_size": 3}
    old = record(settings={"precision": "fp32", "model_card": {**card, "inhibition": "trainable"}})
    new = record(settings={"precision": "fp32", "model_card": {**card, "inhibition_mode": "trainable"}})
    assert results.run_identity(old) == results.run_identity(new)
    other = record(settings={"precision": "fp32", "model_card": {**card, "inhibition_mode": "fixed"}})
    assert results.describe_mismatch(results.run_identity(old), results.run_identity(other))
    path = tmp_path / "run.jsonl"
    results.append_records(path, [old])
    assert list(results.completed_cells(path, results.run_identity(new))) == [("clean", 0)]
