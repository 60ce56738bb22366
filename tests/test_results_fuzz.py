"""Fuzzing the results reader and ``rbpp check`` with random mutations of a valid file (issue 12).

Properties, for every mutation:

- the reader either refuses the file with :class:`ResultsFileError` or returns records that
  are each one of the original records (a mutation may lose records, e.g. a cut line, but
  never changes what a record says);
- ``rbpp check`` with either file mutated exits 0, 1 or 2 without a traceback, and with zero
  tolerances (``--two-sided``) it exits 0 only when every number it compared is the
  original's: a mutated results file must hold every cell of the reference unchanged; a
  reference that lost whole lines (cut at a line end, which no reader can tell from a
  smaller reference) compares fewer cells, and says so in a note.

Derandomized and without an example database, so a run is reproducible and writes nothing.
"""

from __future__ import annotations

import re
import warnings

import pytest
from click.testing import CliRunner

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from _records import rich_record  # noqa: E402
from robustbench_pp import results  # noqa: E402
from robustbench_pp.cli import main  # noqa: E402
from robustbench_pp.results import ResultsFileError, TornLineWarning  # noqa: E402
from robustbench_pp.results.lines import encode  # noqa: E402

ORIGINAL = [rich_record("clean", 0, n_correct=35)] + [rich_record("fog", s, n_correct=34 - 3 * s) for s in range(1, 6)]
RAW = b"".join(encode(r) for r in ORIGINAL)
LINES = RAW.splitlines(keepends=True)
# Scalars of the JSON text (numbers, literals, short strings) that a token mutation replaces.
TOKENS = [m.span() for m in re.finditer(rb'-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false|null|"[^"\\]{0,40}"', RAW)]
HOSTILE = [b"Infinity", b"-Infinity", b"NaN", b"1e999", b"-1", b"0", b"1", b"2", b"1.0", b"true", b"false", b"null",
           b'"x"', b"[]", b"{}", b"41", b"99999999999999999999999", b'"!!"', b"1e-320", b'"fog"', b'"clean"', b"[0, 1]"]

SETTINGS = settings(max_examples=250, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@st.composite
def mutations(draw) -> bytes:
    """A valid file with one random change: bytes, a JSON scalar, or whole lines."""
    kind = draw(st.sampled_from(["flip", "delete", "insert", "token", "truncate", "lines"]))
    raw = RAW
    if kind == "flip":
        at = draw(st.integers(0, len(raw) - 1))
        return raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at + 1:]
    if kind == "delete":
        at = draw(st.integers(0, len(raw) - 1))
        return raw[:at] + raw[at + draw(st.integers(1, 40)):]
    if kind == "insert":
        at = draw(st.integers(0, len(raw)))
        return raw[:at] + draw(st.binary(min_size=1, max_size=8)) + raw[at:]
    if kind == "token":
        start, end = draw(st.sampled_from(TOKENS))
        return raw[:start] + draw(st.sampled_from(HOSTILE)) + raw[end:]
    if kind == "truncate":
        return raw[: draw(st.integers(0, len(raw) - 1))]
    lines = list(LINES)
    i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
    action = draw(st.sampled_from(["drop", "duplicate", "swap", "strip newline"]))
    if action == "drop":
        del lines[i]
    elif action == "duplicate":
        lines.insert(j, lines[i])
    elif action == "swap":
        lines[i], lines[j] = lines[j], lines[i]
    else:
        lines[i] = lines[i].rstrip(b"\n")
    return b"".join(lines)


def _read(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TornLineWarning)
        return results.read_records(path)


@SETTINGS
@given(mutated=mutations())
def test_the_reader_refuses_or_reads_only_original_records(tmp_path, mutated):
    path = tmp_path / "mutated.jsonl"
    path.write_bytes(mutated)
    try:
        records = _read(path)
    except ResultsFileError:
        return
    for record in records:
        assert record in ORIGINAL, f"a changed record was read: {record.cell}"


def _cells(path) -> set:
    """What ``rbpp check`` compares of a file: its cells and their counts."""
    return {(r.cell, r.n_correct, r.n_total) for r in _read(path)}


@SETTINGS
@given(mutated=mutations(), side=st.sampled_from(["results", "reference"]), strict=st.booleans())
def test_check_never_crashes_and_passes_only_an_unchanged_meaning(tmp_path, mutated, side, strict):
    original, changed = tmp_path / "original.jsonl", tmp_path / "changed.jsonl"
    original.write_bytes(RAW)
    changed.write_bytes(mutated)
    new, reference = (changed, original) if side == "results" else (original, changed)
    options = ["--tolerance-cell", "0", "--tolerance-mce", "0", "--two-sided"] if strict else ["--ci-aware"]
    out = CliRunner().invoke(main, ["check", str(new), "--against", str(reference), *options])
    assert out.exit_code in (0, 1, 2), out.output
    assert out.exception is None or isinstance(out.exception, SystemExit), repr(out.exception)
    assert "Traceback" not in out.output
    if strict and out.exit_code == 0:
        if side == "results":  # every cell of the reference was compared and is the original's
            assert _cells(changed) == _cells(original), out.output
        else:  # a reference cut at a line end is a smaller reference: fewer cells compared, none changed
            assert _cells(changed) <= _cells(original), out.output
