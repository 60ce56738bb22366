"""Runs repeated with several training seeds: their mean and spread, beside the within-run intervals.

A study trains each cell of its grid once per seed; each seed's run is evaluated into its own
results file, and the runs of one cell share a label (model and augmentation). With seed
grouping the leaderboard shows one row per label: the mean of E, mCE, relative mCE, the
unnormalised error and both R_net over the seeds, their sample standard deviation (n − 1)
across seeds, and the mean half-width of the runs' own 95% bootstrap intervals (what one run
cannot resolve; the seed spread adds what training randomness moves). R_net of each seed's
run is taken against the mean of the baseline's seeds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from robustbench_pp.metrics import net_error_reduction
from robustbench_pp.results import Reference, RunTable, mean_error_intervals, summarize_run

#: The numbers averaged over seeds, by their leaderboard names.
SEED_FIELDS = ("clean_error", "mce", "relative_mce", "unnormalized_mean_error", "r_net_unnormalized", "r_net_mce")


@dataclass(frozen=True)
class SeedGroup:
    """The runs of one label on one dataset (one per training seed)."""

    dataset: str
    label: str
    tables: tuple[RunTable, ...]


@dataclass(frozen=True)
class SeedStatistics:
    """Mean and spread over a group's runs.

    Attributes:
        runs: how many runs (seeds).
        mean: field -> mean over the runs (None where a run has no value).
        sd: field -> sample standard deviation across the runs (None for one run).
        within: field -> mean half-width of the runs' 95% bootstrap intervals
            (``unnormalized_mean_error``, and ``mce`` with a reference), where recorded.
    """

    runs: int
    mean: Mapping[str, float | None]
    sd: Mapping[str, float | None]
    within: Mapping[str, float | None]


def seed_groups(tables: Sequence[RunTable]) -> list[SeedGroup]:
    """Group runs by (dataset, label), in order of first appearance.

    Raises:
        ValueError: when two runs of a group share a checkpoint (the same model evaluated
            twice, not two seeds) or were evaluated on different images.
    """
    groups: dict[tuple[str, str], list[RunTable]] = {}
    for table in tables:
        groups.setdefault((table.dataset, table.label), []).append(table)
    out = []
    for (dataset, label), members in groups.items():
        checkpoints = [t.provenance.get("checkpoint_sha256") for t in members]
        if len(set(checkpoints)) != len(checkpoints):
            raise ValueError(f"`group_seeds`: {label} on {dataset} appears more than once with the same checkpoint: "
                             "the same run twice, not several training seeds")
        images = {(t.num_images, t.provenance.get("dataset_fingerprint")) for t in members}
        if len(images) > 1:
            raise ValueError(f"`group_seeds`: the runs of {label} on {dataset} were evaluated on different images")
        out.append(SeedGroup(dataset, label, tuple(members)))
    return out


def mean_and_sd(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n − 1); None when a value is missing (sd: or n < 2)."""
    if not values or any(v is None for v in values):
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def seed_statistics(group: SeedGroup, reference: Reference | None,
                    baseline: SeedGroup | None = None) -> SeedStatistics:
    """Mean, spread and within-run interval width of a group of complete runs.

    Args:
        group: the runs (all complete).
        reference: the mCE normaliser of their dataset, or None.
        baseline: the baseline's runs (complete); R_net is measured against their means.

    Raises:
        IncompleteRunError: when a run misses cells.
    """
    summaries = [summarize_run(table, reference) for table in group.tables]
    per_field = {name: [getattr(s, name) for s in summaries]
                 for name in ("clean_error", "mce", "relative_mce", "unnormalized_mean_error")}
    if baseline is not None:
        base = [summarize_run(table, reference) for table in baseline.tables]
        base_clean = mean_and_sd([s.clean_error for s in base])[0]
        for field, source in (("r_net_unnormalized", "unnormalized_mean_error"), ("r_net_mce", "mce")):
            base_value = mean_and_sd([getattr(s, source) for s in base])[0]
            per_field[field] = [None if base_value is None or getattr(s, source) is None
                                else net_error_reduction(s.clean_error, getattr(s, source), base_clean, base_value)
                                for s in summaries]
    means, sds = {}, {}
    for name, values in per_field.items():
        means[name], sds[name] = mean_and_sd(values)
    within = {}
    intervals = [mean_error_intervals(table, reference) for table in group.tables]
    for name in ("unnormalized_mean_error", "mce"):
        widths = [(i[name][1] - i[name][0]) / 2 if name in i else None for i in intervals]
        within[name] = mean_and_sd(widths)[0]
    return SeedStatistics(len(group.tables), means, sds, within)
