"""Runs whose records keep per-image correctness, over shared images (for paired statistics)."""

from __future__ import annotations

import dataclasses

import numpy as np

from _records import full_run
from robustbench_pp.results import encode_correct_mask


def with_bits(records, *, seed: int = 0, difficulty: np.ndarray | None = None):
    """``records`` with ``extra["correct_bits"]`` holding exactly ``n_correct`` correct images per cell.

    With ``difficulty`` (one score per image), each cell gets its easiest images right, so that
    two runs built over the same difficulty agree on most images (as real models do); without
    it the correct images are drawn at random per cell.
    """
    rng = np.random.default_rng(seed)
    out = []
    for record in records:
        order = np.argsort(difficulty + rng.normal(0, 0.3, record.n_total), kind="stable") if difficulty is not None \
            else rng.permutation(record.n_total)
        correct = np.zeros(record.n_total, dtype=bool)
        correct[order[: record.n_correct]] = True
        out.append(dataclasses.replace(record, extra={"correct_bits": encode_correct_mask(correct)}))
    return out


def flip_correct(records, fraction: float, *, seed: int = 1, clean: bool = False):
    """A copy with ``fraction`` of each corrupted cell's correct answers flipped to wrong.

    Returns ``(records, flips)`` where ``flips`` maps each cell to the number flipped.
    """
    rng = np.random.default_rng(seed)
    out, flips = [], {}
    for record in records:
        correct = record.correct_mask()
        if record.corruption == "clean" and not clean:
            out.append(record)
            flips[record.cell] = 0
            continue
        right = np.flatnonzero(correct)
        chosen = rng.choice(right, size=int(len(right) * fraction), replace=False)
        correct = correct.copy()
        correct[chosen] = False
        flips[record.cell] = len(chosen)
        out.append(dataclasses.replace(record, n_correct=int(correct.sum()),
                                       extra={**record.extra, "correct_bits": encode_correct_mask(correct)}))
    return out, flips


def run_with_bits(error_of=lambda c, s: 0.2 + 0.05 * s, clean_error=0.1, n_total=400, bits_seed=0, difficulty=None,
                  **provenance):
    """A complete run (clean + 75 cells) whose records keep per-image correctness.

    ``bits_seed`` draws which images are right; ``provenance`` overrides record fields and provenance keys.
    """
    return with_bits(full_run(error_of=error_of, clean_error=clean_error, n_total=n_total, **provenance),
                     seed=bits_seed, difficulty=difficulty)
