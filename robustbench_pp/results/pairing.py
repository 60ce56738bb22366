"""Two runs over the same images, lined up for paired statistics (``rbpp compare``, ``check --paired``).

A paired comparison needs the very same images in the same order in both runs: the same
dataset, data (fingerprint), corruption preset and seed, image subset, protocol and number of
images, and per-image correctness (``extra["correct_bits"]``) in every cell compared.
:func:`pairing_problems` says what differs; :func:`compare_runs_paired` lines the bits up
and hands them to :func:`robustbench_pp.metrics.paired.compare_paired`;
:func:`compare_files` is the whole of ``rbpp compare``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from robustbench_pp.metrics.paired import DEFAULT_RESAMPLES, CellTest, Interval, PairedComparison, compare_paired
from robustbench_pp.names import CORRUPTIONS, DEFAULT_PROTOCOL, SEVERITIES
from robustbench_pp.results.references import ALEXNET, Reference, choose_references, reference_from_run
from robustbench_pp.results.tables import RunTable, load_run

class IncomparableRunsError(ValueError):
    """Two runs do not cover the same images; ``reasons`` lists what differs."""

    def __init__(self, reasons: list[str], what: str = "the runs"):
        self.reasons = tuple(reasons)
        super().__init__(f"{what} cannot be compared image by image: " + "; ".join(reasons))


def protocol(table: RunTable) -> str:
    """The evaluation protocol of a run (``imagenet-c`` when its records predate protocols)."""
    settings = table.provenance.get("settings")
    value = table.provenance.get("protocol")
    if value is None and isinstance(settings, Mapping):
        value = settings.get("protocol")
    return value or DEFAULT_PROTOCOL


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def correct_by_cell(table: RunTable) -> dict[tuple[str, int], np.ndarray]:
    """(corruption, severity) -> per-image correctness of every cell that keeps it."""
    masks = {record.cell: record.correct_mask() for record in table.records}
    return {cell: mask for cell, mask in masks.items() if mask is not None}


def pairing_problems(a: RunTable, b: RunTable, names: tuple[str, str] = ("A", "B")) -> list[str]:
    """Why two runs cannot be compared image by image (empty when they can).

    Compared: dataset, dataset fingerprint, preset, seed, subset, protocol, images per cell,
    and, in the cells both runs have, the number of images and the per-image correctness.
    """
    return _image_problems(a, b, names) or _bit_problems(a, b, names)


def _image_problems(a: RunTable, b: RunTable, names: tuple[str, str]) -> list[str]:
    """What makes the images of two runs differ (data, preset, seed, subset, protocol, counts)."""
    first, second = names
    checks = [
        ("dataset", a.dataset, b.dataset),
        ("dataset fingerprint", a.provenance.get("dataset_fingerprint"), b.provenance.get("dataset_fingerprint")),
        ("preset", a.provenance.get("preset"), b.provenance.get("preset")),
        ("seed", a.provenance.get("seed"), b.provenance.get("seed")),
        ("subset", _canonical(a.subset), _canonical(b.subset)),
        ("protocol", protocol(a), protocol(b)),
        ("images per cell", a.num_images, b.num_images),
    ]
    reasons = [f"{what}: {x} ({first}) vs {y} ({second})" for what, x, y in checks if x != y]
    if reasons:
        return reasons
    cells_a, cells_b = {r.cell: r for r in a.records}, {r.cell: r for r in b.records}
    common = [cell for cell in cells_a if cell in cells_b]
    if not common:
        return [f"{first} and {second} have no cell in common"]
    sizes = [f"{c}/{s}" for c, s in common if cells_a[(c, s)].n_total != cells_b[(c, s)].n_total]
    return [f"cells with different numbers of images: {', '.join(sizes[:6])}"] if sizes else []


def _bit_problems(a: RunTable, b: RunTable, names: tuple[str, str]) -> list[str]:
    """Which run lacks per-image correctness in cells both runs have."""
    cells_a, cells_b = {r.cell: r for r in a.records}, {r.cell: r for r in b.records}
    common = [cell for cell in cells_a if cell in cells_b]
    reasons = []
    for name, cells in zip(names, (cells_a, cells_b)):
        lacking = [f"{c}/{s}" for c, s in common if cells[(c, s)].correct_mask() is None]
        if lacking:
            reasons.append(f"{name} keeps no per-image correctness in {len(lacking)} cell(s) "
                           f"(e.g. {', '.join(lacking[:3])}): re-evaluate it with this version of rbpp")
    return reasons


@dataclass(frozen=True)
class RunComparison:
    """B − A of two runs over the same images (see :class:`~robustbench_pp.metrics.paired.PairedComparison`).

    Attributes:
        a, b: the runs' labels.
        dataset: their dataset.
        reference: the mCE normaliser's name, or None.
        paired: the statistics.
        a_file, b_file: the results files, when read from files.
    """

    a: str
    b: str
    dataset: str
    reference: str | None
    paired: PairedComparison
    a_file: str | None = None
    b_file: str | None = None

    @property
    def significant_cells(self) -> tuple[CellTest, ...]:
        return tuple(cell for cell in self.paired.cells if cell.significant)

    def to_json(self) -> dict:
        """The JSON of ``rbpp compare --json``: differences B − A in percentage points (R_net in %)."""

        def interval(value: Interval | None, scale: float) -> dict | None:
            if value is None:
                return None
            return {"estimate": scale * value.estimate, "low": scale * value.low, "high": scale * value.high,
                    "excludes_zero": value.excludes_zero}

        deltas = self.paired.deltas
        delta = {key: interval(deltas[key], 100.0) for key in ("clean_error", "unnormalized_mean_error", "mce")}
        delta["r_net"] = interval(deltas["r_net_unnormalized"], 1.0)
        delta["r_net_unnormalized"] = delta["r_net"]
        delta["r_net_mce"] = interval(deltas["r_net_mce"], 1.0)
        return {
            "a": self.a,
            "b": self.b,
            "a_file": self.a_file,
            "b_file": self.b_file,
            "dataset": self.dataset,
            "images": self.paired.images,
            "units": ("differences B − A in percentage points; r_net is R_net (%) of B with A as the baseline, from "
                      "the unnormalised mean error (as r_net_unnormalized), r_net_mce from the mCE"),
            "level": self.paired.level,
            "alpha": self.paired.alpha,
            "resamples": self.paired.resamples,
            "seed": self.paired.seed,
            "reference": self.reference,
            "reference_resampled": self.paired.reference_resampled,
            "delta": delta,
            "cells": [
                {"corruption": c.corruption, "severity": c.severity, "delta": 100.0 * c.delta,
                 "b_only_wrong": c.b_only_wrong, "a_only_wrong": c.a_only_wrong, "p_value": c.p_value,
                 "p_holm": c.p_holm, "significant": c.significant}
                for c in self.paired.cells
            ],
            "notes": list(self.paired.notes),
        }


def compare_runs_paired(
    a: RunTable,
    b: RunTable,
    *,
    reference: Reference | None = None,
    reference_run: RunTable | None = None,
    alpha: float = 0.05,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> RunComparison:
    """Paired statistics of B − A over the images both runs evaluated.

    Args:
        a, b: the runs (A is the baseline of R_net).
        reference: an mCE normaliser held constant (AlexNet's published errors).
        reference_run: instead, a reference run over the same images; its errors are
            resampled with A's and B's (when it keeps per-image correctness; otherwise its
            errors are held constant and a note says so).
        alpha, resamples, seed: see :func:`~robustbench_pp.metrics.paired.compare_paired`.

    Raises:
        IncomparableRunsError: when the runs (or the reference run) cover other images.
        ValueError: for bad ``alpha`` or ``resamples``.
    """
    reasons = pairing_problems(a, b)
    if reasons:
        raise IncomparableRunsError(reasons, f"{a.label} and {b.label}")
    notes = []
    reference_correct = None
    name = reference.name if reference is not None else None
    if reference_run is not None:
        name = f"{reference_run.label} on {reference_run.dataset}"
        if reference_run.dataset != a.dataset:
            raise IncomparableRunsError([f"dataset: {reference_run.dataset} (the reference) vs {a.dataset} (A)"],
                                        f"the reference {reference_run.label}")
        problems = _image_problems(a, reference_run, ("A", "the reference"))
        masks = correct_by_cell(reference_run)
        needed = {(c, s) for c in CORRUPTIONS for s in SEVERITIES}
        if problems or not needed <= set(masks):
            # A normaliser on other images (or without per-image results) still normalises; it
            # just cannot be resampled with A and B.
            reference = reference_from_run(reference_run)
            why = "; ".join(problems) if problems else "it keeps no per-image correctness"
            notes.append(f"the reference's errors are held constant, not resampled with the images ({why})")
        else:
            reference, reference_correct = None, masks
    statistics = compare_paired(correct_by_cell(a), correct_by_cell(b),
                                reference=reference.errors if reference is not None else None,
                                reference_correct=reference_correct, alpha=alpha, resamples=resamples, seed=seed)
    if notes:
        statistics = replace(statistics, notes=statistics.notes + tuple(notes))
    return RunComparison(a=a.label, b=b.label, dataset=a.dataset, reference=name, paired=statistics)


def compare_files(
    path_a: str | os.PathLike,
    path_b: str | os.PathLike,
    *,
    reference: str | None = None,
    alpha: float = 0.05,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> RunComparison:
    """``rbpp compare``: read two results files and compare them image by image.

    Args:
        path_a, path_b: the results files of A and B.
        reference: ``"alexnet"`` (ImageNet-C's published errors, the default there) or the
            results file of a reference model on the same images (its errors are resampled
            with A's and B's); None: the dataset's default (none outside ImageNet-C).
        alpha, resamples, seed: see :func:`compare_runs_paired`.

    Raises:
        ResultsFileError: an unreadable or malformed file.
        IncomparableRunsError: the runs cover other images (the message says what differs).
        ValueError: a reference that does not apply, bad ``alpha`` or ``resamples``.
    """
    a, b = load_run(path_a), load_run(path_b)
    reference_run = constant = None
    if reference is not None and reference != ALEXNET:
        reference_run = load_run(reference)
    elif a.dataset == b.dataset:
        constant = choose_references([reference] if reference else [], {a.dataset})[a.dataset]
    comparison = compare_runs_paired(a, b, reference=constant, reference_run=reference_run,
                                     alpha=alpha, resamples=resamples, seed=seed)
    return replace(comparison, a_file=str(path_a), b_file=str(path_b))
