"""Robustness metrics: pure functions over error tables (no I/O, no torch).

Errors are fractions in [0, 1]; the net error reduction R_net is in percent, as in the
PushPull-Net paper. The reference model for normalisation is always an argument: AlexNet's
published ImageNet-C errors are provided as :data:`ALEXNET_IMAGENET_C`, and for any other
dataset the caller passes the errors of a reference model evaluated on the same data.
"""

from robustbench_pp.metrics.core import (
    ALEXNET_IMAGENET_C,
    ALEXNET_IMAGENET_CLEAN,
    R_NET_LABELS,
    ReferenceErrors,
    RobustnessSummary,
    corruption_error,
    mean_corruption_error,
    net_error_reduction,
    relative_corruption_error,
    relative_mean_corruption_error,
    summarize,
    unnormalized_mean_error,
)
from robustbench_pp.names import (
    ALL_CORRUPTIONS,
    CORRUPTION_GROUPS,
    CORRUPTIONS,
    EXTRA_CORRUPTIONS,
    SEVERITIES,
)

__all__ = [
    "ALEXNET_IMAGENET_C",
    "ALEXNET_IMAGENET_CLEAN",
    "ALL_CORRUPTIONS",
    "CORRUPTIONS",
    "CORRUPTION_GROUPS",
    "EXTRA_CORRUPTIONS",
    "R_NET_LABELS",
    "SEVERITIES",
    "ReferenceErrors",
    "RobustnessSummary",
    "corruption_error",
    "mean_corruption_error",
    "net_error_reduction",
    "relative_corruption_error",
    "relative_mean_corruption_error",
    "summarize",
    "unnormalized_mean_error",
]
