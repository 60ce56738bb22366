"""Builders of small real-format fixtures shared by the dataset and generation tests (no tests here).

Every fixture is written in the on-disk format the real data uses: Fashion-MNIST idx files
(synthetic images, so the tests run without Debian's package), a torchvision CIFAR pickle
folder, a CIFAR-10-C style npy set, an ImageNet-style folder of JPEGs.
"""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np
import pytest

from _fixtures import tiny_fashion_mnist
from robustbench_pp.datasets import get_dataset
from robustbench_pp.datasets.sources import load_fashion_mnist

WNIDS = ("n01440764", "n01443537", "n01484850")
# Test images of the synthetic Fashion-MNIST: more than the 300-image subsets the tests draw,
# so that a `limit` of 300 is a real subset.
FASHION_TEST_IMAGES = 400


@pytest.fixture(scope="module")
def fashion_root(tmp_path_factory) -> Path:
    """A synthetic Fashion-MNIST folder (idx files of 10 balanced classes), built once per module."""
    return tiny_fashion_mnist(tmp_path_factory.mktemp("fashion-mnist"), test=FASHION_TEST_IMAGES, train=20)


@pytest.fixture
def synthetic_fashion_mnist(fashion_root, monkeypatch) -> Path:
    """Point FASHION_MNIST_ROOT (the fashion-mnist-c clean source) at the synthetic folder."""
    monkeypatch.setenv("FASHION_MNIST_ROOT", str(fashion_root))
    return fashion_root


@pytest.fixture
def private_hash_cache(tmp_path, monkeypatch, synthetic_fashion_mnist):
    """Keep the sha256 cache of released files out of the user's ~/.cache; fashion-mnist-c's
    clean source is the synthetic Fashion-MNIST. Modules that generate or open data sets use it
    for every test: ``pytestmark = pytest.mark.usefixtures("private_hash_cache")``."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def fashion_images(root: Path, count: int = 300):
    """The first ``count`` test images of the Fashion-MNIST folder ``root`` as 32×32 RGB."""
    images, labels = load_fashion_mnist(root, split="test")
    return images[:count].copy(), labels[:count].copy()


def write_cifar_folder(root: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """Write torchvision's ``cifar-10-batches-py/test_batch`` pickle for the given images."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    entry = {"data": images.transpose(0, 3, 1, 2).reshape(len(images), -1), "labels": [int(x) for x in labels],
             "batch_label": "testing batch 1 of 1", "filenames": [f"img_{i}.png" for i in range(len(images))]}
    with open(folder / "test_batch", "wb") as handle:
        pickle.dump(entry, handle)
    return root


def tiny_cifar_spec(count: int):
    """cifar10-c reduced to ``count`` test images (the fixture's size)."""
    return dataclasses.replace(get_dataset("cifar10-c"), num_images=count)


def released_block(images: np.ndarray, corruption_index: int, severity: int) -> np.ndarray:
    """A recognisable stand-in for a corrupted block: every (corruption, severity) differs."""
    return (images.astype(np.int32) + 7 * corruption_index + 31 * severity).astype(np.uint8)


def write_released_npy(folder: Path, images: np.ndarray, labels: np.ndarray, corruptions) -> Path:
    """A CIFAR-10-C style folder: ``<corruption>.npy`` of 5 severity blocks and ``labels.npy``."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(corruptions):
        np.save(folder / f"{name}.npy", np.concatenate([released_block(images, index, s) for s in range(1, 6)]))
    np.save(folder / "labels.npy", np.tile(labels, 5).astype(np.uint8))  # the release stores small ints
    return folder


def photo_crops(count: int) -> list[np.ndarray]:
    """``count`` distinct textured photographs (scikit-image samples), cropped to varied non-square sizes."""
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    out = []
    for i in range(count):
        photo = photos[i % len(photos)]
        top, left = 11 * i, 17 * i
        height, width = 260 + 9 * i, 300 - 7 * i
        out.append(np.ascontiguousarray(photo[top : top + height, left : left + width]))
    return out


def write_imagenet_folder(root: Path, per_class: int = 2) -> Path:
    """An ImageNet-style validation folder: ``<wnid>/ILSVRC2012_val_XXXXXXXX.JPEG``."""
    from PIL import Image

    crops = photo_crops(len(WNIDS) * per_class)
    number = 1
    for c, wnid in enumerate(WNIDS):
        (root / wnid).mkdir(parents=True)
        for k in range(per_class):
            Image.fromarray(crops[c * per_class + k]).save(root / wnid / f"ILSVRC2012_val_{number:08d}.JPEG",
                                                           quality=95)
            number += 1
    return root


def tiny_imagenet_spec(per_class: int = 2):
    """imagenet-c reduced to the fixture's 3 classes."""
    return dataclasses.replace(get_dataset("imagenet-c"), num_classes=len(WNIDS), num_images=len(WNIDS) * per_class)
