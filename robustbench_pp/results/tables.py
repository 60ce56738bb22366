"""From records to error tables: the shape the metrics functions take.

Also the references for normalisation: the published AlexNet ImageNet-C errors, or any run
evaluated by this tool on the same data (the protocol's rule for CIFAR-style sets).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from robustbench_pp.metrics import (
    ALEXNET_IMAGENET_C,
    ALEXNET_IMAGENET_CLEAN,
    CORRUPTIONS,
    RobustnessSummary,
    summarize,
)
from robustbench_pp.names import ALL_CORRUPTIONS, CLEAN, SEVERITIES
from robustbench_pp.results.schema import CellRecord
from robustbench_pp.results.store import describe_mismatch, run_identity


class IncompleteRunError(ValueError):
    """A run lacks cells that a metric needs; the message lists them."""


@dataclass(frozen=True)
class RunTable:
    """The errors of one run: clean error and corruption -> 5 per-severity errors.

    Only corruptions with all five severities are in ``errors``; ``missing`` lists the
    (corruption, severity) cells of the 15 benchmark corruptions that are absent.
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


@dataclass(frozen=True)
class Reference:
    """A normaliser: per-corruption errors (5 values or an average) and a clean error."""

    name: str
    errors: Mapping[str, "tuple[float, ...] | float"]
    clean_error: float


ALEXNET_REFERENCE = Reference("alexnet (published ImageNet-C)", ALEXNET_IMAGENET_C, ALEXNET_IMAGENET_CLEAN)


def reference_from_run(table: RunTable) -> Reference:
    """Use a run evaluated by this tool as the normaliser (e.g. a CIFAR-size AlexNet).

    Raises:
        IncompleteRunError: when the run lacks the clean cell or any benchmark cell.
    """
    if not table.complete:
        raise IncompleteRunError(_missing_message(table, "as a reference"))
    return Reference(f"{table.label} on {table.dataset}", dict(table.errors), table.clean_error)


def _missing_message(table: RunTable, purpose: str) -> str:
    parts = []
    if table.clean_error is None:
        parts.append("the clean cell")
    if table.missing:
        shown = ", ".join(f"{c}/{s}" for c, s in table.missing[:8])
        more = f" and {len(table.missing) - 8} more" if len(table.missing) > 8 else ""
        parts.append(f"{len(table.missing)} corruption cell(s): {shown}{more}")
    return f"{table.label} on {table.dataset} cannot be used {purpose}: missing " + "; ".join(parts)


def is_imagenet_c(dataset: str) -> bool:
    """Whether a dataset is ImageNet-C proper (1000 classes), where AlexNet's errors apply."""
    return dataset == "imagenet-c"


def summarize_run(
    table: RunTable, reference: Reference | None = None, baseline: RunTable | None = None
) -> RobustnessSummary:
    """Headline metrics of a complete run (E, mCE, relative mCE, unnormalised error, R_net).

    Raises:
        IncompleteRunError: when the run (or the baseline) misses cells.
    """
    if not table.complete:
        raise IncompleteRunError(_missing_message(table, "for mCE"))
    baseline_summary = None
    if baseline is not None:
        baseline_summary = summarize_run(baseline, reference)
    return summarize(
        table.errors,
        table.clean_error,
        reference=reference.errors if reference else None,
        reference_clean_error=reference.clean_error if reference else None,
        reference_name=reference.name if reference else None,
        baseline=baseline_summary,
    )
