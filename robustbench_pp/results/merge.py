"""Combine the result files of sharded evaluations (``shard`` i/n each) into one run.

Shard i of n evaluated positions i, i+n, i+2n, ... of each cell's image list. Merging sums
the counts and calibration bins, re-interleaves the per-image correctness into the original
order and recomputes the bootstrap interval, so the merged records equal those of one
unsharded run. Shards that disagree on the model, checkpoint, data or settings, or a
missing or duplicated shard, are refused.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from robustbench_pp.metrics.bootstrap import bootstrap_error_ci
from robustbench_pp.results.schema import CellRecord, encode_correct_mask
from robustbench_pp.results.store import describe_mismatch, run_identity


class MergeError(ValueError):
    """The shard files cannot be combined; the message says which and why."""


def _shard_of(records: Sequence[CellRecord], name: str) -> tuple[int, int]:
    shards = {r.provenance.get("shard") for r in records}
    if len(shards) != 1 or None in shards:
        raise MergeError(f"{name}: not a shard file (records say shard={sorted(map(str, shards))}); "
                         "shard files hold one shard of an evaluation (`shard` i/n)")
    index, count = (int(x) for x in shards.pop().split("/"))
    return index, count


def merge_shards(shard_records: dict[str, Sequence[CellRecord]]) -> list[CellRecord]:
    """Merge shard runs (file name -> its records) into the records of one run.

    Raises:
        MergeError: disagreeing shards, missing/duplicate shard indices, or cells not
            present in every shard.
    """
    if not shard_records:
        raise MergeError("no shard files given")
    by_index: dict[int, tuple[str, Sequence[CellRecord]]] = {}
    count = None
    reference_name, reference_identity = None, None
    for name, records in shard_records.items():
        if not records:
            raise MergeError(f"{name}: holds no records")
        index, total = _shard_of(records, name)
        if count is None:
            count = total
        elif total != count:
            raise MergeError(f"{name} is shard {index}/{total} but other files are shards of {count}")
        if index in by_index:
            raise MergeError(f"{name} and {by_index[index][0]} are both shard {index}/{count}")
        identity = run_identity(records[0])
        if reference_identity is None:
            reference_name, reference_identity = name, identity
        else:
            differences = describe_mismatch(reference_identity, identity)
            if differences:
                raise MergeError(f"{name} disagrees with {reference_name}: " + "; ".join(differences))
        by_index[index] = (name, records)
    missing = sorted(set(range(count)) - set(by_index))
    if missing:
        raise MergeError(f"missing shard(s) {', '.join(f'{i}/{count}' for i in missing)}")

    cells = [{r.cell: r for r in by_index[i][1]} for i in range(count)]
    common = set(cells[0])
    for i, shard_cells in enumerate(cells):
        if set(shard_cells) != common:
            absent = sorted(common ^ set(shard_cells))
            raise MergeError(f"shard {i}/{count} ({by_index[i][0]}) differs in cells: {absent[:5]}")
    merged = []
    order = [r.cell for r in by_index[0][1]]
    for cell in order:
        parts = [shard_cells[cell] for shard_cells in cells]
        merged.append(_merge_cell(parts, count))
    return merged


def _merge_cell(parts: Sequence[CellRecord], count: int) -> CellRecord:
    first = parts[0]
    n_total = sum(p.n_total for p in parts)
    top5 = None if any(p.n_correct_top5 is None for p in parts) else sum(p.n_correct_top5 for p in parts)
    calibration = None
    if all(p.calibration is not None for p in parts):
        calibration = np.sum([np.asarray(p.calibration) for p in parts], axis=0).tolist()
    masks = [p.correct_mask() for p in parts]
    extra = {k: v for k, v in first.extra.items() if k != "correct_bits"}
    ci = None
    if all(m is not None for m in masks):
        correct = np.empty(n_total, dtype=bool)
        for index, mask in enumerate(masks):
            correct[index::count] = mask
        extra["correct_bits"] = encode_correct_mask(correct)
        ci = bootstrap_error_ci(correct, resamples=int(first.provenance.get("bootstrap_resamples") or 1000),
                                seed=int(first.provenance.get("bootstrap_seed") or 0))
    provenance = dict(first.provenance)
    provenance["shard"] = None
    provenance["merged_from"] = [f"{i}/{count}" for i in range(count)]
    return CellRecord(
        model=first.model, dataset=first.dataset, corruption=first.corruption, severity=first.severity,
        n_correct=sum(p.n_correct for p in parts), n_total=n_total, seconds=sum(p.seconds for p in parts),
        provenance=provenance, recipe=first.recipe, n_correct_top5=top5, calibration=calibration, ci95=ci,
        extra=extra,
    )
