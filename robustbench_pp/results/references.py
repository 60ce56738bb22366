"""The normaliser of mCE: AlexNet's published ImageNet-C errors, or a run on the same data.

The protocol's rule: on ImageNet-C the reference is AlexNet's published errors; on any other
dataset it is a reference model (e.g. a CIFAR-size AlexNet) evaluated by this tool on the same
data. :func:`choose_references` is the one place that turns a user's choices into the
reference of each dataset (``rbpp metrics``, ``rbpp evaluate`` and ``rbpp report`` all use it).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from robustbench_pp.metrics import ALEXNET_IMAGENET_C, ALEXNET_IMAGENET_CLEAN
from robustbench_pp.results.tables import IncompleteRunError, RunTable, load_run, missing_cells_message

#: The choice that names AlexNet's published ImageNet-C errors (anything else is a results file).
ALEXNET = "alexnet"
IMAGENET_C = "imagenet-c"


@dataclass(frozen=True)
class Reference:
    """A named normaliser: per-corruption errors (5 values or an average) and a clean error."""

    name: str
    errors: Mapping[str, "tuple[float, ...] | float"]
    clean_error: float


ALEXNET_REFERENCE = Reference("alexnet (published ImageNet-C)", ALEXNET_IMAGENET_C, ALEXNET_IMAGENET_CLEAN)


def is_imagenet_c(dataset: str) -> bool:
    """Whether a dataset is ImageNet-C proper (1000 classes), where AlexNet's errors apply."""
    return dataset == IMAGENET_C


def reference_from_run(table: RunTable) -> Reference:
    """Use a run evaluated by this tool as the normaliser (e.g. a CIFAR-size AlexNet).

    Raises:
        IncompleteRunError: when the run lacks the clean cell or any benchmark cell.
    """
    if not table.complete:
        raise IncompleteRunError(missing_cells_message(table, "as a reference"))
    return Reference(f"{table.label} on {table.dataset}", dict(table.errors), table.clean_error)


def default_reference(dataset: str) -> Reference | None:
    """The reference a dataset has without a choice: AlexNet's on ImageNet-C, else none."""
    return ALEXNET_REFERENCE if is_imagenet_c(dataset) else None


def no_reference_note(dataset: str) -> str:
    """Why mCE is empty on a dataset without a reference, and how to get one."""
    return (
        f"no reference for {dataset}: there is no reference model to normalise mCE and relative mCE by "
        "(AlexNet's published errors apply to ImageNet-C only); give the results file of a reference model "
        "evaluated on the same data (e.g. a CIFAR-size AlexNet) as the reference"
    )


def _chosen(choice: str, datasets: Collection[str]) -> tuple[str, Reference]:
    """(dataset, reference) of one choice, checked against the datasets it is meant for."""
    if choice == ALEXNET:
        if not any(is_imagenet_c(d) for d in datasets):
            raise ValueError(
                f"`reference` alexnet uses the published ImageNet-C errors, which do not apply to "
                f"{', '.join(sorted(datasets))}; pass a results file of a reference model evaluated on the same data"
            )
        return IMAGENET_C, ALEXNET_REFERENCE
    table = load_run(choice)
    if table.dataset not in datasets:
        raise ValueError(f"`reference` {choice} is on {table.dataset}, not {', '.join(sorted(datasets))}")
    try:
        return table.dataset, reference_from_run(table)
    except IncompleteRunError as exc:
        raise IncompleteRunError(f"`reference` {choice}: {exc}") from None


def choose_references(choices: Iterable[str], datasets: Collection[str]) -> dict[str, Reference | None]:
    """The mCE normaliser of each dataset, from the user's choices and the protocol's defaults.

    Args:
        choices: each ``"alexnet"`` (ImageNet-C's published errors) or the results file of a
            reference model; at most one per dataset. None given: the defaults apply.
        datasets: the datasets of the runs to normalise.

    Returns:
        dataset -> :class:`Reference`, or None where there is none (see :func:`no_reference_note`).

    Raises:
        ValueError: a choice that applies to none of ``datasets``, two choices for one dataset,
            an unreadable (:class:`~robustbench_pp.results.ResultsFileError`) or incomplete
            (:class:`~robustbench_pp.results.IncompleteRunError`) reference run.

    Example:
        >>> choose_references([], {"imagenet-c"})["imagenet-c"].name
        'alexnet (published ImageNet-C)'
    """
    chosen: dict[str, Reference] = {}
    for choice in choices:
        dataset, reference = _chosen(choice, datasets)
        if dataset in chosen:
            raise ValueError(f"two `reference` choices apply to {dataset}; give one per dataset")
        chosen[dataset] = reference
    return {dataset: chosen.get(dataset, default_reference(dataset)) for dataset in datasets}
