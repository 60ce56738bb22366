"""Training data: dataset readers, normalisation constants and class-balanced subsets."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from robustbench_pp.models.registry import CIFAR10_MEAN, CIFAR10_STD  # PushPull-Net's CIFAR-10 values

# Computed once from the padded training set: load_fashion_mnist(split="train") (60000 images,
# zero-padded 28 -> 32, grey replicated to RGB), pixel values / 255, mean and std over every
# pixel of every image: 0.21900 and 0.33181 (float64). The padding lowers the mean from
# Fashion-MNIST's usual 28 px value (0.2860).
FASHION_MNIST_MEAN = (0.2190, 0.2190, 0.2190)
FASHION_MNIST_STD = (0.3318, 0.3318, 0.3318)

DATASETS = ("fashion-mnist", "cifar10")
NORMALISATION = {"fashion-mnist": (FASHION_MNIST_MEAN, FASHION_MNIST_STD), "cifar10": (CIFAR10_MEAN, CIFAR10_STD)}
NUM_CLASSES = {"fashion-mnist": 10, "cifar10": 10}


def load_dataset(name: str, split: str, *, data_root: str | os.PathLike | None = None, download: bool = False):
    """Read a training dataset from disk as uint8 N×32×32×3 images and int64 labels.

    Args:
        name: "fashion-mnist" or "cifar10".
        split: "train" or "test".
        data_root: Fashion-MNIST idx folder (default: $FASHION_MNIST_ROOT or Debian's
            location) or the folder holding ``cifar-10-batches-py``.
        download: CIFAR-10 only: fetch it with torchvision's downloader into ``data_root``
            first. Never done implicitly.

    Returns:
        ``(images, labels)`` numpy arrays.

    Raises:
        ValueError: unknown dataset, or CIFAR-10 without ``data_root``.
        robustbench_pp.datasets.sources.SourceError: files missing or malformed.
    """
    from robustbench_pp.datasets.sources import load_cifar, load_fashion_mnist

    if name == "fashion-mnist":
        if download:
            raise ValueError("--download applies to cifar10 only; Fashion-MNIST comes from Debian's dataset-fashion-mnist")
        return load_fashion_mnist(data_root, split=split, pad_to=32)
    if name == "cifar10":
        if data_root is None:
            raise ValueError("cifar10 needs --data-root (the folder holding cifar-10-batches-py); add --download to fetch it")
        if download:
            import torchvision

            torchvision.datasets.CIFAR10(str(data_root), train=split == "train", download=True)
        return load_cifar(Path(data_root), split=split, num_classes=10)
    raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def balanced_subset(labels: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """Indices of a seeded, class-balanced subset of ``limit`` examples (all when ``limit`` is None).

    Each class gets ``limit // K`` examples (the first ``limit % K`` classes one more), drawn
    without replacement by a generator seeded with ``seed``; indices are returned sorted.

    Raises:
        ValueError: when ``limit`` is not positive or a class has too few examples.
    """
    if limit is None or limit >= len(labels):
        return np.arange(len(labels))
    if limit <= 0:
        raise ValueError(f"--limit-train must be positive, got {limit}")
    classes = np.unique(labels)
    rng = np.random.default_rng(seed)
    picked = []
    for position, cls in enumerate(classes):
        want = limit // len(classes) + (1 if position < limit % len(classes) else 0)
        members = np.flatnonzero(labels == cls)
        if want > len(members):
            raise ValueError(f"class {cls} has {len(members)} examples, fewer than the {want} a balanced {limit} needs")
        picked.append(rng.choice(members, size=want, replace=False))
    return np.sort(np.concatenate(picked))


def indices_fingerprint(indices: np.ndarray) -> str:
    """Short sha256 of a subset's indices (recorded in the checkpoint card)."""
    return hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()[:16]
