"""Regression gate: compare a run's errors with a reference run of the same evaluation.

The comparison is pure (two :class:`~robustbench_pp.results.RunTable` in, a
:class:`CheckResult` out); ``rbpp check`` prints it and exits with its code:

- 0: every compared number is within tolerance;
- 1: a regression, i.e. some error rose by more than its tolerance (or, with ``two_sided``,
  moved by more than it in either direction);
- 2: the runs cannot be compared: another dataset, preset or image subset, or the new run
  lacks cells the reference has.

Compared numbers: every cell error present in both runs (the clean cell is E), with the
cell tolerance; the unnormalised mean error over the 15 × 5 benchmark cells and, on
ImageNet-C, the AlexNet-normalised mCE, with the mCE tolerance. With ``ci_aware``, a cell
whose reference record carries a 95% bootstrap interval is flagged only when the new error
is also outside that interval; the mean errors likewise, when the reference records keep
per-image correctness (a bootstrap over images gives their intervals). It never makes the
gate stricter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from robustbench_pp.metrics import mean_corruption_error, unnormalized_mean_error
from robustbench_pp.names import CLEAN, CORRUPTIONS, SEVERITIES
from robustbench_pp.results import ALEXNET_REFERENCE, RunTable, is_imagenet_c

OK, REGRESSION, INCOMPARABLE = 0, 1, 2


@dataclass(frozen=True)
class Finding:
    """One compared number that moved by more than its tolerance.

    Attributes:
        what: ``"gaussian_noise/3"``, ``"clean error E"``, ``"unnormalised mean error"``...
        old: the reference value.
        new: the value of the checked run.
        tolerance: the allowed absolute change.
        interval: the reference's 95% interval when it was used (``ci_aware``).
    """

    what: str
    old: float
    new: float
    tolerance: float
    interval: tuple[float, float] | None = None

    @property
    def delta(self) -> float:
        return self.new - self.old

    @property
    def worse(self) -> bool:
        return self.delta > 0

    def describe(self) -> str:
        """One line: what, old, new, delta (errors in %, i.e. percentage points for delta)."""
        interval = "" if self.interval is None else f", outside 95% CI {100 * self.interval[0]:.2f}–{100 * self.interval[1]:.2f}"
        return (f"{self.what:<24} old {100 * self.old:7.2f}  new {100 * self.new:7.2f}  "
                f"delta {100 * self.delta:+6.2f} (tolerance {100 * self.tolerance:.2f}{interval})")


@dataclass(frozen=True)
class CheckResult:
    """The outcome of :func:`compare_runs`.

    Attributes:
        regressions: findings that fail the gate.
        improvements: errors that dropped by more than the tolerance (informational unless
            ``two_sided``, where they are regressions too).
        incomparable: reasons the runs cannot be compared (empty when they can).
        notes: caveats that do not change the outcome.
        compared: how many numbers were compared.
    """

    regressions: tuple[Finding, ...] = ()
    improvements: tuple[Finding, ...] = ()
    incomparable: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    compared: int = 0

    @property
    def exit_code(self) -> int:
        if self.incomparable:
            return INCOMPARABLE
        return REGRESSION if self.regressions else OK


def _subset(table: RunTable):
    """The image subset (``--limit``) of a run: ``rbpp evaluate`` records it in the settings."""
    provenance = table.records[0].provenance
    value = provenance.get("subset")
    settings = provenance.get("settings")
    if value is None and isinstance(settings, dict):
        value = settings.get("subset")
    return json.dumps(value, sort_keys=True) if value is not None else None


def incomparability(results: RunTable, reference: RunTable) -> list[str]:
    """Why two runs cannot be compared (empty list when they can).

    Different dataset, corruption preset, image subset (``--limit``) or number
    of images per cell make the errors measure different things.
    """
    reasons = []
    if results.dataset != reference.dataset:
        reasons.append(f"dataset: {results.dataset} vs reference {reference.dataset}")
    new_provenance, old_provenance = results.records[0].provenance, reference.records[0].provenance
    if new_provenance.get("preset") != old_provenance.get("preset"):
        reasons.append(f"preset: {new_provenance.get('preset')!r} vs reference {old_provenance.get('preset')!r}")
    if _subset(results) != _subset(reference):
        reasons.append(f"subset: {_subset(results) or 'full set'} vs reference {_subset(reference) or 'full set'}")
    if results.num_images != reference.num_images:
        reasons.append(f"images per cell: {results.num_images} vs reference {reference.num_images}")
    return reasons


def _aggregate_intervals(reference: RunTable) -> dict:
    """Bootstrap 95% intervals of the reference's mean errors from its per-image correctness.

    Empty when any benchmark cell lacks the per-image bits (older or reported records).
    """
    from robustbench_pp.metrics.bootstrap import bootstrap_mean_errors_ci

    cells = {r.cell: r for r in reference.records}
    try:
        masks = {c: [cells[(c, s)].correct_mask() for s in SEVERITIES] for c in CORRUPTIONS}
    except KeyError:
        return {}
    if any(mask is None for row in masks.values() for mask in row):
        return {}
    seed = int(reference.records[0].provenance.get("bootstrap_seed") or 0)
    alexnet = ALEXNET_REFERENCE.errors if is_imagenet_c(reference.dataset) else None
    try:
        return bootstrap_mean_errors_ci(masks, reference=alexnet, seed=seed)
    except ValueError:
        return {}


def _classify(finding: Finding, two_sided: bool, regressions: list, improvements: list) -> None:
    if finding.worse or two_sided:
        regressions.append(finding)
    else:
        improvements.append(finding)


def compare_runs(
    results: RunTable,
    reference: RunTable,
    *,
    tolerance_cell: float = 0.02,
    tolerance_mce: float = 0.01,
    ci_aware: bool = False,
    two_sided: bool = False,
) -> CheckResult:
    """Compare a run with a reference run, cell by cell and on the aggregates.

    Args:
        results: the run under test.
        reference: the committed reference run.
        tolerance_cell: allowed absolute change of a cell's top-1 error (0.02 = 2 points).
        tolerance_mce: allowed absolute change of the mean errors (unnormalised mean error;
            AlexNet-normalised mCE on ImageNet-C).
        ci_aware: flag a cell only when the new error is also outside the reference
            record's ``ci95`` (cells without one keep the plain tolerance).
        two_sided: treat drops of error beyond tolerance as failures too (for a
            deterministic reference, where any change means the pipeline changed).

    Returns:
        A :class:`CheckResult`; its ``exit_code`` is 0, 1 or 2.

    Raises:
        ValueError: for a negative tolerance.
    """
    for name, value in (("tolerance_cell", tolerance_cell), ("tolerance_mce", tolerance_mce)):
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0, got {value!r}")
    notes = []
    reasons = incomparability(results, reference)
    new_cells = {r.cell: r for r in results.records}
    old_cells = {r.cell: r for r in reference.records}
    lacking = [cell for cell in old_cells if cell not in new_cells]
    if lacking:
        shown = ", ".join(f"{c}/{s}" for c, s in lacking[:6]) + (f" and {len(lacking) - 6} more" if len(lacking) > 6 else "")
        reasons.append(f"the results lack {len(lacking)} cell(s) of the reference: {shown}")
    if reasons:
        return CheckResult(incomparable=tuple(reasons))
    extra = [cell for cell in new_cells if cell not in old_cells]
    if extra:
        notes.append(f"{len(extra)} cell(s) are not in the reference and were not compared")
    if results.model != reference.model or results.recipe != reference.recipe:
        notes.append(f"comparing {results.label} with a reference of {reference.label}")
    new_provenance, old_provenance = results.records[0].provenance, reference.records[0].provenance
    for key in ("dataset_fingerprint", "seed", "data_mode", "settings", "checkpoint_sha256"):
        if new_provenance.get(key) != old_provenance.get(key):
            notes.append(f"{key} differs from the reference's")
    if ci_aware and not any(r.ci95 for r in reference.records):
        notes.append("--ci-aware: the reference records carry no 95% intervals; plain tolerances apply")

    regressions: list[Finding] = []
    improvements: list[Finding] = []
    compared = 0
    for cell, old in old_cells.items():
        new = new_cells[cell]
        compared += 1
        delta = new.top1_error - old.top1_error
        if abs(delta) <= tolerance_cell + 1e-12:
            continue
        interval = old.ci95 if ci_aware else None
        if interval is not None and interval[0] <= new.top1_error <= interval[1]:
            continue
        what = "clean error E" if cell[0] == CLEAN else f"{cell[0]}/{cell[1]}"
        _classify(Finding(what, old.top1_error, new.top1_error, tolerance_cell, interval), two_sided, regressions, improvements)

    if all(c in results.errors and c in reference.errors for c in CORRUPTIONS):
        aggregates = [("unnormalised mean error", unnormalized_mean_error(reference.errors), unnormalized_mean_error(results.errors))]
        if is_imagenet_c(results.dataset):
            aggregates.append((
                "mCE (AlexNet)",
                mean_corruption_error(reference.errors, ALEXNET_REFERENCE.errors),
                mean_corruption_error(results.errors, ALEXNET_REFERENCE.errors),
            ))
        intervals = _aggregate_intervals(reference) if ci_aware else {}
        for (what, old_value, new_value), key in zip(aggregates, ("unnormalized_mean_error", "mce")):
            compared += 1
            if abs(new_value - old_value) <= tolerance_mce + 1e-12:
                continue
            interval = intervals.get(key)
            if interval is not None and interval[0] <= new_value <= interval[1]:
                continue
            _classify(Finding(what, old_value, new_value, tolerance_mce, interval), two_sided, regressions, improvements)
    else:
        notes.append("not all 15 corruptions are complete in both runs: mean errors were not compared")
    return CheckResult(tuple(regressions), tuple(improvements), (), tuple(notes), compared)
