"""CE, mCE, relative mCE, unnormalised mean error and R_net (protocol section 2).

Notation: E_{s,c}^f is the top-1 error of model f on corruption c at severity s, E_clean^f
its clean error, r the reference model.

- CE_c = Σ_s E_{s,c}^f / Σ_s E_{s,c}^r;  mCE = mean over the 15 benchmark corruptions.
- relative CE_c = Σ_s (E_{s,c}^f − E_clean^f) / Σ_s (E_{s,c}^r − E_clean^r).
- unnormalised mean error = mean over c and s of E_{s,c}^f (what the CIFAR literature and
  the PushPull-Net table call "mCE").
- R_net = 100 · [(E_clean^b − E_clean^f) + (mCE^b − mCE^f)] / (2 · E_clean^b). The formula
  is reconstructed from the PushPull-Net table, whose every row it fits within rounding.

A reference entry is either the five per-severity errors or their average; with only an
average, Σ_s E^r is 5 × average, which gives the same CE.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Real

from robustbench_pp.names import CORRUPTIONS, SEVERITIES

#: AlexNet top-1 errors on ImageNet-C averaged over the five severities (the standard mCE
#: denominators), for all 19 corruptions.
ALEXNET_IMAGENET_C: Mapping[str, float] = {
    "gaussian_noise": 0.886428,
    "shot_noise": 0.894468,
    "impulse_noise": 0.922640,
    "defocus_blur": 0.819880,
    "glass_blur": 0.826268,
    "motion_blur": 0.785948,
    "zoom_blur": 0.798360,
    "snow": 0.866816,
    "frost": 0.826572,
    "fog": 0.819324,
    "brightness": 0.564592,
    "contrast": 0.853204,
    "elastic_transform": 0.646056,
    "pixelate": 0.717840,
    "jpeg_compression": 0.606500,
    "speckle_noise": 0.845388,
    "gaussian_blur": 0.787108,
    "spatter": 0.717512,
    "saturate": 0.658248,
}

#: AlexNet clean top-1 error on the ImageNet validation set.
ALEXNET_IMAGENET_CLEAN = 0.4348

ErrorRow = Sequence[float]
#: A normaliser's errors: corruption -> its 5 per-severity errors or their average. (The named
#: normaliser that carries these errors is :class:`robustbench_pp.results.Reference`.)
ReferenceErrors = Mapping[str, "ErrorRow | float"]


def _error(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"{what} must be a number, got {value!r}")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{what} is NaN")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{what} = {value} is outside [0, 1]; errors are fractions, not percentages")
    return value


def _severity_row(errors, what: str) -> tuple[float, ...]:
    if isinstance(errors, (str, bytes)) or not isinstance(errors, Sequence):
        raise ValueError(f"{what} must be a sequence of {len(SEVERITIES)} per-severity errors, got {errors!r}")
    if len(errors) != len(SEVERITIES):
        raise ValueError(
            f"{what} has {len(errors)} severities; expected {len(SEVERITIES)} "
            f"(severities {SEVERITIES[0]}..{SEVERITIES[-1]})"
        )
    return tuple(_error(e, f"{what} severity {s}") for s, e in zip(SEVERITIES, errors))


def _reference_sum(reference, what: str) -> float:
    """Σ_s E^r for one corruption, from 5 per-severity errors or one average."""
    if isinstance(reference, Real) and not isinstance(reference, bool):
        return len(SEVERITIES) * _error(reference, what)
    return sum(_severity_row(reference, what))


def _require(mapping: Mapping, corruptions: Sequence[str], what: str) -> None:
    if not isinstance(mapping, Mapping):
        raise ValueError(f"{what} must be a mapping corruption -> errors, got {type(mapping).__name__}")
    missing = [c for c in corruptions if c not in mapping]
    if missing:
        raise ValueError(f"{what} is missing {len(missing)} corruption(s): {', '.join(missing)}")


def _ratio(numerator: float, denominator: float, what: str) -> float:
    if denominator <= 0.0:
        raise ValueError(f"{what}: the reference's denominator is {denominator:g}; it must be positive")
    return numerator / denominator


def corruption_error(errors: ErrorRow, reference: "ErrorRow | float") -> float:
    """Corruption error CE of one corruption, normalised by a reference model.

    Args:
        errors: the model's top-1 errors at severities 1..5.
        reference: the reference's 5 per-severity errors, or their average.

    Returns:
        Σ_s E_s / Σ_s E_s^ref (1.0 means as bad as the reference).

    Raises:
        ValueError: on a wrong number of severities, NaN, an error outside [0, 1] or a
            reference summing to zero.

    Example:
        >>> corruption_error([0.1, 0.2, 0.3, 0.4, 0.5], 0.6)
        0.5
    """
    model_sum = sum(_severity_row(errors, "errors"))
    return _ratio(model_sum, _reference_sum(reference, "reference"), "corruption_error")


def relative_corruption_error(
    errors: ErrorRow, clean_error: float, reference: "ErrorRow | float", reference_clean_error: float
) -> float:
    """Relative CE: degradation from clean, normalised by the reference's degradation.

    Σ_s (E_s − E_clean) / Σ_s (E_s^ref − E_clean^ref). May be negative when a model does
    better under corruption than clean.
    """
    clean = _error(clean_error, "clean_error")
    reference_clean = _error(reference_clean_error, "reference_clean_error")
    numerator = sum(_severity_row(errors, "errors")) - len(SEVERITIES) * clean
    denominator = _reference_sum(reference, "reference") - len(SEVERITIES) * reference_clean
    return _ratio(numerator, denominator, "relative_corruption_error")


def mean_corruption_error(
    errors: Mapping[str, ErrorRow], reference: ReferenceErrors, corruptions: Sequence[str] = CORRUPTIONS
) -> float:
    """mCE: the mean of :func:`corruption_error` over the 15 benchmark corruptions.

    Args:
        errors: corruption -> the model's 5 per-severity errors (extra keys are ignored).
        reference: corruption -> the reference's 5 per-severity errors or their average.
        corruptions: which corruptions to average (default: the 15 of the benchmark).

    Raises:
        ValueError: naming each corruption missing from ``errors`` or ``reference``, or the
            corruption and severity of a bad value.
    """
    _require(errors, corruptions, "errors")
    _require(reference, corruptions, "reference")
    values = []
    for name in corruptions:
        try:
            values.append(corruption_error(errors[name], reference[name]))
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    return sum(values) / len(values)


def relative_mean_corruption_error(
    errors: Mapping[str, ErrorRow],
    clean_error: float,
    reference: ReferenceErrors,
    reference_clean_error: float,
    corruptions: Sequence[str] = CORRUPTIONS,
) -> float:
    """Relative mCE: the mean of :func:`relative_corruption_error` over the 15 corruptions."""
    _require(errors, corruptions, "errors")
    _require(reference, corruptions, "reference")
    values = []
    for name in corruptions:
        try:
            values.append(relative_corruption_error(errors[name], clean_error, reference[name], reference_clean_error))
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    return sum(values) / len(values)


def unnormalized_mean_error(errors: Mapping[str, ErrorRow], corruptions: Sequence[str] = CORRUPTIONS) -> float:
    """Mean top-1 error over the corruptions and 5 severities, without normalisation.

    This is what AugMix, PRIME and the PushPull-Net table call "mCE"; we report it under
    its own name.
    """
    _require(errors, corruptions, "errors")
    total = 0.0
    for name in corruptions:
        try:
            total += sum(_severity_row(errors[name], "errors"))
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    return total / (len(corruptions) * len(SEVERITIES))


def net_error_reduction(clean_error: float, mce: float, baseline_clean_error: float, baseline_mce: float) -> float:
    """Net error reduction R_net of a model against a baseline, in percent.

    R_net = 100 · [(E_clean^b − E_clean) + (mCE^b − mCE)] / (2 · E_clean^b). ``mce`` and
    ``baseline_mce`` must be of the same kind (both normalised or both unnormalised); the
    PushPull-Net table uses the unnormalised mean error. mCE values may exceed 1 (a model
    worse than AlexNet), so only their sign is checked.

    Example:
        >>> round(net_error_reduction(0.282, 0.645, 0.269, 0.667), 2)
        1.67
    """
    clean = _error(clean_error, "clean_error")
    baseline_clean = _error(baseline_clean_error, "baseline_clean_error")
    for value, what in ((mce, "mce"), (baseline_mce, "baseline_mce")):
        if isinstance(value, bool) or not isinstance(value, Real) or math.isnan(value) or value < 0:
            raise ValueError(f"{what} must be a non-negative number, got {value!r}")
    if baseline_clean == 0.0:
        raise ValueError("baseline_clean_error is 0: R_net is undefined for a perfect baseline")
    return 100.0 * ((baseline_clean - clean) + (float(baseline_mce) - float(mce))) / (2.0 * baseline_clean)


def _relative_or_note(errors, clean, reference, reference_clean_error) -> tuple[float | None, str | None]:
    """Relative mCE, or None and the reason when a corruption does not hurt the reference.

    Σ_s (E_ref − E_ref,clean) is not positive when the reference does as well under a mild
    corruption as on clean images (seen with small models on Fashion-MNIST): relative CE is
    undefined there, while every other number still stands.
    """
    reference_clean = _error(reference_clean_error, "reference_clean_error")
    undefined = [
        name for name in CORRUPTIONS
        if _reference_sum(reference[name], f"reference {name}") - len(SEVERITIES) * reference_clean <= 0.0
    ]
    if undefined:
        return None, (
            "relative mCE undefined: the reference is not hurt by " + ", ".join(undefined)
            + " (its summed errors do not exceed its clean error)"
        )
    return relative_mean_corruption_error(errors, clean, reference, reference_clean), None


#: Display labels of the two R_net values, the same in ``rbpp metrics``, the Markdown and
#: HTML leaderboard and the per-model pages (the JSON and CSV use the field names).
R_NET_LABELS: Mapping[str, str] = {
    "r_net_mce": "R_net from mCE (%)",
    "r_net_unnormalized": "R_net from unnormalised error (%)",
}


@dataclass(frozen=True)
class RobustnessSummary:
    """The headline numbers of one model on one dataset (None where not computable).

    Two R_net values against a baseline exist, named by what they are computed from:
    ``r_net_mce`` from the reference-normalised mCE (None without a reference, or when the
    baseline has no mCE) and ``r_net_unnormalized`` from the unnormalised mean error (the
    PushPull-Net table's reading).
    """

    clean_error: float
    unnormalized_mean_error: float
    mce: float | None = None
    relative_mce: float | None = None
    r_net_mce: float | None = None
    r_net_unnormalized: float | None = None
    reference: str | None = None
    note: str | None = None


def summarize(
    errors: Mapping[str, ErrorRow],
    clean_error: float,
    *,
    reference: ReferenceErrors | None = None,
    reference_clean_error: float | None = None,
    reference_name: str | None = None,
    baseline: RobustnessSummary | None = None,
) -> RobustnessSummary:
    """All headline metrics of a model at once.

    Args:
        errors: corruption -> 5 per-severity errors (all 15 benchmark corruptions).
        clean_error: the model's clean top-1 error.
        reference: the normaliser's errors (e.g. :data:`ALEXNET_IMAGENET_C`), or None when
            there is none: then mCE and relative mCE are None and ``note`` says why.
        reference_clean_error: the normaliser's clean error (needed for relative mCE).
        reference_name: a label recorded in the summary.
        baseline: the baseline's summary, for the two R_net values.

    Returns:
        A :class:`RobustnessSummary`.

    Raises:
        ValueError: on a missing corruption or a bad error value (named in the message).
    """
    clean = _error(clean_error, "clean_error")
    unnormalized = unnormalized_mean_error(errors)
    mce = relative = None
    note = None
    if reference is None:
        note = "no reference model given: mCE and relative mCE need one (AlexNet for ImageNet-C)"
    else:
        mce = mean_corruption_error(errors, reference)
        if reference_clean_error is not None:
            relative, note = _relative_or_note(errors, clean, reference, reference_clean_error)
    r_net_mce = r_net_unnormalized = None
    if baseline is not None:
        r_net_unnormalized = net_error_reduction(
            clean, unnormalized, baseline.clean_error, baseline.unnormalized_mean_error
        )
        if mce is not None and baseline.mce is not None:
            r_net_mce = net_error_reduction(clean, mce, baseline.clean_error, baseline.mce)
    return RobustnessSummary(
        clean_error=clean,
        unnormalized_mean_error=unnormalized,
        mce=mce,
        relative_mce=relative,
        r_net_mce=r_net_mce,
        r_net_unnormalized=r_net_unnormalized,
        reference=reference_name if reference is not None else None,
        note=note,
    )
