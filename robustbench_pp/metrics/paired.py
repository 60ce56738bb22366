"""Paired statistics of two runs over the same images: is B really better (or worse) than A?

Every model in a comparison sees the same images, and most of the spread of a run's error
comes from which images were drawn (some are hard for every model). Two unpaired intervals
carry that spread twice; a paired analysis cancels it:

- :func:`paired_bootstrap`: images are resampled *jointly* for A, B and, when given, the
  reference run (one draw per replicate, applied to every cell of every run), and the
  differences B − A of the clean error, the unnormalised mean error, the mCE and R_net
  (B against A as the baseline) are taken inside each replicate. Percentile intervals.
- :func:`mcnemar_exact`: per cell, the exact McNemar test, i.e. a two-sided binomial test of
  the discordant pairs (``b_only_wrong``: A right and B wrong; ``a_only_wrong``: the
  reverse) against p = ½. It equals ``scipy.stats.binomtest(b_only_wrong, n, 0.5).pvalue``
  to the last bit; 1.0 when there are no discordant pairs.
- :func:`holm_adjust`: Holm's step-down adjustment across the cells compared.
- :func:`compare_paired`: all of it for two runs' per-image correctness.

Percentile intervals, not BCa: in the simulations of ``tests/test_paired_statistics.py``
(1000 pairs of 300 images) the 95% percentile intervals covered the true difference in 94.5%
(flip model, clean error), 94.4% (flip, mean error), 93.2% and 94.8% (correlated model) of the
pairs, BCa (``method="bca"``) in 95.0%, 94.3%, 92.5% and 94.5%: no better calibrated here.

Inputs are per-image correctness arrays by cell, ``(corruption, severity)`` with
``("clean", 0)`` for the clean cell, all over the same images in the same order. Errors
and their differences are fractions; R_net is in percent. Pure numpy/scipy: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from robustbench_pp.metrics.core import _reference_sum, _require
from robustbench_pp.names import ALL_CORRUPTIONS, CLEAN, CLEAN_SEVERITY, CORRUPTIONS, SEVERITIES

Cell = tuple[str, int]
CorrectByCell = Mapping[Cell, "np.ndarray | Sequence[bool]"]

DEFAULT_RESAMPLES = 2000
_CHUNK = 256  # replicates drawn at once: bounds memory (chunk × images weights) on ImageNet-size runs
#: The differences :func:`paired_bootstrap` reports, in this order.
DELTA_KEYS = ("clean_error", "unnormalized_mean_error", "mce", "r_net_unnormalized", "r_net_mce")


@dataclass(frozen=True)
class Interval:
    """A point estimate with its percentile bootstrap interval (same unit as the estimate)."""

    estimate: float
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies entirely above or below zero (the difference is real at its level)."""
        return self.low > 0.0 or self.high < 0.0

    @property
    def width(self) -> float:
        return self.high - self.low


@dataclass(frozen=True)
class CellTest:
    """The exact McNemar test of one cell.

    Attributes:
        corruption, severity: the cell (``"clean"``, 0 for the clean cell).
        delta: B's error minus A's (a fraction); equals (b_only_wrong − a_only_wrong) / images.
        b_only_wrong: images A classifies correctly and B does not.
        a_only_wrong: images B classifies correctly and A does not.
        p_value: exact two-sided McNemar p-value (1.0 without discordant pairs).
        p_holm: Holm-adjusted p-value across the cells compared.
        significant: ``p_holm <= alpha``.
    """

    corruption: str
    severity: int
    delta: float
    b_only_wrong: int
    a_only_wrong: int
    p_value: float
    p_holm: float
    significant: bool


@dataclass(frozen=True)
class PairedComparison:
    """B − A over the same images: aggregate differences with intervals, and per-cell tests.

    Attributes:
        images: images per cell.
        deltas: :data:`DELTA_KEYS` -> :class:`Interval` (errors as fractions, R_net in
            percent), or None where not computable (no reference: no mCE; a cell missing: no
            aggregates; A with zero clean error: no R_net).
        cells: one :class:`CellTest` per cell compared, clean first, in canonical order.
        level: the intervals' coverage (1 − alpha).
        alpha: the family-wise level of the Holm-adjusted tests.
        resamples, seed: of the bootstrap.
        reference_resampled: whether the reference's errors were resampled with the images
            (a reference run on the same images) rather than held constant (published errors).
        notes: why a difference is missing, and other caveats.
    """

    images: int
    deltas: Mapping[str, Interval | None]
    cells: tuple[CellTest, ...]
    level: float
    alpha: float
    resamples: int
    seed: int
    reference_resampled: bool = False
    notes: tuple[str, ...] = ()


def _discordant_p(low: np.ndarray, n: np.ndarray) -> np.ndarray:
    from scipy.stats import binom

    # scipy's two-sided binomtest at p = ½ sums P(X <= low) and the mirrored upper tail
    # P(X >= n − low), evaluated as cdf + sf exactly like this, so the values agree bit for bit.
    with np.errstate(invalid="ignore", divide="ignore"):
        p = binom.cdf(low, n, 0.5) + binom.sf(n - low - 1, n, 0.5)
    return np.minimum(1.0, np.where((n == 0) | (2 * low == n), 1.0, p))


def mcnemar_exact(b_only_wrong, a_only_wrong):
    """Exact two-sided McNemar p-value(s) of discordant counts (scalars or arrays).

    Args:
        b_only_wrong: images only B gets wrong.
        a_only_wrong: images only A gets wrong.

    Returns:
        ``scipy.stats.binomtest(b_only_wrong, b_only_wrong + a_only_wrong, 0.5).pvalue``,
        1.0 when there is no discordant pair; a float for scalar input, else an array.

    Raises:
        ValueError: for a negative or non-integer count.

    Example:
        >>> round(mcnemar_exact(10, 2), 4)
        0.0386
    """
    b, a = np.asarray(b_only_wrong), np.asarray(a_only_wrong)
    for name, value in (("b_only_wrong", b), ("a_only_wrong", a)):
        if value.dtype.kind not in "iu" or np.any(value < 0):
            raise ValueError(f"`{name}` must be non-negative integer counts, got {value!r}")
    n = a + b
    p = _discordant_p(np.minimum(a, b), n)
    return float(p) if p.ndim == 0 else p


def holm_adjust(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input's order.

    The i-th smallest of m p-values becomes max over j <= i of min(1, (m − j + 1)·p_(j)):
    rejecting where the adjusted value is <= alpha controls the family-wise error at alpha.

    Example:
        >>> holm_adjust([0.01, 0.04, 0.03]).tolist()
        [0.03, 0.06, 0.06]
    """
    p = np.asarray(p_values, dtype=float).reshape(-1)
    if p.size == 0:
        return p
    if np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError("`p_values` must lie in [0, 1]")
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (p.size - np.arange(p.size)) * p[order])
    adjusted = np.empty_like(p)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted


def _masks(correct: CorrectByCell, what: str) -> dict[Cell, np.ndarray]:
    if not isinstance(correct, Mapping):
        raise ValueError(f"`{what}` must map (corruption, severity) -> per-image correctness")
    out = {cell: np.asarray(mask, dtype=bool).reshape(-1) for cell, mask in correct.items()}
    sizes = {mask.size for mask in out.values()}
    if len(sizes) > 1 or 0 in sizes:
        raise ValueError(f"`{what}`: every cell must cover the same non-zero number of images, got {sorted(sizes)}")
    return out


def _corruption_cells() -> list[Cell]:
    return [(c, s) for c in CORRUPTIONS for s in SEVERITIES]


def _benchmark_cells() -> list[Cell]:
    return [(CLEAN, CLEAN_SEVERITY), *_corruption_cells()]


def _matrix(masks: Mapping[Cell, np.ndarray], what: str, cells: Sequence[Cell] | None = None) -> np.ndarray:
    """images × cells correctness as float32 0/1; by default the 76 of the clean cell, then the 15 × 5 benchmark cells."""
    cells = _benchmark_cells() if cells is None else cells
    missing = [c for c in cells if c not in masks]
    if missing:
        shown = ", ".join(f"{c}/{s}" for c, s in missing[:6]) + (" ..." if len(missing) > 6 else "")
        raise ValueError(f"`{what}` lacks {len(missing)} cell(s) the aggregates need: {shown}")
    return np.stack([masks[c] for c in cells], axis=1).astype(np.float32)


def _reference_sums(reference) -> np.ndarray:
    """Σ_s E^ref per benchmark corruption, from 5 errors or an average each."""
    _require(reference, CORRUPTIONS, "`reference`")
    sums = []
    for name in CORRUPTIONS:
        total = _reference_sum(reference[name], f"`reference` {name}")
        if not total > 0:
            raise ValueError(f"`reference` {name}: its errors sum to {total:g}; mCE needs a positive denominator")
        sums.append(total)
    return np.array(sums)


def _weights(rng: np.random.Generator, images: int, count: int) -> np.ndarray:
    """count × images: how often each image is drawn in each replicate (a multinomial draw)."""
    draws = rng.integers(0, images, size=(count, images)) + images * np.arange(count)[:, None]
    return np.bincount(draws.ravel(), minlength=count * images).reshape(count, images).astype(np.float32)


def _errors(weights: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """replicates × columns errors of a correctness matrix under bootstrap weights."""
    return 1.0 - (weights @ matrix).astype(np.float64) / matrix.shape[0]  # counts: exact in float32 up to 2^24


def _severity_sums(errors: np.ndarray) -> np.ndarray:
    """replicates × 15: Σ_s E of each benchmark corruption, from replicates × 75 cell errors."""
    return errors.reshape(len(errors), len(CORRUPTIONS), len(SEVERITIES)).sum(axis=2)


def _run_metrics(errors: np.ndarray, reference_sums: np.ndarray | None) -> dict[str, np.ndarray]:
    """Per replicate, from replicates × 76 errors: clean error, unnormalised mean error and mCE."""
    out = {"clean_error": errors[:, 0], "unnormalized_mean_error": errors[:, 1:].mean(axis=1)}
    if reference_sums is not None:
        out["mce"] = (_severity_sums(errors[:, 1:]) / reference_sums).mean(axis=1)
    return out


def _deltas(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """B − A of each metric, and R_net of B with A as the baseline (percent)."""
    out = {key: b[key] - a[key] for key in a}
    with np.errstate(divide="ignore", invalid="ignore"):
        for key, mean_key in (("r_net_unnormalized", "unnormalized_mean_error"), ("r_net_mce", "mce")):
            if mean_key in out:
                out[key] = -100.0 * (out["clean_error"] + out[mean_key]) / (2.0 * a["clean_error"])
    return out


def _interval(estimate: float, samples: np.ndarray, level: float, jackknife: np.ndarray | None = None) -> Interval | None:
    """Percentile interval of ``samples``; BCa when ``jackknife`` (leave-one-image-out values) is given."""
    if not np.isfinite(estimate):
        return None
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return None
    tail = (1.0 - level) / 2.0
    levels = np.array([tail, 1.0 - tail])
    if jackknife is not None:
        levels = _bca_levels(estimate, samples, jackknife[np.isfinite(jackknife)], levels)
    low, high = np.quantile(samples, levels)
    # A constant difference (a run against itself) gives exactly that constant: a zero-width interval.
    # (+ 0.0 turns the -0.0 of a zero difference times -100 into 0.0.)
    return Interval(float(estimate) + 0.0, float(low) + 0.0, float(high) + 0.0)


def _bca_levels(estimate: float, samples: np.ndarray, jackknife: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Efron's bias-corrected and accelerated quantile levels (the percentile ones when undefined)."""
    from scipy.special import ndtr, ndtri

    below = (np.count_nonzero(samples < estimate) + 0.5 * np.count_nonzero(samples == estimate)) / samples.size
    influence = jackknife.mean() - jackknife
    spread = np.sum(influence**2)
    if not 0.0 < below < 1.0 or spread == 0.0:
        return levels
    bias = ndtri(below)
    acceleration = np.sum(influence**3) / (6.0 * spread**1.5)
    z = bias + ndtri(levels)
    return ndtr(bias + z / (1.0 - acceleration * z))


def _jackknife_errors(matrix: np.ndarray, start: int, stop: int) -> np.ndarray:
    """(stop − start) × columns errors with image i left out, for images start..stop−1."""
    images = matrix.shape[0]
    totals = matrix.sum(axis=0, dtype=np.float64)
    return 1.0 - (totals - matrix[start:stop].astype(np.float64)) / (images - 1)


def paired_bootstrap(
    a: CorrectByCell,
    b: CorrectByCell,
    *,
    reference: Mapping | None = None,
    reference_correct: CorrectByCell | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
    paired: bool = True,
    method: str = "percentile",
) -> dict[str, Interval | None]:
    """Bootstrap intervals of B − A over images: clean error, unnormalised mean error, mCE, R_net.

    Args:
        a, b: (corruption, severity) -> per-image correctness; both need the clean cell and
            the 15 × 5 benchmark cells, over the same images in the same order.
        reference: the mCE normaliser's errors held constant (corruption -> 5 errors or
            their average, e.g. AlexNet's published ImageNet-C errors).
        reference_correct: instead, a reference run's per-image correctness over the same
            images: its errors are resampled with the same draw as A and B. Only its 15 × 5
            benchmark cells are needed (and used); its clean cell may be missing.
        resamples: bootstrap replicates.
        seed: seed of the draws (the intervals are reproducible).
        level: coverage of the percentile intervals.
        paired: False resamples A's and B's images independently (and holds a reference
            run's errors constant): the unpaired interval of the same difference, for
            comparison only (always percentile).
        method: ``"percentile"`` or ``"bca"`` (bias-corrected and accelerated, the
            acceleration from leave-one-image-out values).

    Returns:
        :data:`DELTA_KEYS` -> :class:`Interval` or None (``mce`` and ``r_net_mce`` without a
        reference; the R_net values when A's clean error is 0). Errors are fractions, R_net
        (of B against A as the baseline) in percent.

    Raises:
        ValueError: for bad arguments, a cell missing, or runs over different numbers of images.
    """
    if reference is not None and reference_correct is not None:
        raise ValueError("give `reference` (constant errors) or `reference_correct` (a run), not both")
    if not (isinstance(resamples, int) and resamples >= 1):
        raise ValueError(f"`resamples` must be a positive integer, got {resamples!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"`level` must lie strictly between 0 and 1, got {level!r}")
    if method not in ("percentile", "bca"):
        raise ValueError(f"`method` must be 'percentile' or 'bca', got {method!r}")
    matrix_a, matrix_b = _matrix(_masks(a, "a"), "a"), _matrix(_masks(b, "b"), "b")
    matrix_r = None if reference_correct is None else _matrix(
        _masks(reference_correct, "reference_correct"), "reference_correct", _corruption_cells())
    images = matrix_a.shape[0]
    if matrix_b.shape[0] != images or (matrix_r is not None and matrix_r.shape[0] != images):
        raise ValueError("the runs cover different numbers of images: a paired comparison needs the same images")
    constant_sums = None if reference is None else _reference_sums(reference)
    if matrix_r is not None:
        # Its observed errors: the normaliser of the point estimate (and of unpaired replicates).
        constant_sums = _severity_sums(_errors(np.ones((1, images), np.float32), matrix_r))[0]
        if not np.all(constant_sums > 0):
            raise ValueError("`reference_correct`: a corruption has no reference errors; mCE needs a positive denominator")
    # A, B and the reference's 75 cells side by side: one product per replicate block when paired.
    columns = [matrix_a, matrix_b] + ([matrix_r] if matrix_r is not None else [])
    joint = np.concatenate(columns, axis=1)
    cells = matrix_a.shape[1]

    def deltas(errors_a, errors_b, errors_r):
        sums = constant_sums if errors_r is None else _severity_sums(errors_r)
        return _deltas(_run_metrics(errors_a, sums), _run_metrics(errors_b, sums))

    def split(errors):
        return errors[:, :cells], errors[:, cells:2 * cells], (errors[:, 2 * cells:] if matrix_r is not None else None)

    estimate = deltas(*split(_errors(np.ones((1, images), np.float32), joint)))
    rng = np.random.default_rng(seed)
    chunks: list[dict[str, np.ndarray]] = []
    for start in range(0, resamples, _CHUNK):
        count = min(_CHUNK, resamples - start)
        if paired:
            chunks.append(deltas(*split(_errors(_weights(rng, images, count), joint))))
        else:  # independent draws for A and B; a reference run's errors held at their observed values
            errors_a = _errors(_weights(rng, images, count), matrix_a)
            chunks.append(deltas(errors_a, _errors(_weights(rng, images, count), matrix_b), None))
    jackknife = None
    if method == "bca" and paired and images > 1:
        blocks = [deltas(*split(_jackknife_errors(joint, start, min(images, start + 4096))))
                  for start in range(0, images, 4096)]  # blocks of images bound the memory
        jackknife = {key: np.concatenate([block[key] for block in blocks]) for key in estimate}
    out: dict[str, Interval | None] = {key: None for key in DELTA_KEYS}
    for key, value in estimate.items():
        samples = np.concatenate([chunk[key] for chunk in chunks])
        out[key] = _interval(float(value[0]), samples, level, None if jackknife is None else jackknife[key])
    return out


def cell_tests(a: CorrectByCell, b: CorrectByCell, *, alpha: float = 0.05) -> tuple[CellTest, ...]:
    """Discordant counts, exact McNemar and Holm-adjusted p-values of every cell both runs have.

    Cells are ordered clean first, then as in :data:`~robustbench_pp.names.ALL_CORRUPTIONS`
    by severity; cells only one run has are skipped.

    Raises:
        ValueError: for ``alpha`` outside (0, 1) or cells over different numbers of images.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"`alpha` must lie strictly between 0 and 1, got {alpha!r}")
    masks_a, masks_b = _masks(a, "a"), _masks(b, "b")
    order = {name: index for index, name in enumerate([CLEAN, *ALL_CORRUPTIONS])}
    cells = sorted((c for c in masks_a if c in masks_b and c[0] in order), key=lambda c: (order[c[0]], c[1]))
    if not cells:
        return ()
    b_only, a_only = [], []
    for cell in cells:
        correct_a, correct_b = masks_a[cell], masks_b[cell]
        if correct_a.size != correct_b.size:
            raise ValueError(f"cell {cell[0]}/{cell[1]} covers {correct_a.size} images in `a` and {correct_b.size} in `b`")
        b_only.append(int(np.count_nonzero(correct_a & ~correct_b)))
        a_only.append(int(np.count_nonzero(~correct_a & correct_b)))
    p_values = np.atleast_1d(mcnemar_exact(np.array(b_only), np.array(a_only)))
    adjusted = holm_adjust(p_values)
    return tuple(
        CellTest(corruption=c, severity=s, delta=(bw - aw) / masks_a[(c, s)].size, b_only_wrong=bw, a_only_wrong=aw,
                 p_value=float(p), p_holm=float(ph), significant=bool(ph <= alpha))
        for (c, s), bw, aw, p, ph in zip(cells, b_only, a_only, p_values, adjusted)
    )


def compare_paired(
    a: CorrectByCell,
    b: CorrectByCell,
    *,
    reference: Mapping | None = None,
    reference_correct: CorrectByCell | None = None,
    alpha: float = 0.05,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> PairedComparison:
    """Everything paired about B − A: aggregate intervals at level 1 − alpha and per-cell tests.

    Args:
        a, b: (corruption, severity) -> per-image correctness over the same images.
        reference, reference_correct: the mCE normaliser (see :func:`paired_bootstrap`), or
            neither (then ``mce`` and ``r_net_mce`` are None).
        alpha: the family-wise level of the Holm-adjusted McNemar tests; intervals are at 1 − alpha.
        resamples, seed: of the bootstrap.

    Returns:
        A :class:`PairedComparison`. Aggregates are None (with a note) when a benchmark
        cell or the clean cell is missing from either run, or a benchmark cell from
        ``reference_correct`` (whose clean cell is not needed).

    Raises:
        ValueError: for bad arguments or cells over different numbers of images.
    """
    cells = cell_tests(a, b, alpha=alpha)
    notes = []
    deltas: dict[str, Interval | None] = {key: None for key in DELTA_KEYS}
    needed = set(_benchmark_cells())
    if not (needed <= set(a) and needed <= set(b)):
        notes.append("the aggregate differences need the clean cell and all 15 corruptions × 5 severities in every run")
    elif reference_correct is not None and not set(_corruption_cells()) <= set(reference_correct):
        notes.append("the aggregate differences need all 15 corruptions × 5 severities in the reference run")
    else:
        deltas = paired_bootstrap(a, b, reference=reference, reference_correct=reference_correct,
                                  resamples=resamples, seed=seed, level=1.0 - alpha)
    if reference is None and reference_correct is None:
        notes.append("no reference: mCE and R_net from mCE are not compared")
    if deltas["clean_error"] is not None and deltas["r_net_unnormalized"] is None:
        notes.append("A's clean error is 0: R_net against it is undefined")
    images = next(iter(_masks(a, "a").values())).size if a else 0
    return PairedComparison(images=images, deltas=deltas, cells=cells, level=1.0 - alpha, alpha=alpha,
                            resamples=resamples, seed=seed, reference_resampled=reference_correct is not None,
                            notes=tuple(notes))
