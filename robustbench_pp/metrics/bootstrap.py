"""Bootstrap confidence intervals over images (pure numpy, no I/O).

Every cell of a run evaluates the same images, so a run's mean errors are resampled by
drawing images once per replicate and applying the same draw to every cell (cells are
correlated through their images; resampling them independently would understate the
spread). The reference model's errors are treated as constants.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from robustbench_pp.names import CORRUPTIONS, SEVERITIES

DEFAULT_RESAMPLES = 1000


def _resample_weights(num_images: int, resamples: int, seed: int) -> np.ndarray:
    """resamples × num_images matrix: how often each image is drawn in each replicate."""
    rng = np.random.default_rng(seed)
    weights = np.empty((resamples, num_images), dtype=np.float32)
    for row in range(resamples):
        weights[row] = np.bincount(rng.integers(0, num_images, num_images), minlength=num_images)
    return weights


def _interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(samples, [tail, 1.0 - tail])
    return float(low), float(high)


def bootstrap_error_ci(
    correct: Sequence[bool] | np.ndarray, *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of a top-1 error from per-image correctness.

    Args:
        correct: one bool per image (True = correctly classified).
        resamples: bootstrap replicates.
        seed: seed of the resampling (the interval is reproducible).
        level: coverage (0.95 for a 95% interval).

    Returns:
        ``(low, high)`` error bounds in [0, 1].
    """
    correct = np.asarray(correct, dtype=bool).reshape(-1)
    if correct.size == 0:
        raise ValueError("bootstrap_error_ci needs at least one image")
    rng = np.random.default_rng(seed)
    # Resampling n Bernoulli outcomes with replacement is a binomial draw of the same size.
    hits = rng.binomial(correct.size, correct.mean(), size=resamples)
    return _interval(1.0 - hits / correct.size, level)


def bootstrap_mean_errors_ci(
    correct: Mapping[str, Sequence[np.ndarray]],
    *,
    reference: Mapping[str, "Sequence[float] | float"] | None = None,
    corruptions: Sequence[str] = CORRUPTIONS,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """Intervals of the unnormalised mean error and (with a reference) of the mCE.

    Args:
        correct: corruption -> 5 bool arrays (severities 1..5), all over the same images in
            the same order.
        reference: corruption -> 5 errors or one average (for the mCE interval).

    Returns:
        ``{"unnormalized_mean_error": (low, high)}`` plus ``"mce"`` when a reference is given.
    """
    missing = [c for c in corruptions if c not in correct]
    if missing:
        raise ValueError(f"bootstrap needs every corruption; missing: {', '.join(missing)}")
    columns = []
    for name in corruptions:
        row = correct[name]
        if len(row) != len(SEVERITIES):
            raise ValueError(f"{name}: expected {len(SEVERITIES)} severities, got {len(row)}")
        columns.extend(np.asarray(mask, dtype=np.float32).reshape(-1) for mask in row)
    sizes = {c.size for c in columns}
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError(f"every cell must cover the same non-zero number of images, got sizes {sorted(sizes)}")
    matrix = np.stack(columns, axis=1)  # images × cells
    num_images = matrix.shape[0]
    weights = _resample_weights(num_images, resamples, seed)
    errors = 1.0 - (weights @ matrix) / num_images  # resamples × cells
    per_corruption = errors.reshape(resamples, len(corruptions), len(SEVERITIES))
    out = {"unnormalized_mean_error": _interval(per_corruption.mean(axis=(1, 2)), level)}
    if reference is not None:
        denominators = np.array(
            [
                len(SEVERITIES) * float(reference[c]) if np.isscalar(reference[c]) else float(np.sum(reference[c]))
                for c in corruptions
            ]
        )
        ce = per_corruption.sum(axis=2) / denominators
        out["mce"] = _interval(ce.mean(axis=1), level)
    return out
