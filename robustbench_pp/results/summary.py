"""A run's headline numbers: E, mCE, relative mCE, unnormalised error, both R_net, intervals.

``rbpp metrics`` (and the summary after ``rbpp evaluate``) prints a :class:`RunMetrics`; the
leaderboard builds its rows from :func:`summarize_run`; ``rbpp check`` bootstraps the
reference run's mean errors with :func:`mean_error_intervals`. All are pure functions of
:class:`~robustbench_pp.results.RunTable` objects (files are read by the caller).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

from robustbench_pp.metrics import RobustnessSummary, summarize
from robustbench_pp.metrics.bootstrap import bootstrap_mean_errors_ci
from robustbench_pp.names import CORRUPTIONS, SEVERITIES
from robustbench_pp.results.references import Reference, no_reference_note
from robustbench_pp.results.tables import IncompleteRunError, RunTable, missing_cells_message

#: Where R_net's formula comes from, said wherever an R_net is shown.
R_NET_FORMULA_NOTE = "R_net's formula is reconstructed from the PushPull-Net table (it fits every row within rounding)."


def summarize_run(
    table: RunTable, reference: Reference | None = None, baseline: RunTable | None = None
) -> RobustnessSummary:
    """Headline metrics of a complete run (E, mCE, relative mCE, unnormalised error, both R_net).

    Args:
        table: the run.
        reference: the mCE normaliser (None: no mCE, see the summary's ``note``).
        baseline: the run R_net is measured against, summarised with the same reference.

    Raises:
        IncompleteRunError: when the run (or the baseline) misses cells.
    """
    if not table.complete:
        raise IncompleteRunError(missing_cells_message(table, "for mCE"))
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


def mean_error_intervals(table: RunTable, reference: Reference | None = None) -> dict[str, tuple[float, float]]:
    """95% bootstrap intervals of a run's mean errors, from its per-image correctness.

    Images are resampled once per replicate for all cells (see
    :func:`~robustbench_pp.metrics.bootstrap.bootstrap_mean_errors_ci`), seeded by the run's
    ``bootstrap_seed``.

    Args:
        table: the run.
        reference: the mCE normaliser; with it the mCE gets an interval too.

    Returns:
        ``{"unnormalized_mean_error": (low, high)}`` plus ``"mce"`` with a reference; empty
        when a benchmark cell is missing or lacks per-image correctness (older or reported
        records) or the cells cover different images.
    """
    cells = {r.cell: r.correct_mask() for r in table.records}
    try:
        masks = {c: [cells[(c, s)] for s in SEVERITIES] for c in CORRUPTIONS}
    except KeyError:
        return {}
    if any(mask is None for row in masks.values() for mask in row):
        return {}
    seed = int(table.provenance.get("bootstrap_seed") or 0)
    try:
        return bootstrap_mean_errors_ci(masks, reference=reference.errors if reference else None, seed=seed)
    except ValueError:
        return {}


@dataclass(frozen=True)
class RunMetrics:
    """Everything ``rbpp metrics`` shows of one run.

    Attributes:
        table: the run.
        summary: its headline numbers.
        intervals: 95% bootstrap intervals by summary field name (see :func:`mean_error_intervals`).
        reference: the mCE normaliser, or None.
        baseline: the R_net baseline run, or None.
        reference_note: why there is no mCE (no reference for the dataset), or None.
    """

    table: RunTable
    summary: RobustnessSummary
    intervals: Mapping[str, tuple[float, float]]
    reference: Reference | None = None
    baseline: RunTable | None = None
    reference_note: str | None = None

    @property
    def notes(self) -> tuple[str, ...]:
        """Caveats to print below the numbers, in order."""
        notes = [self.reference_note, self.summary.note if self.reference is not None else None]
        if self.baseline is not None:
            notes.append(R_NET_FORMULA_NOTE)
        return tuple(note for note in notes if note)

    def to_json(self) -> dict:
        """The JSON form (what ``rbpp metrics`` prints as JSON): run, summary fields, ``ci95`` and the reference note."""
        payload = {"model": self.table.label, "dataset": self.table.dataset, "num_images": self.table.num_images,
                   **asdict(self.summary), "ci95": dict(self.intervals)}
        if self.reference_note:
            payload["note"] = self.reference_note
        return payload


def run_metrics(table: RunTable, reference: Reference | None, baseline: RunTable | None = None) -> RunMetrics:
    """The headline numbers of a complete run with their intervals and notes.

    Args:
        table: the run.
        reference: its dataset's mCE normaliser (see
            :func:`~robustbench_pp.results.choose_references`), or None.
        baseline: the run R_net is measured against, on the same dataset.

    Raises:
        IncompleteRunError: when the run or the baseline misses cells.
        ValueError: when the baseline is on another dataset.
    """
    if baseline is not None and baseline.dataset != table.dataset:
        raise ValueError(f"`baseline` {baseline.label} is on {baseline.dataset}, not {table.dataset}")
    return RunMetrics(
        table=table,
        summary=summarize_run(table, reference, baseline),
        intervals=mean_error_intervals(table, reference),
        reference=reference,
        baseline=baseline,
        reference_note=None if reference is not None else no_reference_note(table.dataset),
    )
