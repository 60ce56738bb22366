"""Hostile and clumsy results files (issue 12, items 2 and 12): nothing lost, nothing misread.

A file that is not a results file is refused and never changed; only this package's own torn
write is ever cut off; every record read means one thing (finite numbers, integer
severities, per-image bits and calibration bins that agree with the counts).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from _records import rich_record
from robustbench_pp import results
from robustbench_pp.cli import main
from robustbench_pp.results import ResultsFileError, TornLineWarning
from robustbench_pp.results.lines import SIGNATURE, encode

CK = Path(__file__).resolve().parents[1] / "results" / "reference" / "ci-model" / "model.json"


def _line(data: dict) -> bytes:
    return json.dumps(data).encode() + b"\n"


def _file(tmp_path, *lines: bytes, name="run.jsonl") -> Path:
    path = tmp_path / name
    path.write_bytes(b"".join(lines))
    return path


# --- item 2: only our own torn write is ever repaired ------------------------------------------------


@pytest.mark.parametrize("content", [b"my API token: abc123", b"my API token: abc123\n", b"42", b"{}"])
def test_a_file_that_is_not_a_results_file_is_refused_and_left_untouched(tmp_path, content):
    path = _file(tmp_path, content, name="notes.txt")
    with pytest.raises(ResultsFileError, match="notes.txt:1"):
        results.read_records(path)
    with pytest.raises(ResultsFileError, match="notes.txt:1"):
        results.append_records(path, [rich_record()])
    with pytest.raises(ResultsFileError, match="notes.txt:1"):
        results.completed_cells(path, results.run_identity(rich_record()))
    assert path.read_bytes() == content


def test_a_foreign_last_line_after_records_is_refused_not_cut(tmp_path):
    path = _file(tmp_path, encode(rich_record("fog", 1)), b"my API token: abc123")
    before = path.read_bytes()
    with pytest.raises(ResultsFileError, match="run.jsonl:2: not valid JSON.*no torn write of this package"):
        results.read_records(path)
    with pytest.raises(ResultsFileError, match="run.jsonl:2: not valid JSON.*no torn write of this package"):
        results.append_records(path, [rich_record("fog", 2)])
    assert path.read_bytes() == before


def test_a_complete_last_record_without_newline_is_kept_and_completed(tmp_path):
    last = encode(rich_record("fog", 2)).rstrip(b"\n")
    for first_line in (encode(rich_record("fog", 1)), _line(rich_record("fog", 1).to_json())):  # ours, or reordered
        path = _file(tmp_path, first_line, last)
        assert [r.cell for r in results.read_records(path)] == [("fog", 1), ("fog", 2)]
        assert set(results.completed_cells(path, results.run_identity(rich_record()))) == {("fog", 1), ("fog", 2)}
        results.append_records(path, [rich_record("fog", 3)])
        assert [r.cell for r in results.read_records(path)] == [("fog", 1), ("fog", 2), ("fog", 3)]
        assert path.read_bytes() == first_line + last + b"\n" + encode(rich_record("fog", 3))


def test_a_complete_but_invalid_last_line_is_an_error_not_a_torn_write(tmp_path):
    data = rich_record("fog", 2).to_json()
    data["n_correct"] = 31  # disagrees with its bits: not something we wrote, so never cut off silently
    bad = SIGNATURE + json.dumps({k: v for k, v in data.items() if k != "schema"}, sort_keys=True)[1:].encode()
    path = _file(tmp_path, encode(rich_record("fog", 1)), bad)
    before = path.read_bytes()
    with pytest.raises(ResultsFileError, match="run.jsonl:2: .*n_correct=31.*no torn write"):
        results.append_records(path, [rich_record("fog", 3)])
    assert path.read_bytes() == before


@pytest.mark.parametrize("cut", [1, 7, len(SIGNATURE), 200, -2])
def test_our_own_torn_write_is_dropped_and_cut_off(tmp_path, cut):
    whole = encode(rich_record("fog", 1))
    torn = encode(rich_record("fog", 2))[:cut]
    path = _file(tmp_path, whole, torn)
    with pytest.warns(TornLineWarning, match="incomplete"):
        assert [r.cell for r in results.read_records(path)] == [("fog", 1)]
    with pytest.warns(TornLineWarning, match="removing"):
        results.append_records(path, [rich_record("fog", 2)])
    assert path.read_bytes() == whole + encode(rich_record("fog", 2))


def test_non_regular_files_are_refused(tmp_path):
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(ResultsFileError, match="not a regular file"):
        results.read_records(fifo)  # would block forever when opened
    with pytest.raises(ResultsFileError, match="not a regular file"):
        results.append_records("/dev/null", [rich_record()])


@pytest.mark.slow
def test_evaluate_resume_into_a_notes_file_refuses_without_touching_it(tmp_path):
    """The issue's reproducer: `rbpp evaluate ... --out notes.txt --resume` used to eat the notes."""
    from _fixtures import tiny_fashion_mnist

    data = tiny_fashion_mnist(tmp_path / "fmnist", test=20, train=10)
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"my API token: abc123")
    result = CliRunner(env={"FASHION_MNIST_ROOT": str(data)}).invoke(main, [
        "evaluate", "--checkpoint", str(CK), "--dataset", "fashion-mnist-c", "--on-the-fly", "--corruptions", "fog",
        "--severities", "1", "--device", "cpu", "--quiet", "--workers", "0", "--out", str(notes), "--resume",
    ])
    assert result.exit_code == 1, result.output
    assert "notes.txt:1: not valid JSON" in result.output and "refusing to read or change" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert notes.read_bytes() == b"my API token: abc123"


# --- item 12: records are validated completely on read ------------------------------------------------


def _mutated(**changes):
    def mutate(data):
        for key, value in changes.items():
            target = data
            *parents, leaf = key.split(".")
            for parent in parents:
                target = target[parent]
            target[leaf] = value
        return json.dumps(data)

    return mutate


MUTATIONS = {
    "seconds Infinity": (lambda d: json.dumps(d).replace('"seconds": 0.25', '"seconds": Infinity'), "Infinity is not a number"),
    "seconds 1e400": (lambda d: json.dumps(d).replace('"seconds": 0.25', '"seconds": 1e400'), "out of range"),
    "NaN anywhere": (lambda d: json.dumps(d).replace('"seed": 0', '"seed": NaN'), "NaN is not a number"),
    "severity 1.0": (_mutated(severity=1.0), "severity must be an integer"),
    "severity true": (_mutated(severity=True), "severity must be an integer"),
    "n_total true": (_mutated(n_total=True), "n_total must be a positive integer"),
    "schema_version true": (_mutated(schema_version=True), "bad schema_version"),
    "bits disagree": (_mutated(n_correct=29, top1_error=1 - 29 / 40, calibration=None, ece=None),
                      "correct_bits marks 30 images correct, n_correct says 29"),
    "short bits": (_mutated(**{"extra.correct_bits": "qqqq"}), "correct_bits holds 3 bytes; n_total=40 needs 5"),
    "invalid base64": (_mutated(**{"extra.correct_bits": "@@not base64@@"}), "not valid base64"),
    "calibration count": (_mutated(calibration=[[40.0, 10.0, 29.0]]), "calibration bins count 40 images and 29"),
    "calibration fraction": (_mutated(calibration=[[39.5, 10.0, 30.0], [0.5, 0.1, 0.0]]), "impossible"),
    "calibration confidence": (_mutated(calibration=[[40.0, 41.0, 30.0]]), "impossible"),
    "top1_error edited": (_mutated(top1_error=0.05), "top1_error 0.05 disagrees"),
    "ece edited": (_mutated(ece=0.0), "ece 0.0 disagrees"),
    "ci95 nan-free but reversed": (_mutated(ci95=[0.5, 0.2]), "ci95 must satisfy"),
    "ci95 of booleans": (_mutated(ci95=[False, True]), "ci95 must be"),
    "num_images string": (_mutated(**{"provenance.num_images": "40"}), "num_images must be an integer"),
    "bootstrap_seed x": (_mutated(**{"provenance.bootstrap_seed": "x"}), "bootstrap_seed must be an integer"),
    "shard 3/2": (_mutated(**{"provenance.shard": "3/2"}), "shard must be 'i/n'"),
    "unknown field": (_mutated(recipf="none"), "unknown field"),
    "missing field": (lambda d: json.dumps({k: v for k, v in d.items() if k != "recipe"}), "lacks field"),
    "duplicate key": (lambda d: json.dumps(d)[:-1] + ', "n_correct": 29}', "duplicate key"),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_malformed_records_are_refused_on_read(tmp_path, name):
    mutate, message = MUTATIONS[name]
    valid = rich_record()
    path = _file(tmp_path, encode(rich_record("clean", 0)), mutate(valid.to_json()).encode() + b"\n")
    with pytest.raises(ResultsFileError, match=rf"run.jsonl:2: .*({message})"):
        results.read_records(path)


def test_the_unmutated_record_reads_back_equal(tmp_path):
    record = rich_record()
    path = _file(tmp_path, _line(record.to_json()), encode(record))
    assert results.read_records(path) == [record, record]


def test_a_line_changed_after_it_was_written_is_refused_by_its_digest(tmp_path):
    line = encode(rich_record("fog", 1))
    assert b'"severity": 1,' in line and b'"record_sha256": "' in line
    flipped = line.replace(b'"severity": 1,', b'"severity": 2,')  # still a valid record on its own
    path = _file(tmp_path, encode(rich_record("clean", 0)), flipped)
    with pytest.raises(ResultsFileError, match="run.jsonl:2: record_sha256 does not match the line"):
        results.read_records(path)
    spaced = line.replace(b'"severity": 1,', b'"severity":   1 ,')  # the same content, other whitespace
    assert results.read_records(_file(tmp_path, spaced)) == [rich_record("fog", 1)]
    edited = json.loads(flipped)
    del edited["record_sha256"]  # a deliberate edit drops the digest and is checked field by field
    assert results.read_records(_file(tmp_path, _line(edited)))[0].cell == ("fog", 2)


def test_merge_refuses_infinite_seconds_with_a_message_and_writes_nothing(tmp_path):
    shards = []
    for index in range(2):
        record = dataclasses.replace(rich_record(), provenance={**rich_record().provenance, "shard": f"{index}/2"})
        text = encode(record).decode()
        if index == 1:
            text = text.replace('"seconds": 0.25', '"seconds": Infinity')
        shards.append(_file(tmp_path, text.encode(), name=f"shard{index}.jsonl"))
    out = tmp_path / "merged.jsonl"
    result = CliRunner().invoke(main, ["merge", *map(str, shards), "--out", str(out)])
    assert result.exit_code == 1 and "shard1.jsonl:1: not valid JSON (Infinity" in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not out.exists()


# --- a full disk: the results writers leave what was there whole ---------------------------------------


def _enospc_after(limit: int):
    real_write = os.write

    def write(fd, data):
        if len(data) > limit:
            real_write(fd, data[:limit])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    return write


def test_a_full_disk_during_an_append_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "run.jsonl"
    results.append_records(path, [rich_record("fog", 1)])
    before = path.read_bytes()
    monkeypatch.setattr(os, "write", _enospc_after(100))
    with pytest.raises(OSError, match="No space left"):
        results.append_records(path, [rich_record("fog", 2), rich_record("fog", 3)])
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [r.cell for r in results.read_records(path)] == [("fog", 1)]


def test_a_full_disk_during_merge_leaves_no_output(tmp_path, monkeypatch):
    shards = [str(_file(tmp_path, encode(dataclasses.replace(rich_record(), provenance={
        **rich_record().provenance, "shard": f"{i}/2"})), name=f"s{i}.jsonl")) for i in range(2)]
    real = Path.write_bytes

    def full(self, data):
        real(self, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    out = tmp_path / "merged.jsonl"
    result = CliRunner().invoke(main, ["merge", *shards, "--out", str(out)])
    monkeypatch.undo()
    assert result.exit_code == 1 and "No space left on device" in result.output, result.output
    assert not out.exists() and not list(tmp_path.glob(".merged.jsonl.*.tmp"))
