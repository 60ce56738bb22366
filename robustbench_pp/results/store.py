"""JSON Lines result files: atomic appends, torn-line recovery, resume checks, loading.

One file holds the records of one (model, dataset) run. Appends go through a single
``os.write`` on an ``O_APPEND`` descriptor followed by ``fsync``; a writer killed mid-write
can at worst leave a final line without its newline, which readers detect and drop with a
warning, and which the next append cuts off before writing. Every other malformed line is an
error naming the file and line number: results are never silently skipped.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

from robustbench_pp.fileio import atomic_write
from robustbench_pp.results.schema import IDENTITY_PROVENANCE, CellRecord, RecordError


class ResultsFileError(ValueError):
    """A results file cannot be read or does not fit the requested use; names the file."""


class TornLineWarning(UserWarning):
    """The last line of a results file was cut by a killed writer and is ignored."""


def _split_lines(raw: bytes, path: Path) -> tuple[list[tuple[int, bytes]], bool]:
    """Complete lines with their 1-based numbers, and whether a torn tail was found."""
    lines = raw.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    return numbered, bool(tail.strip())


def read_records(path: str | os.PathLike) -> list[CellRecord]:
    """Read every record of a results file.

    A torn last line (no trailing newline, left by a killed writer) is dropped with a
    :class:`TornLineWarning`.

    Raises:
        ResultsFileError: when the file is missing, a line is not JSON, a record is
            malformed or has a newer schema; the message names the file and line.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ResultsFileError(f"results file not found: {path}") from None
    lines, torn = _split_lines(raw, path)
    if torn:
        warnings.warn(
            f"{path}: the last line is incomplete (a writer was interrupted); ignoring it",
            TornLineWarning,
            stacklevel=2,
        )
    records = []
    for number, line in lines:
        try:
            data = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ResultsFileError(f"{path}:{number}: not valid JSON ({exc.msg if hasattr(exc, 'msg') else exc})") from None
        try:
            records.append(CellRecord.from_json(data))
        except RecordError as exc:
            raise ResultsFileError(f"{path}:{number}: {exc}") from None
    return records


def _drop_torn_tail(fd: int, path: Path) -> None:
    """Cut a final line without newline (a killed writer's leftover) before appending."""
    size = os.fstat(fd).st_size
    if size == 0:
        return
    chunk = min(size, 1 << 20)
    data = os.pread(fd, chunk, size - chunk)
    if data.endswith(b"\n"):
        return
    cut = data.rfind(b"\n")
    if cut < 0 and chunk < size:  # pragma: no cover - a >1 MiB record
        raise ResultsFileError(f"{path}: the last line is over 1 MiB and incomplete; repair the file by hand")
    new_size = size - chunk + cut + 1
    warnings.warn(f"{path}: removing an incomplete last line left by an interrupted writer", TornLineWarning, stacklevel=3)
    os.ftruncate(fd, new_size)


def _line(record: CellRecord) -> bytes:
    return (json.dumps(record.to_json(), sort_keys=True, allow_nan=False) + "\n").encode("utf-8")


def append_records(path: str | os.PathLike, records: Iterable[CellRecord]) -> None:
    """Append records to a results file atomically (all of them or, if killed, a torn tail).

    Creates the file and its folder when missing. The bytes of all records go out in one
    ``os.write`` and are fsync'ed before returning, so a record that was reported as
    written survives a crash.
    """
    path = Path(path)
    payload = b"".join(_line(r) for r in records)
    if not payload:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        _drop_torn_tail(fd, path)
        written = os.write(fd, payload)
        while written < len(payload):  # pragma: no cover - regular files write whole buffers
            written += os.write(fd, payload[written:])
        os.fsync(fd)
    finally:
        os.close(fd)


def write_records(path: str | os.PathLike, records: Sequence[CellRecord]) -> None:
    """Write a whole results file at once (temp file + atomic rename): for merged results."""
    atomic_write(path, b"".join(_line(r) for r in records))


def identity(model: str, dataset: str, provenance) -> dict:
    """What must agree between records of one run: model, dataset and identity provenance."""
    values = {key: provenance.get(key) for key in IDENTITY_PROVENANCE}
    values["settings"] = _current_card_names(values["settings"])
    return {"model": model, "dataset": dataset, **values}


def _current_card_names(settings):
    """Settings with the model card's field names of today: records written before checkpoint
    format 2 call the PushPull mode ``inhibition``; the run is the same one (resume, merge)."""
    card = settings.get("model_card") if isinstance(settings, dict) else None
    if not isinstance(card, dict) or "inhibition" not in card or "inhibition_mode" in card:
        return settings
    renamed = {("inhibition_mode" if key == "inhibition" else key): value for key, value in card.items()}
    return {**settings, "model_card": renamed}


def run_identity(record: CellRecord) -> dict:
    """:func:`identity` of a record."""
    return identity(record.model, record.dataset, record.provenance)


def describe_mismatch(expected: dict, found: dict) -> list[str]:
    """Human-readable differences between two run identities."""
    return [
        f"{key}: {found.get(key)!r} in the file vs {expected.get(key)!r} now"
        for key in sorted(set(expected) | set(found))
        if expected.get(key) != found.get(key)
    ]


def completed_cells(path: str | os.PathLike, identity: dict) -> dict[tuple[str, int], CellRecord]:
    """Cells already recorded in ``path`` by a run with the same identity (to resume that run).

    Args:
        path: the results file (a missing file means nothing is done yet).
        identity: :func:`run_identity` of a record the resuming run would write.

    Raises:
        ResultsFileError: when any record of the file comes from a different run (another
            model, checkpoint, dataset or settings), naming every difference.
    """
    path = Path(path)
    if not path.exists():
        return {}
    done: dict[tuple[str, int], CellRecord] = {}
    for record in read_records(path):
        differences = describe_mismatch(identity, run_identity(record))
        if differences:
            raise ResultsFileError(
                f"cannot resume {path}: it holds results of a different run ("
                + "; ".join(differences)
                + "). Use another `out` file or drop `resume`."
            )
        done[record.cell] = record
    return done


def result_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The results files named by ``paths``: files as given, folders by their ``*.jsonl`` (sorted).

    Raises:
        ResultsFileError: for a path that does not exist or a folder without ``*.jsonl``.
    """
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(path.glob("*.jsonl"))
            if not found:
                raise ResultsFileError(f"{path}: folder holds no *.jsonl results files")
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            raise ResultsFileError(f"results file not found: {path}")
    return files


def load_results(paths: str | os.PathLike | Iterable[str | os.PathLike]):
    """Load one or more results files into a tidy pandas DataFrame, one row per record.

    Columns: model, recipe, dataset, corruption, severity, n_correct, n_total, top1_error,
    top5_error, ece, ci_low, ci_high, seconds, file, and every provenance key.
    """
    import pandas as pd

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    rows = []
    for path in paths:
        for record in read_records(path):
            row = {
                "model": record.model,
                "recipe": record.recipe,
                "dataset": record.dataset,
                "corruption": record.corruption,
                "severity": record.severity,
                "n_correct": record.n_correct,
                "n_total": record.n_total,
                "top1_error": record.top1_error,
                "top5_error": record.top5_error,
                "ece": record.ece,
                "ci_low": record.ci95[0] if record.ci95 else None,
                "ci_high": record.ci95[1] if record.ci95 else None,
                "seconds": record.seconds,
                "file": str(path),
            }
            for key, value in record.provenance.items():
                row.setdefault(key, value if not isinstance(value, (dict, list)) else json.dumps(value, sort_keys=True))
            rows.append(row)
    columns = ["model", "recipe", "dataset", "corruption", "severity", "n_correct", "n_total", "top1_error",
               "top5_error", "ece", "ci_low", "ci_high", "seconds", "file"]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=columns)
    return frame
