"""Training data: dataset readers, normalisation constants and class-balanced subsets."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from robustbench_pp.datasets.subsets import balanced_subset  # noqa: F401  (re-exported: train's API)
from robustbench_pp.preprocessing import FASHION_MNIST_MEAN, FASHION_MNIST_STD, SOURCE_NORMALIZATION  # noqa: F401

DATASETS = ("fashion-mnist", "cifar10")
NORMALISATION = {name: SOURCE_NORMALIZATION[name] for name in DATASETS}
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
            raise ValueError("`download` applies to cifar10 only; Fashion-MNIST comes from Debian's dataset-fashion-mnist")
        return load_fashion_mnist(data_root, split=split, pad_to=32)
    if name == "cifar10":
        if data_root is None:
            raise ValueError("cifar10 needs `data_root` (the folder holding cifar-10-batches-py); add `download` to fetch it")
        if download:
            import torchvision

            torchvision.datasets.CIFAR10(str(data_root), train=split == "train", download=True)
        return load_cifar(Path(data_root), split=split, num_classes=10)
    raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def indices_fingerprint(indices: np.ndarray) -> str:
    """Short sha256 of a subset's indices (recorded in the checkpoint card)."""
    return hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()[:16]
