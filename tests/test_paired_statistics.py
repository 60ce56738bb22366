"""The statistics of the statistics: simulations with a known effect (issue 13, item 5).

Two models of per-image correctness with a difference known in closed form:

- *flip*: B is A with a known fraction f of its correct answers flipped to wrong, so the true
  difference of a cell's error is f · P(A right);
- *correlated*: a threshold model with a per-image difficulty z and a per-(image, cell)
  difficulty v that both models share, plus a little model-specific noise e. A gets an image
  right when a_c − z − v − e > 0, B when b_c − z − v − e' > 0, so
  P(right) = Φ(a_c / s) with s² = σ_z² + σ_v² + σ_e², and A and B agree on most images, as
  real models do.

Each simulated pair draws fresh images from the model; the 95% paired interval must cover the
true difference of the clean error and of the unnormalised mean error in 93–97% of the pairs,
and be narrower than the unpaired interval of the same difference on correlated data.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest, norm

from robustbench_pp.metrics.paired import cell_tests, holm_adjust, mcnemar_exact, paired_bootstrap
from robustbench_pp.names import CLEAN, CORRUPTIONS, SEVERITIES

CELLS = [(CLEAN, 0), *((c, s) for c in CORRUPTIONS for s in SEVERITIES)]
PAIRS = 1000  # simulated pairs per model (the issue asks for at least 400; 1000 keeps the coverage's SE at 0.7%)
IMAGES = 300
RESAMPLES = 500
SIGMA_Z, SIGMA_V, SIGMA_E = 1.0, 0.7, 0.4
SCALE = float(np.sqrt(SIGMA_Z**2 + SIGMA_V**2 + SIGMA_E**2))
# Thresholds: clean error ~ 20%, corrupted cells from ~24% to ~73% error (the quickstart's range).
THRESHOLDS = np.concatenate([[1.1], np.linspace(0.9, -0.8, len(CELLS) - 1)])
SHIFT = 0.08  # B's thresholds are lower by this much (B is slightly worse) in the correlated model
FLIP = 0.15  # fraction of A's correct answers flipped in the flip model


def _latent(rng, pairs):
    """Shared difficulty of every (pair, image, cell): z per image plus v per image and cell."""
    z = rng.normal(0, SIGMA_Z, (pairs, IMAGES, 1))
    return z + rng.normal(0, SIGMA_V, (pairs, IMAGES, len(CELLS)))


def _by_cell(matrix):
    return {cell: matrix[:, i] for i, cell in enumerate(CELLS)}


def _true_deltas(p_a, p_b):
    """(clean, unnormalised mean) differences of the error, B − A, from per-cell P(right)."""
    delta = (1 - p_b) - (1 - p_a)
    return delta[0], delta[1:].mean()


def _simulate(kind, seed):
    """Correctness of A and B for every pair (pairs × images × cells), and the true differences."""
    rng = np.random.default_rng(seed)
    shared = _latent(rng, PAIRS)
    p_a = norm.cdf(THRESHOLDS / SCALE)
    a = THRESHOLDS - shared - rng.normal(0, SIGMA_E, shared.shape) > 0
    if kind == "flip":
        b = a & (rng.random(a.shape) >= FLIP)
        p_b = p_a * (1 - FLIP)
    else:
        b = THRESHOLDS - SHIFT - shared - rng.normal(0, SIGMA_E, shared.shape) > 0
        p_b = norm.cdf((THRESHOLDS - SHIFT) / SCALE)
    return a, b, _true_deltas(p_a, p_b)


@pytest.fixture(scope="module", params=["flip", "correlated"])
def simulation(request):
    a, b, (true_clean, true_mean) = _simulate(request.param, seed=0)
    covered = np.zeros((PAIRS, 2), dtype=bool)
    widths = []
    for pair in range(PAIRS):
        deltas = paired_bootstrap(_by_cell(a[pair]), _by_cell(b[pair]), resamples=RESAMPLES, seed=pair)
        clean, mean = deltas["clean_error"], deltas["unnormalized_mean_error"]
        covered[pair] = (clean.low <= true_clean <= clean.high, mean.low <= true_mean <= mean.high)
        if pair < 80:  # the unpaired interval of the same difference, for the width ratio
            unpaired = paired_bootstrap(_by_cell(a[pair]), _by_cell(b[pair]), resamples=RESAMPLES, seed=pair,
                                        paired=False)["unnormalized_mean_error"]
            widths.append((mean.width, unpaired.width))
    coverage = covered.mean(axis=0)
    ratio = float(np.mean([w[0] for w in widths]) / np.mean([w[1] for w in widths]))
    print(f"\n{request.param}: {PAIRS} pairs of {IMAGES} images; coverage of the 95% paired interval: clean error "
          f"{100 * coverage[0]:.1f}%, unnormalised mean error {100 * coverage[1]:.1f}%; paired/unpaired width "
          f"of the mean error's interval {ratio:.3f}; true Δ mean error {100 * true_mean:.2f} pp")
    return request.param, coverage, ratio


def test_paired_intervals_cover_the_true_difference_93_to_97_percent(simulation):
    kind, coverage, _ = simulation
    assert 0.93 <= coverage[0] <= 0.97, f"{kind}: clean error coverage {coverage[0]:.3f}"
    assert 0.93 <= coverage[1] <= 0.97, f"{kind}: unnormalised mean error coverage {coverage[1]:.3f}"


def test_paired_intervals_are_narrower_than_unpaired_on_correlated_data(simulation):
    kind, _, ratio = simulation
    # The correlated model shares most of the difficulty between A and B: pairing removes it.
    assert ratio < (0.5 if kind == "correlated" else 0.9), f"{kind}: paired/unpaired width ratio {ratio:.3f}"


def test_mcnemar_p_values_equal_scipy_binomtest_exactly():
    cases = [(k, n - k) for n in range(0, 41) for k in range(n + 1)]
    cases += [(k, 1000 - k) for k in range(0, 1001, 7)] + [(4999, 5001), (120, 80), (0, 30000), (15000, 15001)]
    b_only, a_only = np.array([c[0] for c in cases]), np.array([c[1] for c in cases])
    ours = mcnemar_exact(b_only, a_only)
    expected = np.array([1.0 if b + a == 0 else binomtest(int(b), int(b + a), 0.5).pvalue for b, a in cases])
    assert np.array_equal(ours, expected)  # bit for bit, not approximately
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(7, 7) == 1.0
    assert isinstance(mcnemar_exact(3, 1), float)


def test_cell_tests_count_discordant_pairs_and_adjust_by_holm():
    rng = np.random.default_rng(0)
    a = {cell: rng.random(300) < 0.7 for cell in CELLS[:10]}
    b = {cell: np.where(rng.random(300) < 0.15, ~mask, mask) for cell, mask in a.items()}
    tests = cell_tests(a, b, alpha=0.05)
    assert [(t.corruption, t.severity) for t in tests] == CELLS[:10]
    for test in tests:
        correct_a, correct_b = a[(test.corruption, test.severity)], b[(test.corruption, test.severity)]
        assert test.b_only_wrong == np.sum(correct_a & ~correct_b) and test.a_only_wrong == np.sum(~correct_a & correct_b)
        assert test.delta == pytest.approx(np.mean(~correct_b) - np.mean(~correct_a))
        assert test.p_value == binomtest(test.b_only_wrong, test.b_only_wrong + test.a_only_wrong, 0.5).pvalue
    assert [t.p_holm for t in tests] == holm_adjust([t.p_value for t in tests]).tolist()
    assert all(t.significant == (t.p_holm <= 0.05) for t in tests)


def test_holm_adjustment_by_hand():
    # sorted: 0.01 (×4), 0.02 (×3), 0.03 (×2), 0.5 (×1); then monotone
    assert holm_adjust([0.03, 0.5, 0.01, 0.02]).tolist() == pytest.approx([0.06, 0.5, 0.04, 0.06])
    assert holm_adjust([0.9, 0.8]).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="p_values"):
        holm_adjust([0.1, 1.5])
