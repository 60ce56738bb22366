"""From records to error tables: the shape the metrics functions take.

A :class:`RunTable` is one run (one model on one dataset, one results file); it also answers
what produced the run (:attr:`RunTable.provenance`), so no caller digs into its records.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from robustbench_pp.names import ALL_CORRUPTIONS, CLEAN, CORRUPTIONS, SEVERITIES
from robustbench_pp.results.schema import CellRecord
from robustbench_pp.results.store import ResultsFileError, describe_mismatch, read_records, run_identity


class IncompleteRunError(ValueError):
    """A run lacks cells that a metric needs; the message lists them."""


@dataclass(frozen=True)
class RunTable:
    """The errors of one run: clean error and corruption -> 5 per-severity errors.

    Only corruptions with all five severities are in ``errors``; ``missing`` lists the
    (corruption, severity) cells of the 15 benchmark corruptions that are absent. See
    :data:`~robustbench_pp.results.schema.REQUIRED_PROVENANCE` for the provenance keys.
    """

    model: str
    recipe: str | None
    dataset: str
    clean_error: float | None
    errors: Mapping[str, tuple[float, ...]]
    missing: tuple[tuple[str, int], ...]
    num_images: int
    records: tuple[CellRecord, ...]

    @property
    def label(self) -> str:
        return self.model if not self.recipe or self.recipe == "none" else f"{self.model} ({self.recipe})"

    @property
    def complete(self) -> bool:
        return self.clean_error is not None and not self.missing

    @property
    def provenance(self) -> Mapping[str, Any]:
        """What produced the run: checkpoint, data, code, machine and settings.

        The keys of the run's identity (``IDENTITY_PROVENANCE``) agree across its records
        by construction; per-cell keys (``created_utc``, ``device``) are those of its first cell.
        """
        return self.records[0].provenance

    @property
    def subset(self) -> Any:
        """The image subset evaluated (``{"limit": n, "seed": s}``), or None for the whole set.

        ``rbpp evaluate`` records it in the settings; older records at the top level.
        """
        value = self.provenance.get("subset")
        settings = self.provenance.get("settings")
        if value is None and isinstance(settings, Mapping):
            value = settings.get("subset")
        return value


def load_run(path: str | os.PathLike) -> RunTable:
    """Read a results file into a :class:`RunTable`.

    Raises:
        ResultsFileError: when the file is missing or malformed, or mixes runs; the message
            names the file.
    """
    records = read_records(path)
    try:
        return run_table(records)
    except ValueError as exc:
        raise ResultsFileError(f"{path}: {exc}") from None


def run_table(records: Sequence[CellRecord]) -> RunTable:
    """Collect one run's records into a :class:`RunTable`.

    Raises:
        ValueError: when the records mix runs (different model, checkpoint, data or
            settings) or one cell appears twice with different counts.
    """
    if not records:
        raise ValueError("no records")
    identity = run_identity(records[0])
    cells: dict[tuple[str, int], CellRecord] = {}
    for record in records:
        differences = describe_mismatch(identity, run_identity(record))
        if differences:
            raise ValueError("records of different runs mixed: " + "; ".join(differences))
        previous = cells.get(record.cell)
        if previous is not None and (previous.n_correct, previous.n_total) != (record.n_correct, record.n_total):
            raise ValueError(f"cell {record.cell} recorded twice with different results")
        cells[record.cell] = record
    clean = cells.get((CLEAN, 0))
    errors = {}
    for name in ALL_CORRUPTIONS:
        row = [cells.get((name, s)) for s in SEVERITIES]
        if all(r is not None for r in row):
            errors[name] = tuple(r.top1_error for r in row)
    missing = tuple((c, s) for c in CORRUPTIONS for s in SEVERITIES if (c, s) not in cells)
    first = records[0]
    return RunTable(
        model=first.model,
        recipe=first.recipe,
        dataset=first.dataset,
        clean_error=clean.top1_error if clean else None,
        errors=errors,
        missing=missing,
        num_images=int(first.provenance.get("num_images") or first.n_total),
        records=tuple(cells[k] for k in sorted(cells, key=_cell_order)),
    )


def _cell_order(cell: tuple[str, int]) -> tuple[int, int]:
    name, severity = cell
    return (-1 if name == CLEAN else ALL_CORRUPTIONS.index(name), severity)


def missing_cells_message(table: RunTable, purpose: str) -> str:
    """What a run lacks for ``purpose`` (e.g. "for mCE"): the clean cell and the missing cells, listed."""
    parts = []
    if table.clean_error is None:
        parts.append("the clean cell")
    if table.missing:
        shown = ", ".join(f"{c}/{s}" for c, s in table.missing[:8])
        more = f" and {len(table.missing) - 8} more" if len(table.missing) > 8 else ""
        parts.append(f"{len(table.missing)} corruption cell(s): {shown}{more}")
    return f"{table.label} on {table.dataset} cannot be used {purpose}: missing " + "; ".join(parts)
