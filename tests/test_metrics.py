"""Metrics: the spec's PushPull-Net table, AlexNet self-normalisation, hand cases, bad input."""

from __future__ import annotations

import itertools
import math

import pytest

from robustbench_pp import names
from robustbench_pp.metrics import (
    ALEXNET_IMAGENET_C,
    ALEXNET_IMAGENET_CLEAN,
    CORRUPTION_GROUPS,
    CORRUPTIONS,
    EXTRA_CORRUPTIONS,
    corruption_error,
    mean_corruption_error,
    net_error_reduction,
    relative_corruption_error,
    relative_mean_corruption_error,
    summarize,
    unnormalized_mean_error,
)

# The PushPull-Net table of protocol section 2: (E, unnormalised mCE, R_net).
PUSHPULL_TABLE = {
    "ResNet50 (baseline)": (0.269, 0.667, 0.00),
    "+ PushPull avg3 (PP3)": (0.282, 0.645, 1.67),
    "+ PushPull avg5 (PP5)": (0.276, 0.645, 2.79),
    "+ AutoAugment": (0.269, 0.630, 6.86),
    "+ AutoAugment + PP3": (0.283, 0.604, 9.05),
    "+ AugMix": (0.269, 0.612, 10.14),
    "+ AugMix + PP3": (0.287, 0.590, 10.97),
    "+ PRIME": (0.298, 0.522, 21.57),
    "+ PRIME + PP3": (0.306, 0.500, 24.31),
}


def test_names_are_defined_once_and_consistent():
    assert len(CORRUPTIONS) == 15 and len(set(CORRUPTIONS)) == 15
    assert len(EXTRA_CORRUPTIONS) == 4
    assert tuple(itertools.chain(*CORRUPTION_GROUPS.values())) == CORRUPTIONS
    assert set(ALEXNET_IMAGENET_C) == set(CORRUPTIONS) | set(EXTRA_CORRUPTIONS)
    assert names.group_of("fog") == "weather" and names.group_of("spatter") == "extra"
    with pytest.raises(ValueError, match="unknown corruption"):
        names.group_of("rain")


@pytest.mark.parametrize("variant", list(PUSHPULL_TABLE))
def test_pushpull_table_r_net_within_rounding_of_its_inputs(variant):
    clean, mce, reported = PUSHPULL_TABLE[variant]
    base_clean, base_mce, _ = PUSHPULL_TABLE["ResNet50 (baseline)"]
    # The table's inputs are rounded to 3 decimals: R_net must lie in the range spanned by
    # every input moved by up to half a unit of the last place (plus the table's own rounding).
    half = 0.0005
    candidates = [
        net_error_reduction(clean + a, mce + b, base_clean + c, base_mce + d)
        for a, b, c, d in itertools.product((-half, half), repeat=4)
    ]
    assert min(candidates) - 0.005 <= reported <= max(candidates) + 0.005
    # And the centre value is close: the reconstruction is not merely loose.
    assert net_error_reduction(clean, mce, base_clean, base_mce) == pytest.approx(reported, abs=0.2)


def test_r_net_hand_case_and_sign():
    assert net_error_reduction(0.2, 0.5, 0.25, 0.6) == pytest.approx(100 * (0.05 + 0.1) / 0.5)
    assert net_error_reduction(0.3, 0.7, 0.25, 0.6) < 0
    assert net_error_reduction(0.25, 0.6, 0.25, 0.6) == 0.0


def test_alexnet_normalised_by_itself_is_one():
    rows = {c: [e] * 5 for c, e in ALEXNET_IMAGENET_C.items()}
    assert mean_corruption_error(rows, ALEXNET_IMAGENET_C) == pytest.approx(1.0)
    assert mean_corruption_error(rows, rows) == pytest.approx(1.0)
    assert relative_mean_corruption_error(
        rows, ALEXNET_IMAGENET_CLEAN, ALEXNET_IMAGENET_C, ALEXNET_IMAGENET_CLEAN
    ) == pytest.approx(1.0)


def test_corruption_error_hand_cases():
    errors = [0.1, 0.2, 0.3, 0.4, 0.5]
    assert corruption_error(errors, [0.2, 0.4, 0.6, 0.8, 1.0]) == pytest.approx(0.5)
    # An average reference gives the same CE as its 5 values.
    assert corruption_error(errors, 0.6) == pytest.approx(corruption_error(errors, [0.6] * 5))
    assert relative_corruption_error(errors, 0.1, [0.5] * 5, 0.3) == pytest.approx((1.5 - 0.5) / (2.5 - 1.5))


def test_mean_and_unnormalised_hand_case():
    errors = {c: [0.1 * (i % 3 + 1)] * 5 for i, c in enumerate(CORRUPTIONS)}
    reference = {c: 0.5 for c in CORRUPTIONS}
    expected_ce = [0.1 * (i % 3 + 1) / 0.5 for i in range(15)]
    assert mean_corruption_error(errors, reference) == pytest.approx(sum(expected_ce) / 15)
    assert unnormalized_mean_error(errors) == pytest.approx(0.2)
    # Extras never enter mCE.
    with_extra = dict(errors, spatter=[1.0] * 5)
    assert mean_corruption_error(with_extra, dict(reference, spatter=0.1)) == mean_corruption_error(errors, reference)


def test_missing_corruption_is_named():
    errors = {c: [0.3] * 5 for c in CORRUPTIONS if c not in ("fog", "pixelate")}
    with pytest.raises(ValueError, match=r"errors is missing 2 corruption\(s\): fog, pixelate"):
        mean_corruption_error(errors, ALEXNET_IMAGENET_C)
    with pytest.raises(ValueError, match="reference is missing 1 corruption.*: snow"):
        full = {c: [0.3] * 5 for c in CORRUPTIONS}
        mean_corruption_error(full, {k: v for k, v in ALEXNET_IMAGENET_C.items() if k != "snow"})


@pytest.mark.parametrize(
    "row, message",
    [
        ([0.1, 0.2, 0.3, 0.4], "has 4 severities; expected 5"),
        ([0.1, 0.2, math.nan, 0.4, 0.5], "severity 3 is NaN"),
        ([0.1, 0.2, 0.3, 0.4, 45.0], "severity 5 = 45.0 is outside"),
        ([0.1, -0.2, 0.3, 0.4, 0.5], "severity 2 = -0.2 is outside"),
        ("abcde", "must be a sequence"),
    ],
)
def test_bad_rows_raise_clear_errors(row, message):
    errors = {c: [0.3] * 5 for c in CORRUPTIONS}
    errors["contrast"] = row
    with pytest.raises(ValueError, match=message) as info:
        mean_corruption_error(errors, ALEXNET_IMAGENET_C)
    assert str(info.value).startswith("contrast:")


def test_bad_scalars_raise():
    with pytest.raises(ValueError, match="NaN"):
        net_error_reduction(math.nan, 0.5, 0.3, 0.6)
    with pytest.raises(ValueError, match="outside"):
        summarize({c: [0.3] * 5 for c in CORRUPTIONS}, 1.5)
    with pytest.raises(ValueError, match="perfect baseline"):
        net_error_reduction(0.1, 0.5, 0.0, 0.6)
    with pytest.raises(ValueError, match="must be positive"):
        corruption_error([0.1] * 5, 0.0)


def test_summarize_with_and_without_reference():
    errors = {c: [e] * 5 for c, e in ALEXNET_IMAGENET_C.items()}
    base = summarize(errors, ALEXNET_IMAGENET_CLEAN)
    assert base.mce is None and "reference" in base.note
    full = summarize(
        errors,
        0.4,
        reference=ALEXNET_IMAGENET_C,
        reference_clean_error=ALEXNET_IMAGENET_CLEAN,
        reference_name="alexnet",
        baseline=base,
    )
    assert full.mce == pytest.approx(1.0)
    assert full.reference == "alexnet"
    # The baseline has no normalised mCE: the R_net from mCE is undefined (it no longer falls
    # back to the other number under the same name); the R_net from the unnormalised error stands.
    assert full.r_net_mce is None
    assert full.r_net_unnormalized == pytest.approx(100 * (ALEXNET_IMAGENET_CLEAN - 0.4) / (2 * ALEXNET_IMAGENET_CLEAN))


def test_both_r_net_values_are_named_by_what_they_are_computed_from():
    errors = {c: [e] * 5 for c, e in ALEXNET_IMAGENET_C.items()}
    reference = dict(reference=ALEXNET_IMAGENET_C, reference_clean_error=ALEXNET_IMAGENET_CLEAN)
    base = summarize(errors, ALEXNET_IMAGENET_CLEAN, **reference)
    better = summarize({c: [e / 2] * 5 for c, e in ALEXNET_IMAGENET_C.items()}, 0.4, **reference, baseline=base)
    assert better.mce == pytest.approx(0.5) and base.mce == pytest.approx(1.0)
    assert better.r_net_mce == pytest.approx(net_error_reduction(0.4, 0.5, ALEXNET_IMAGENET_CLEAN, 1.0))
    assert better.r_net_unnormalized == pytest.approx(net_error_reduction(
        0.4, better.unnormalized_mean_error, ALEXNET_IMAGENET_CLEAN, base.unnormalized_mean_error))
    assert better.r_net_mce != pytest.approx(better.r_net_unnormalized)


def test_relative_mce_is_left_out_with_a_reason_when_the_reference_is_not_hurt():
    errors = {c: [0.3] * 5 for c in CORRUPTIONS}
    reference = {c: [0.5] * 5 for c in CORRUPTIONS}
    reference["zoom_blur"] = [0.2, 0.2, 0.2, 0.2, 0.21]  # sums to 1.01 <= 5 x clean 0.21
    summary = summarize(errors, 0.1, reference=reference, reference_clean_error=0.21)
    assert summary.relative_mce is None
    assert summary.mce == pytest.approx((14 * 0.6 + 1.5 / 1.01) / 15)
    assert "relative mCE undefined" in summary.note and "zoom_blur" in summary.note
    with pytest.raises(ValueError, match="zoom_blur: relative_corruption_error"):
        relative_mean_corruption_error(errors, 0.1, reference, 0.21)
