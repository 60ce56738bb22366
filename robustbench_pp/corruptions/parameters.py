"""Severity parameter rows of every corruption, keyed by preset: data, not code.

Each entry maps a corruption name to ``{preset: (row_severity_1, ..., row_severity_5)}``.
A row is what the kernel of that corruption receives as positional arguments (a bare number
is a one-element row). The numbers are those of ../shared/spec/protocol.md section 1.1; where
a preset fixes a size (fog's plasma map, frost's texture scale, elastic's pixel scale), that
size is part of the row so that one kernel serves every preset.
"""

from __future__ import annotations

import operator
from types import MappingProxyType

from robustbench_pp.names import ALL_CORRUPTIONS, SEVERITIES

#: The parameter sets: "cifar" made CIFAR-10-C (32 px), "imagenet" made ImageNet-C (224 px);
#: "pushpull-224" is what the PushPull-Net code's CIFAR-10-C-224 generator used: the imagenet
#: rows, except elastic_transform scaled by the image size 224 where ImageNet-C's code used 244.
PRESETS: tuple[str, ...] = ("cifar", "imagenet", "pushpull-224")
_ELASTIC_IMAGENET = ((2, 0.7, 0.1), (2, 0.08, 0.2), (0.05, 0.01, 0.02), (0.07, 0.01, 0.02), (0.12, 0.01, 0.02))


def _times(scale: float, rows):
    """Multiply every value of every row by ``scale`` (elastic's parameters are × image size)."""
    return tuple(tuple(scale * value for value in row) for row in rows)


def _with(rows, *extra):
    """Append the same trailing values (a preset-wide size) to every row."""
    return tuple(tuple(row) + tuple(extra) for row in rows)


_TABLE = {
    "gaussian_noise": {  # sigma
        "cifar": (0.04, 0.06, 0.08, 0.09, 0.10),
        "imagenet": (0.08, 0.12, 0.18, 0.26, 0.38),
    },
    "shot_noise": {  # photons per unit intensity
        "cifar": (500, 250, 100, 75, 50),
        "imagenet": (60, 25, 12, 5, 3),
    },
    "impulse_noise": {  # salt-and-pepper amount
        "cifar": (0.01, 0.02, 0.03, 0.05, 0.07),
        "imagenet": (0.03, 0.06, 0.09, 0.17, 0.27),
    },
    "defocus_blur": {  # disk radius, alias blur sigma
        "cifar": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
        "imagenet": ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
    },
    "glass_blur": {  # sigma, max delta, iterations
        "cifar": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
        "imagenet": ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
    },
    "motion_blur": {  # radius, sigma (angle ~ U(-45, 45) degrees)
        "cifar": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
        "imagenet": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
    },
    "zoom_blur": {  # zoom factors = np.arange(1, end, step)
        "cifar": ((1.06, 0.01), (1.11, 0.01), (1.16, 0.01), (1.21, 0.01), (1.26, 0.01)),
        "imagenet": ((1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03)),
    },
    "snow": {  # loc, scale, zoom, threshold, blur radius, blur sigma, blend
        "cifar": (
            (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
            (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
            (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
            (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
            (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
        ),
        "imagenet": (
            (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
            (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
            (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
            (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
            (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
        ),
    },
    "frost": {  # image coefficient, frost coefficient, texture scale
        "cifar": _with(((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)), 0.2),
        "imagenet": _with(((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)), 1.0),
    },
    "fog": {  # strength, wibble decay, plasma map size
        "cifar": _with(((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)), 32),
        "imagenet": _with(((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)), 256),
    },
    "brightness": {  # added to V in HSV
        "cifar": (0.05, 0.1, 0.15, 0.2, 0.3),
        "imagenet": (0.1, 0.2, 0.3, 0.4, 0.5),
    },
    "contrast": {  # factor about the per-channel image mean
        "cifar": (0.75, 0.5, 0.4, 0.3, 0.15),
        "imagenet": (0.4, 0.3, 0.2, 0.1, 0.05),
    },
    "elastic_transform": {  # alpha, sigma, affine jitter: in pixels (size x fraction)
        "cifar": _times(32, ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03))),
        # 244, not 224: what the released ImageNet-C used.
        "imagenet": _times(244, _ELASTIC_IMAGENET),
        # 224: the PushPull-Net code's CIFAR-10-C-224 (same fractions, × its image size).
        "pushpull-224": _times(224, _ELASTIC_IMAGENET),
    },
    "pixelate": {  # downscale factor (box filter down and up)
        "cifar": (0.95, 0.9, 0.85, 0.75, 0.65),
        "imagenet": (0.6, 0.5, 0.4, 0.3, 0.25),
    },
    "jpeg_compression": {  # JPEG quality
        "cifar": (80, 65, 58, 50, 40),
        "imagenet": (25, 18, 15, 10, 7),
    },
    "speckle_noise": {  # sigma of the multiplicative noise
        "cifar": (0.06, 0.1, 0.12, 0.16, 0.2),
        "imagenet": (0.15, 0.2, 0.35, 0.45, 0.6),
    },
    "gaussian_blur": {  # sigma
        "cifar": (0.4, 0.6, 0.7, 0.8, 1),
        "imagenet": (1, 2, 3, 4, 6),
    },
    "spatter": {  # loc, scale, sigma, threshold, intensity, mode (0 water, 1 mud)
        "cifar": (
            (0.62, 0.1, 0.7, 0.7, 0.5, 0),
            (0.65, 0.1, 0.8, 0.7, 0.5, 0),
            (0.65, 0.3, 1, 0.69, 0.5, 0),
            (0.65, 0.1, 0.7, 0.69, 0.6, 1),
            (0.65, 0.1, 0.5, 0.68, 0.6, 1),
        ),
        "imagenet": (
            (0.65, 0.3, 4, 0.69, 0.6, 0),
            (0.65, 0.3, 3, 0.68, 0.6, 0),
            (0.65, 0.3, 2, 0.68, 0.5, 0),
            (0.65, 0.3, 1, 0.65, 1.5, 1),
            (0.67, 0.4, 1, 0.65, 1.5, 1),
        ),
    },
    "saturate": {  # multiply S, add to S (HSV)
        "cifar": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
        "imagenet": ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)),
    },
}


def _as_row(value) -> tuple:
    return tuple(value) if isinstance(value, tuple) else (value,)


def _with_derived(by_preset: dict) -> dict:
    """A corruption's rows per preset; "pushpull-224" is the imagenet rows unless it has its own."""
    return {**by_preset, "pushpull-224": by_preset.get("pushpull-224", by_preset["imagenet"])}


#: name -> preset -> five rows (tuples), read-only.
PARAMETERS: MappingProxyType = MappingProxyType(
    {
        name: MappingProxyType({preset: tuple(_as_row(v) for v in rows) for preset, rows in _with_derived(by_preset).items()})
        for name, by_preset in _TABLE.items()
    }
)

assert tuple(PARAMETERS) == tuple(sorted(PARAMETERS, key=ALL_CORRUPTIONS.index)), "table out of canonical order"
assert set(PARAMETERS) == set(ALL_CORRUPTIONS), "every corruption needs a parameter row"


def check_name(name: str) -> None:
    """Raise ValueError naming the accepted corruptions (and a close match) for an unknown name."""
    if name in PARAMETERS:
        return
    import difflib

    close = difflib.get_close_matches(str(name), ALL_CORRUPTIONS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown corruption {name!r}.{hint} Accepted: {', '.join(ALL_CORRUPTIONS)}")


def check_preset(preset: str) -> None:
    """Raise ValueError listing the accepted presets for an unknown one."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; accepted presets: {', '.join(PRESETS)}")


def check_severity(severity) -> int:
    """Return ``severity`` as an int, or raise ValueError if it is not one of 1..5."""
    try:
        if isinstance(severity, (bool, float)):
            raise TypeError
        severity = operator.index(severity)
    except TypeError:
        raise ValueError(
            f"severity must be an integer in {SEVERITIES[0]}..{SEVERITIES[-1]}, got {severity!r}"
        ) from None
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be an integer in {SEVERITIES[0]}..{SEVERITIES[-1]}, got {severity}")
    return severity


def corruption_parameters(name: str, preset: str = "imagenet", severity: int | None = None):
    """Return the parameter rows of a corruption under a preset.

    Args:
        name: one of the 19 corruption names (robustbench_pp.names.ALL_CORRUPTIONS).
        preset: "cifar", "imagenet" or "pushpull-224".
        severity: 1..5 for one row; None for all five.

    Returns:
        A tuple of numbers (one severity) or a tuple of five such tuples.

    Raises:
        ValueError: unknown name, preset or severity.

    Example:
        >>> corruption_parameters("contrast", "cifar", 2)
        (0.5,)
    """
    check_name(name)
    check_preset(preset)
    rows = PARAMETERS[name][preset]
    if severity is None:
        return rows
    return rows[check_severity(severity) - 1]
