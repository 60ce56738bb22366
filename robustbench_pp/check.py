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
gate stricter. With ``paired`` (the new run evaluated the reference's very images, both with
per-image correctness), a number beyond tolerance fails only when the paired statistics say
the change is real: a cell's Holm-adjusted exact McNemar test rejects at 0.05, a mean error's
paired 95% interval of the change excludes zero. Far tighter than two unpaired intervals, and
likewise never stricter than the tolerances; runs over other images are then incomparable.
A mean error without a paired interval (a run without the clean cell) is then not compared,
and a note says so.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from robustbench_pp.metrics import mean_corruption_error, unnormalized_mean_error
from robustbench_pp.names import CLEAN, CORRUPTIONS, DEFAULT_PROTOCOL
from robustbench_pp.results import ALEXNET_REFERENCE, RunTable, default_reference, is_imagenet_c, mean_error_intervals
from robustbench_pp.results.pairing import RunComparison, compare_runs_paired, pairing_problems

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
        evidence: why the paired statistics call the change real (``paired``).
    """

    what: str
    old: float
    new: float
    tolerance: float
    interval: tuple[float, float] | None = None
    evidence: str | None = None

    @property
    def delta(self) -> float:
        return self.new - self.old

    @property
    def worse(self) -> bool:
        return self.delta > 0

    def describe(self) -> str:
        """One line: what, old, new, delta (errors in %, i.e. percentage points for delta)."""
        interval = "" if self.interval is None else f", outside 95% CI {100 * self.interval[0]:.2f}–{100 * self.interval[1]:.2f}"
        interval += "" if self.evidence is None else f", {self.evidence}"
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


@dataclass(frozen=True)
class Tolerances:
    """How far a compared number may move, and how findings are judged.

    Attributes:
        cell: allowed absolute change of a cell's top-1 error (0.02 = 2 points).
        mce: allowed absolute change of the mean errors (unnormalised mean error;
            AlexNet-normalised mCE on ImageNet-C).
        ci_aware: flag a number only when the new value is also outside the reference's
            95% interval (cells: the record's ``ci95``; mean errors: a bootstrap over images).
        two_sided: treat drops of error beyond tolerance as failures too (for a
            deterministic reference, where any change means the pipeline changed).
        paired: flag a number only when the paired statistics of the same images call the
            change real (cells: Holm-adjusted exact McNemar at 0.05; mean errors: the paired
            95% interval of the change excludes zero).

    Raises:
        ValueError: for a negative or non-finite tolerance, or ``ci_aware`` with ``paired``.
    """

    cell: float = 0.02
    mce: float = 0.01
    ci_aware: bool = False
    two_sided: bool = False
    paired: bool = False

    def __post_init__(self) -> None:
        for name, value in (("tolerance_cell", self.cell), ("tolerance_mce", self.mce)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}")
        if self.ci_aware and self.paired:
            raise ValueError("`ci_aware` and `paired` judge changes in two different ways: choose one")


def _subset(table: RunTable) -> str | None:
    """The run's image subset as canonical JSON (None for the whole set), to compare runs."""
    return None if table.subset is None else json.dumps(table.subset, sort_keys=True)


def incomparability(results: RunTable, reference: RunTable) -> list[str]:
    """Why two runs cannot be compared (empty list when they can).

    Different dataset, corruption preset, evaluation protocol (records without one used
    ``imagenet-c``), image subset (``limit``) or number of images per cell make the errors
    measure different things; so does a new run that lacks cells the reference has.
    """
    reasons = []
    if results.dataset != reference.dataset:
        reasons.append(f"dataset: {results.dataset} vs reference {reference.dataset}")
    new_preset, old_preset = results.provenance.get("preset"), reference.provenance.get("preset")
    if new_preset != old_preset:
        reasons.append(f"preset: {new_preset!r} vs reference {old_preset!r}")
    new_protocol, old_protocol = (table.provenance.get("protocol") or DEFAULT_PROTOCOL for table in (results, reference))
    if new_protocol != old_protocol:  # the clean cell is framed differently: E and R_net differ
        reasons.append(f"protocol: {new_protocol!r} vs reference {old_protocol!r}")
    if _subset(results) != _subset(reference):
        reasons.append(f"subset: {_subset(results) or 'full set'} vs reference {_subset(reference) or 'full set'}")
    if results.num_images != reference.num_images:
        reasons.append(f"images per cell: {results.num_images} vs reference {reference.num_images}")
    new_cells = {r.cell for r in results.records}
    lacking = [r.cell for r in reference.records if r.cell not in new_cells]
    if lacking:
        shown = ", ".join(f"{c}/{s}" for c, s in lacking[:6]) + (f" and {len(lacking) - 6} more" if len(lacking) > 6 else "")
        reasons.append(f"the results lack {len(lacking)} cell(s) of the reference: {shown}")
    return reasons


def _notes(results: RunTable, reference: RunTable, tolerances: Tolerances) -> list[str]:
    """Caveats of a comparison that do not change its outcome."""
    notes = []
    old_cells = {r.cell for r in reference.records}
    extra = [r.cell for r in results.records if r.cell not in old_cells]
    if extra:
        notes.append(f"{len(extra)} cell(s) are not in the reference and were not compared")
    if results.model != reference.model or results.recipe != reference.recipe:
        notes.append(f"comparing {results.label} with a reference of {reference.label}")
    for key in ("dataset_fingerprint", "seed", "data_mode", "settings", "checkpoint_sha256"):
        if results.provenance.get(key) != reference.provenance.get(key):
            notes.append(f"{key} differs from the reference's")
    if tolerances.ci_aware and not any(r.ci95 for r in reference.records):
        notes.append("`ci_aware`: the reference records carry no 95% intervals; plain tolerances apply")
    if not _has_all_corruptions(results, reference):
        notes.append("not all 15 corruptions are complete in both runs: mean errors were not compared")
    return notes


def _has_all_corruptions(results: RunTable, reference: RunTable) -> bool:
    return all(c in results.errors and c in reference.errors for c in CORRUPTIONS)


def _finding(what: str, old: float, new: float, tolerance: float, interval, evidence: "str | bool | None" = None) -> Finding | None:
    """A finding when ``new`` moved from ``old`` beyond ``tolerance``, outside ``interval`` and, when
    paired statistics were asked for, with ``evidence`` that the change is real (False: it is not)."""
    if abs(new - old) <= tolerance + 1e-12:
        return None
    if interval is not None and interval[0] <= new <= interval[1]:
        return None
    if evidence is False:
        return None
    return Finding(what, old, new, tolerance, interval, evidence or None)


def _cell_evidence(paired: RunComparison | None, cell) -> "str | bool | None":
    """Paired evidence of a cell's change: the McNemar line when Holm rejects, False when not, None unpaired."""
    if paired is None:
        return None
    test = next(t for t in paired.paired.cells if (t.corruption, t.severity) == cell)
    return test.significant and f"McNemar p_Holm {test.p_holm:.2g} ({test.b_only_wrong} vs {test.a_only_wrong} discordant)"


def _cell_findings(results: RunTable, reference: RunTable, tolerances: Tolerances,
                   paired: RunComparison | None = None) -> tuple[list[Finding], int]:
    """Findings over every cell of the reference (the clean cell is E), and how many were compared."""
    new_cells = {r.cell: r for r in results.records}
    findings = []
    for old in reference.records:
        what = "clean error E" if old.corruption == CLEAN else f"{old.corruption}/{old.severity}"
        interval = old.ci95 if tolerances.ci_aware else None
        findings.append(_finding(what, old.top1_error, new_cells[old.cell].top1_error, tolerances.cell, interval,
                                 _cell_evidence(paired, old.cell)))
    return [f for f in findings if f is not None], len(reference.records)


def _aggregates(table: RunTable) -> dict[str, tuple[str, float]]:
    """Interval key -> (what, value) of the mean errors compared: unnormalised, and mCE on ImageNet-C."""
    out = {"unnormalized_mean_error": ("unnormalised mean error", unnormalized_mean_error(table.errors))}
    if is_imagenet_c(table.dataset):
        out["mce"] = ("mCE (AlexNet)", mean_corruption_error(table.errors, ALEXNET_REFERENCE.errors))
    return out


def _aggregate_evidence(paired: RunComparison | None, key: str) -> "str | bool | None":
    """Paired evidence of a mean error's change: its interval when it excludes zero, False when not."""
    if paired is None:
        return None
    delta = paired.paired.deltas.get(key)
    if delta is None:
        return None
    return delta.excludes_zero and f"paired 95% CI of the change {100 * delta.low:+.2f}–{100 * delta.high:+.2f}"


def _unpaired_aggregates(results: RunTable, reference: RunTable, paired: RunComparison | None) -> frozenset[str]:
    """The mean errors that paired statistics were asked for but give no interval of (not compared)."""
    if paired is None or not _has_all_corruptions(results, reference):
        return frozenset()
    return frozenset(key for key in _aggregates(reference) if paired.paired.deltas.get(key) is None)


def _aggregate_findings(results: RunTable, reference: RunTable, tolerances: Tolerances,
                        paired: RunComparison | None = None, skip: frozenset[str] = frozenset()) -> tuple[list[Finding], int]:
    """Findings over the mean errors (none when a corruption is incomplete; none of ``skip``), and how many were compared."""
    if not _has_all_corruptions(results, reference):
        return [], 0
    intervals = {}
    if tolerances.ci_aware:
        intervals = mean_error_intervals(reference, default_reference(reference.dataset))
    old = {key: value for key, value in _aggregates(reference).items() if key not in skip}
    new = _aggregates(results)
    findings = [_finding(what, value, new[key][1], tolerances.mce, intervals.get(key), _aggregate_evidence(paired, key))
                for key, (what, value) in old.items()]
    return [f for f in findings if f is not None], len(old)


def _paired(results: RunTable, reference: RunTable) -> RunComparison:
    """The new run against the reference, image by image (the reference is A, the new run B)."""
    normaliser = default_reference(reference.dataset)
    return compare_runs_paired(reference, results, reference=normaliser, alpha=0.05)


def compare_runs(
    results: RunTable,
    reference: RunTable,
    *,
    tolerance_cell: float = 0.02,
    tolerance_mce: float = 0.01,
    ci_aware: bool = False,
    two_sided: bool = False,
    paired: bool = False,
) -> CheckResult:
    """Compare a run with a reference run, cell by cell and on the aggregates.

    Args:
        results: the run under test.
        reference: the committed reference run.
        tolerance_cell, tolerance_mce, ci_aware, two_sided, paired: see :class:`Tolerances`;
            with ``paired``, runs over other images (or without per-image correctness) are
            incomparable.

    Returns:
        A :class:`CheckResult`; its ``exit_code`` is 0, 1 or 2.

    Raises:
        ValueError: for a negative tolerance.
    """
    tolerances = Tolerances(tolerance_cell, tolerance_mce, ci_aware, two_sided, paired)
    reasons = incomparability(results, reference)
    if not reasons and paired:
        reasons = [f"`paired`: {reason}" for reason in pairing_problems(reference, results, ("the reference", "the results"))]
    if reasons:
        return CheckResult(incomparable=tuple(reasons))
    statistics = _paired(results, reference) if paired else None
    unpaired = _unpaired_aggregates(results, reference, statistics)
    cell_findings, cells = _cell_findings(results, reference, tolerances, statistics)
    aggregate_findings, aggregates = _aggregate_findings(results, reference, tolerances, statistics, unpaired)
    findings = cell_findings + aggregate_findings
    notes = _notes(results, reference, tolerances)
    if unpaired:
        notes.append("`paired`: mean errors not compared: their paired intervals need the clean cell in both runs")
    if statistics is not None:
        plain = (len(_cell_findings(results, reference, tolerances)[0])
                 + len(_aggregate_findings(results, reference, tolerances, skip=unpaired)[0]))
        if plain > len(findings):
            notes.append(f"`paired`: {plain - len(findings)} number(s) moved beyond tolerance but not beyond the noise "
                         "of the images (not flagged)")
    return CheckResult(
        regressions=tuple(f for f in findings if f.worse or two_sided),
        improvements=tuple(f for f in findings if not (f.worse or two_sided)),
        notes=tuple(notes),
        compared=cells + aggregates,
    )


def headline(results: RunTable, reference: RunTable) -> str:
    """E and the unnormalised mean error, reference -> new (in %), for the CI log."""

    def pct(value):
        return "—" if value is None else f"{100 * value:.2f}"

    parts = [f"{results.label} on {results.dataset} ({results.num_images} images per cell): "
             f"E {pct(reference.clean_error)} -> {pct(results.clean_error)}"]
    if _has_all_corruptions(results, reference):
        old, new = unnormalized_mean_error(reference.errors), unnormalized_mean_error(results.errors)
        parts.append(f"unnormalised mean error {pct(old)} -> {pct(new)}")
    return "; ".join(parts) + " (reference -> new, %)"
