"""ImageNet-style training data: class folders decoded in worker processes, uint8 to the device.

``<data_root>/<wnid>/<image>`` (the usual ``train`` folder of ImageNet-1k). ``imagenet100`` and
``imagenet200`` keep only the classes of the wnid lists shipped with the package (the same
lists as the ``imagenet100-c`` / ``imagenet200-c`` evaluation sets), and a class's label is its
wnid's position in the sorted list, so training and evaluation agree on the classes.

Each image is decoded by a :class:`FolderTrainSet` item in a DataLoader worker: the
augmentation of the recipe on the PIL image (AutoAugment with the ImageNet policy, AugMix),
``Resize(256)``, ``RandomCrop(224)`` and a horizontal flip, then uint8 C×H×W. The random draws
of image ``i`` in epoch ``e`` come from a generator seeded by ``(seed, e, i)`` only, so the
batches do not depend on the number of workers or processes. PRIME runs later, on the device,
per batch (:mod:`robustbench_pp.train.prime`).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from robustbench_pp.datasets import SourceError, get_dataset
from robustbench_pp.datasets.sources import list_imagenet_val
from robustbench_pp.train.data import FOLDER_DATASETS, NUM_CLASSES

RESIZE = 256  # shorter side before the random crop (the ImageNet-C framing)
CROP = 224


@dataclass(frozen=True)
class FolderListing:
    """The training images of a class-folder set, in canonical (wnid, file name) order."""

    root: Path
    paths: tuple[str, ...]
    labels: np.ndarray  # int64 class index per image
    class_names: tuple[str, ...]  # wnids in class-index order

    def fingerprint(self) -> str:
        """Short sha256 of the listing (relative paths and labels; file contents are not read)."""
        digest = hashlib.sha256()
        for path in self.paths:
            digest.update(os.path.relpath(path, self.root).encode() + b"\n")
        digest.update(self.labels.tobytes())
        return digest.hexdigest()[:16]


def list_training_folder(dataset: str, data_root: str | os.PathLike | None) -> FolderListing:
    """List the class folders of an ImageNet-style training set.

    Args:
        dataset: ``imagenet``, ``imagenet100`` or ``imagenet200``.
        data_root: the folder holding one sub-folder per wnid.

    Raises:
        ValueError: no ``data_root``, a missing folder, missing classes of the subset, or a
            full ImageNet folder without 1000 classes; the message names the folder.
    """
    if data_root is None:
        raise ValueError(f"{dataset} needs `data_root`: the training folder with one sub-folder per wnid")
    root = Path(data_root)
    if not root.is_dir():
        raise ValueError(f"training folder {root} (`data_root`) not found")
    wanted = get_dataset(FOLDER_DATASETS[dataset]).wnids()
    try:
        paths, wnids = list_imagenet_val(root, wnids=wanted)
    except SourceError as exc:
        raise ValueError(f"training folder {root} (`data_root`) for {dataset}: {exc}") from None
    class_names = wanted or tuple(sorted(set(wnids)))
    if len(class_names) != NUM_CLASSES[dataset]:
        raise ValueError(f"training folder {root} (`data_root`) has {len(class_names)} class folders; {dataset} "
                         f"needs {NUM_CLASSES[dataset]} (imagenet100 / imagenet200 keep only their classes)")
    index_of = {wnid: i for i, wnid in enumerate(class_names)}
    labels = np.array([index_of[w] for w in wnids], dtype=np.int64)
    return FolderListing(root, tuple(str(p) for p in paths), labels, class_names)


def image_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of image ``index``'s random draws in ``epoch`` (independent of workers and ranks)."""
    return (seed * 1_000_003 + epoch * 7919 + index * 104_729 + 23) % (2**63)


@dataclass
class FolderTrainSet:
    """Item i -> (uint8 V×3×224×224 views, label): decoded and augmented where it runs (a worker).

    Views: one, or ``[clean, augmix, augmix]`` for AugMix with its Jensen-Shannon loss.
    """

    paths: tuple[str, ...]
    labels: np.ndarray
    augment: str  # none | autoaugment | augmix | prime (PRIME: nothing here, it runs on the device)
    augmix_all_ops: bool
    augment_before_crop: bool
    jsd: bool
    seed: int
    epoch: int = 0

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        from PIL import Image

        generator = torch.Generator().manual_seed(image_seed(self.seed, self.epoch, index))
        try:
            with Image.open(self.paths[index]) as opened:
                image = opened.convert("RGB")
        except OSError as exc:
            raise SourceError(f"cannot decode training image {self.paths[index]}: {exc}") from exc
        # torchvision's AutoAugment and AugMix draw from torch's global generator: give them
        # this image's seed without disturbing the caller's stream (workers=0 runs here).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**62, (), generator=generator)))
            views = self._views(image, generator)
        stacked = np.stack([np.asarray(view, dtype=np.uint8) for view in views]).transpose(0, 3, 1, 2)
        return torch.from_numpy(np.ascontiguousarray(stacked)), int(self.labels[index])

    def _views(self, image, generator: torch.Generator) -> list:
        transform = self._transform()
        if transform is None:
            return [_resize_crop_flip(image, generator)]
        if self.augment == "augmix" and self.jsd:
            cropped = _resize_crop_flip(image, generator)
            return [cropped, transform(cropped), transform(cropped)]
        if self.augment_before_crop:
            return [_resize_crop_flip(transform(image), generator)]
        return [transform(_resize_crop_flip(image, generator))]

    def _transform(self):
        from torchvision.transforms import v2

        if self.augment == "autoaugment":
            return v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET)
        if self.augment == "augmix":
            return v2.AugMix(severity=3, mixture_width=3, chain_depth=-1, alpha=1.0, all_ops=self.augmix_all_ops)
        return None


def _resize_crop_flip(image, generator: torch.Generator):
    """torchvision's Resize(256) (shorter side, bilinear with antialiasing) + RandomCrop(224) + flip, on PIL."""
    from torchvision.transforms.v2 import functional as TF

    image = TF.resize(image, [RESIZE])
    width, height = image.size
    top = int(torch.randint(0, height - CROP + 1, (), generator=generator))
    left = int(torch.randint(0, width - CROP + 1, (), generator=generator))
    image = image.crop((left, top, left + CROP, top + CROP))
    if bool(torch.rand((), generator=generator) < 0.5):
        image = TF.horizontal_flip(image)
    return image


def worker_count(requested: int | None) -> int:
    """Decoding processes: the request, else one per CPU but one, at most 8."""
    if requested is not None:
        return requested
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def _init_worker(_worker_id: int) -> None:
    torch.set_num_threads(1)


def batch_loader(dataset: FolderTrainSet, batches: list[list[int]], workers: int, pin_memory: bool):
    """A DataLoader yielding ``(uint8 B×V×3×224×224, int64 B)`` for the given index lists, in order."""
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=batches, num_workers=workers, pin_memory=pin_memory,
        worker_init_fn=_init_worker if workers else None, prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )
