"""Training data: dataset readers, normalisation constants and class-balanced subsets.

Two kinds of training set: the 32 px sets read whole into memory (Fashion-MNIST, CIFAR-10;
:func:`load_dataset`) and ImageNet-style class folders decoded batch by batch in worker
processes (ImageNet-1k and the ImageNet-100/200 subsets; :mod:`robustbench_pp.train.folders`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from robustbench_pp.datasets.subsets import balanced_subset  # noqa: F401  (re-exported: train's API)
from robustbench_pp.preprocessing import FASHION_MNIST_MEAN, FASHION_MNIST_STD, SOURCE_NORMALIZATION  # noqa: F401

IN_MEMORY_DATASETS = ("fashion-mnist", "cifar10")
#: Class-folder training sets -> the evaluation spec whose classes (and validation geometry) they share.
FOLDER_DATASETS = {"imagenet": "imagenet-c", "imagenet100": "imagenet100-c", "imagenet200": "imagenet200-c"}
DATASETS = (*IN_MEMORY_DATASETS, *FOLDER_DATASETS)
NORMALISATION = {**{name: SOURCE_NORMALIZATION[name] for name in IN_MEMORY_DATASETS},
                 **{name: SOURCE_NORMALIZATION["imagenet"] for name in FOLDER_DATASETS}}
NUM_CLASSES = {"fashion-mnist": 10, "cifar10": 10, "imagenet": 1000, "imagenet100": 100, "imagenet200": 200}


def input_size_of(dataset: str) -> int:
    """The side of the training crops: 224 for the ImageNet class folders, else 32."""
    return 224 if dataset in FOLDER_DATASETS else 32


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
    if name in FOLDER_DATASETS:
        raise ValueError(f"{name} is read from class folders batch by batch (robustbench_pp.train.folders), "
                         "not into memory")
    raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def indices_fingerprint(indices: np.ndarray) -> str:
    """Short sha256 of a subset's indices (recorded in the checkpoint card)."""
    return hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()[:16]
