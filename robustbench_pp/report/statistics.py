"""The statistics a leaderboard row shows: 95% intervals of its numbers, and its paired Δ vs the baseline.

- Each measured run's E, mCE and unnormalised mean error get unpaired 95% bootstrap intervals
  over its images (:func:`run_intervals`).
- Each run's unnormalised mean error and mCE get their difference to the baseline's with a
  *paired* 95% interval (:func:`paired_against`): the same images are resampled for both runs
  (and for the reference run when it is one of the runs shown), which cancels the images'
  difficulty and is far tighter than comparing two unpaired intervals.

Both need per-image correctness in the records; rows without it (reported numbers, records
written before rbpp kept it) get no interval, and a note says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from robustbench_pp.metrics.bootstrap import bootstrap_error_ci
from robustbench_pp.names import CLEAN
from robustbench_pp.results import IncomparableRunsError, Reference, RunComparison, RunTable, compare_runs_paired
from robustbench_pp.results import mean_error_intervals, reference_from_run

REPORTED_NOTE = "copied from a paper without per-image results: no 95% interval and no paired Δ"
NO_BITS_NOTE = ("no 95% interval: its records keep no per-image correctness (written by an older rbpp); "
                "re-evaluate to get intervals and a paired Δ")
INTERVAL_FIELDS = ("clean_error", "mce", "unnormalized_mean_error")


def run_intervals(table: RunTable, reference: Reference | None) -> dict[str, float | None]:
    """``<number>_low`` / ``<number>_high`` of E, mCE and the unnormalised mean error (None where unknown).

    E's interval is the clean record's own (computed at evaluation), else bootstrapped from its
    per-image correctness; the mean errors' come from
    :func:`~robustbench_pp.results.mean_error_intervals`.
    """
    out: dict[str, float | None] = {f"{name}_{end}": None for name in INTERVAL_FIELDS for end in ("low", "high")}
    clean = next((r for r in table.records if r.corruption == CLEAN), None)
    if clean is not None:
        interval = clean.ci95
        if interval is None and clean.correct_mask() is not None:
            interval = bootstrap_error_ci(clean.correct_mask(), seed=int(table.provenance.get("bootstrap_seed") or 0))
        if interval is not None:
            out["clean_error_low"], out["clean_error_high"] = interval
    if table.complete:
        for name, (low, high) in mean_error_intervals(table, reference).items():
            out[f"{name}_low"], out[f"{name}_high"] = low, high
    return out


def has_per_image_results(table: RunTable) -> bool:
    return any(r.correct_mask() is not None for r in table.records)


def reference_run(tables: Sequence[RunTable], reference: Reference | None) -> RunTable | None:
    """The run among ``tables`` that ``reference`` was made from (to resample it with the images), if any."""
    if reference is None:
        return None
    return next((t for t in tables if t.complete and reference_from_run(t) == reference), None)


@dataclass(frozen=True)
class PairedDelta:
    """A run against the baseline: the comparison, or why there is none."""

    comparison: RunComparison | None
    note: str | None = None

    def fields(self) -> dict[str, float | None]:
        """``delta_<number>``, ``delta_<number>_low`` and ``_high`` (fractions) of the unnormalised mean error and mCE."""
        out: dict[str, float | None] = {}
        for name in ("unnormalized_mean_error", "mce"):
            value = None if self.comparison is None else self.comparison.paired.deltas.get(name)
            out[f"delta_{name}"] = None if value is None else value.estimate
            out[f"delta_{name}_low"] = None if value is None else value.low
            out[f"delta_{name}_high"] = None if value is None else value.high
        return out


def paired_against(base: RunTable, table: RunTable, reference: Reference | None,
                   reference_table: RunTable | None = None) -> PairedDelta:
    """``table`` − ``base`` image by image (see :func:`~robustbench_pp.results.compare_runs_paired`).

    Runs over other images or without per-image correctness give no comparison and a note.
    """
    try:
        comparison = compare_runs_paired(base, table, reference=None if reference_table else reference,
                                         reference_run=reference_table)
    except IncomparableRunsError as exc:
        return PairedDelta(None, f"no paired Δ against {base.label}: " + "; ".join(exc.reasons))
    return PairedDelta(comparison)
