"""The fixed, class-balanced, seeded subsets behind the ``limit`` of generation and evaluation
and the ``limit_train`` of training: one definition, so a subset means the same images everywhere."""

from __future__ import annotations

import numpy as np


def balanced_subset(labels: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a seeded, class-balanced subset of ``limit`` items.

    Each of the C classes gets ``limit // C`` items (the first ``limit % C`` classes, in
    sorted label order, one more), drawn without replacement by
    ``numpy.random.default_rng(seed)``. ``limit`` None, or at least ``len(labels)``, means
    every item.

    Raises:
        ValueError: a non-positive limit, or a class with fewer items than its share.
    """
    labels = np.asarray(labels)
    if limit is None or limit >= len(labels):
        return np.arange(len(labels), dtype=np.int64)
    if limit < 1:
        raise ValueError(f"limit must be positive, got {limit}")
    classes = np.unique(labels)
    base, extra = divmod(limit, len(classes))
    rng = np.random.default_rng(seed)
    chosen = []
    for rank, label in enumerate(classes):
        members = np.flatnonzero(labels == label)
        take = base + (1 if rank < extra else 0)
        if take > len(members):
            raise ValueError(f"a balanced subset of {limit} needs {take} images of class {label}; "
                             f"the source has {len(members)}")
        chosen.append(rng.choice(members, size=take, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)
