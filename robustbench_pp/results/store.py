"""JSON Lines result files: locked atomic appends, torn-line recovery, resume checks, loading.

One file holds the records of one (model, dataset) run. Writers hold :func:`writer_lock` (an
OS lock on a hidden ``.<name>.lock`` beside the file): a run holds it from its "does the file
exist" check to its last record, so two runs never both append to one file; a single append
or whole-file write takes it for its own duration, waiting a while for another writer.

Appends go through a single ``os.write`` on an ``O_APPEND`` descriptor followed by ``fsync``;
a failed write (a full disk) is cut back off before the error is raised, and a writer killed
mid-write leaves at worst a torn last line, which readers drop with a warning and the next
append cuts off. Only a torn line that provably comes from this package is treated so (see
:mod:`~robustbench_pp.results.lines`): a file that is not a results file is refused and never
changed. Every other malformed line is an error naming the file and line number: results are
never silently skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import threading
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from robustbench_pp.fileio import atomic_write, exclusive_lock
from robustbench_pp.results.lines import Parsed, ResultsFileError, TornLineWarning, encode, parse
from robustbench_pp.results.schema import IDENTITY_PROVENANCE, CellRecord

#: How long a single append or whole-file write waits for another writer of the same file.
WRITE_WAIT_SECONDS = 60.0

# Results files whose lock this thread holds (flock would wait on itself), each with the size it had
# after this thread's last append (None: not checked yet). While the lock is held nobody else
# writes, so a file still at that size needs no new check before the next append.
_held = threading.local()


@contextlib.contextmanager
def writer_lock(path: str | os.PathLike | None, *, wait: bool | float = False) -> Iterator[None]:
    """Hold the results file ``path`` for writing: no other process writes it meanwhile.

    Re-entrant within a thread, so the appends of a run that holds its file go through.
    ``None`` holds nothing (a run that keeps its records in memory).

    Args:
        path: the results file (it need not exist).
        wait: False fails at once when another process writes the file; True waits for it;
            a number waits at most that many seconds.

    Raises:
        robustbench_pp.fileio.LockedError: another process holds the file (an ``OSError``).
        OSError: the lock file cannot be created beside ``path``.
    """
    if path is None:
        yield
        return
    target = Path(path).resolve()
    held = _held.__dict__.setdefault("sizes", {})
    if target in held:
        yield
        return
    with exclusive_lock(target, wait=wait):
        held[target] = None
        try:
            yield
        finally:
            del held[target]


def _regular_file(path: Path) -> bool:
    """Whether ``path`` exists; refuses what is there but is no regular file (a FIFO would hang)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(mode):
        raise ResultsFileError(f"{path} is not a regular file")
    return True


def _parse_file(path: Path) -> Parsed:
    if not _regular_file(path):
        raise ResultsFileError(f"results file not found: {path}")
    return parse(path.read_bytes(), path)


def read_records(path: str | os.PathLike) -> list[CellRecord]:
    """Read every record of a results file.

    A torn last line left by a killed writer of this package is dropped with a
    :class:`TornLineWarning`; a complete last record without its newline is read.

    Raises:
        ResultsFileError: when the file is missing or not a results file, a line is not
            JSON, a record is malformed or has a newer schema; the message names the file
            and line.
    """
    path = Path(path)
    parsed = _parse_file(path)
    if parsed.torn_at is not None:
        warnings.warn(f"{path}: the last line is incomplete (a writer was interrupted); ignoring it",
                      TornLineWarning, stacklevel=2)
    return parsed.records


def _prepare_append(fd: int, path: Path) -> tuple[int, bytes]:
    """Check the file is a results file and make its end ready: returns (size, bytes to write first).

    Cuts this package's own torn last line off; a last record without newline gets one.
    """
    size = os.fstat(fd).st_size
    if size == 0:
        return 0, b""
    raw = os.pread(fd, size, 0)
    parsed = parse(raw, path)
    if parsed.torn_at is not None:
        warnings.warn(f"{path}: removing an incomplete last line left by an interrupted writer", TornLineWarning,
                      stacklevel=4)
        os.ftruncate(fd, parsed.torn_at)
        return parsed.torn_at, b""
    return size, b"\n" if parsed.needs_newline else b""


def append_records(path: str | os.PathLike, records: Iterable[CellRecord]) -> None:
    """Append records to a results file atomically (all of them or, if killed, a torn tail).

    Creates the file and its folder when missing. Under :func:`writer_lock` (waiting up to
    :data:`WRITE_WAIT_SECONDS` for another writer), it checks the file is a results file,
    writes the bytes of all records in one ``os.write`` and fsyncs them before returning, so
    a record reported as written survives a crash. A write that fails (a full disk) is cut
    back off: the file is as it was.

    Raises:
        ResultsFileError: ``path`` is not a results file (it is left untouched).
        OSError: the write failed, or another writer held the file too long.
    """
    path = Path(path)
    payload = b"".join(encode(r) for r in records)
    if not payload:
        return
    _regular_file(path)  # before the lock file is made beside it (no /dev/.null.lock)
    path.parent.mkdir(parents=True, exist_ok=True)
    with writer_lock(path, wait=WRITE_WAIT_SECONDS):
        _regular_file(path)
        sizes = _held.sizes
        target = Path(path).resolve()
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            size, prefix = os.fstat(fd).st_size, b""
            if sizes.get(target) != size:  # not as this thread's last append left it: check it
                size, prefix = _prepare_append(fd, path)
            data = prefix + payload
            try:
                written = os.write(fd, data)
                while written < len(data):  # pragma: no cover - regular files write whole buffers
                    written += os.write(fd, data[written:])
                os.fsync(fd)
            except BaseException:
                os.ftruncate(fd, size)  # nothing half-written stays behind
                raise
            sizes[target] = size + len(data)
        finally:
            os.close(fd)


def write_records(path: str | os.PathLike, records: Sequence[CellRecord], *, overwrite: bool = True) -> None:
    """Write a whole results file at once (temp file + atomic rename): for merged results.

    Args:
        path: the results file.
        records: its records, in order.
        overwrite: False refuses an existing file (checked under the writer lock, so two
            writers cannot both find it absent).

    Raises:
        ResultsFileError: ``overwrite`` is False and ``path`` exists (nothing is written).
    """
    path = Path(path)
    payload = b"".join(encode(r) for r in records)
    path.parent.mkdir(parents=True, exist_ok=True)
    with writer_lock(path, wait=WRITE_WAIT_SECONDS):
        _regular_file(path)
        if not overwrite and (path.exists() or path.is_symlink()):
            raise ResultsFileError(f"{path} already exists; choose another `out` (nothing was written)")
        atomic_write(path, payload)


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
