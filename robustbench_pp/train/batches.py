"""The batches of a training run: what each optimiser step and each validation sees.

Two sources, one interface (:class:`InMemoryData`, :class:`FolderData`):

- ``epoch(epoch, ranks, device)`` yields, per optimiser step, the augmented float views of
  this rank's share of the global batch (``[x]``, or ``[clean, aug1, aug2]`` with the
  Jensen-Shannon loss), its labels and the size of the global batch;
- ``validation(device)`` yields uint8 batches and labels of the per-epoch test set, which
  the loop feeds through :func:`robustbench_pp.preprocessing.normalize` exactly as the
  evaluation engine does (the ImageNet validation images come from the evaluation sets'
  clean geometry: Resize(256) + CenterCrop(224)).

Randomness: the epoch's order and the 32 px sets' augmentations come from torch's global
generator re-seeded from ``(seed, epoch)``, identically on every rank (each rank augments the
whole global batch and keeps its share, so K ranks see what one process sees). Class-folder
images draw from their own ``(seed, epoch, index)`` generator in the decoding worker; PRIME on
class folders runs on the device per rank's batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from robustbench_pp.train import augment as aug
from robustbench_pp.train.config import TrainConfig
from robustbench_pp.train.distributed import Ranks
from robustbench_pp.train.recipes import RECIPES


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919 + 17) % (2**63)


def steps_per_epoch(config: TrainConfig, images: int) -> int:
    """Optimiser steps per epoch: the recipe keeps the last partial batch or drops it.

    Raises:
        ValueError: fewer images than one batch (when dropping), or a last batch of a single
            image (BatchNorm cannot normalise it) or too small to give every process two.
    """
    keep = RECIPES[config.recipe].keep_last_batch
    steps = math.ceil(images / config.batch_size) if keep else images // config.batch_size
    if steps == 0:
        raise ValueError(f"{images} training images are fewer than one batch of {config.batch_size} (`batch_size`)")
    return steps


def check_shares(config: TrainConfig, images: int, ranks: Ranks) -> None:
    """Every process's share of every batch must hold at least 2 images (BatchNorm in training mode).

    Raises:
        ValueError: naming `batch_size` and the offending batch.
    """
    sizes = {config.batch_size}
    if RECIPES[config.recipe].keep_last_batch and images % config.batch_size:
        sizes.add(images % config.batch_size)
    smallest = min(size // ranks.world for size in sizes)
    if smallest < 2:
        raise ValueError(f"a batch of {min(sizes)} images split over {ranks.world} process(es) leaves a share of "
                         f"{smallest}: BatchNorm needs 2; change `batch_size` or `limit_train`")


def training_views(batch_uint8: torch.Tensor, config: TrainConfig) -> list[torch.Tensor]:
    """Augmented float [0,1] views of a 32 px uint8 batch: [x] or [clean, aug1, aug2] with JSD."""
    recipe = RECIPES[config.recipe]
    augment = config.augment

    def uint8_aug(batch):
        if augment == "autoaugment":
            return aug.autoaugment(batch, "cifar10")
        if augment == "augmix":
            return aug.augmix(batch, all_ops=recipe.augmix_all_ops)
        return batch

    if augment in ("autoaugment", "augmix") and not config.jsd:
        if recipe.augment_before_crop:
            return [aug.random_crop_flip(uint8_aug(batch_uint8)).float() / 255]
        return [uint8_aug(aug.random_crop_flip(batch_uint8)).float() / 255]
    cropped = aug.random_crop_flip(batch_uint8)
    clean = cropped.float() / 255
    if augment == "augmix":  # with JSD
        return [clean, uint8_aug(cropped).float() / 255, uint8_aug(cropped).float() / 255]
    if augment == "prime":
        return _prime_views(clean, config.jsd, "cifar")
    return [clean]


def _prime_views(clean: torch.Tensor, jsd: bool, configuration: str) -> list[torch.Tensor]:
    if jsd:
        return [clean, aug.prime(clean, config=configuration), aug.prime(clean, config=configuration)]
    return [aug.prime(clean, config=configuration)]


@dataclass(frozen=True)
class InMemoryData:
    """A 32 px training set held as uint8 N×3×32×32 tensors, and its test images."""

    config: TrainConfig
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    info: dict

    @property
    def num_train(self) -> int:
        return len(self.train_x)

    def epoch(self, epoch: int, ranks: Ranks, device: torch.device) -> Iterator[tuple[list, torch.Tensor, int]]:
        config = self.config
        torch.manual_seed(epoch_seed(config.seed, epoch))
        order = torch.randperm(len(self.train_x))
        for step in range(steps_per_epoch(config, len(self.train_x))):
            index = order[step * config.batch_size : (step + 1) * config.batch_size]
            views = training_views(self.train_x[index], config)
            share = ranks.share(len(index))
            yield [view[share] for view in views], self.train_y[index][share], len(index)

    def validation(self, device: torch.device, batch_size: int = 500) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self.test_x), batch_size):
            yield self.test_x[start : start + batch_size].to(device), self.test_y[start : start + batch_size]


@dataclass(frozen=True)
class FolderData:
    """An ImageNet-style class-folder training set (decoded per batch) and its validation folder."""

    config: TrainConfig
    train_set: object  # robustbench_pp.train.folders.FolderTrainSet
    val_source: object  # robustbench_pp.datasets.CleanSource (Resize(256) + CenterCrop(224))
    val_indices: np.ndarray
    info: dict

    @property
    def num_train(self) -> int:
        return len(self.train_set)

    def epoch(self, epoch: int, ranks: Ranks, device: torch.device) -> Iterator[tuple[list, torch.Tensor, int]]:
        from robustbench_pp.train.folders import batch_loader, worker_count

        config = self.config
        order = torch.randperm(self.num_train, generator=torch.Generator().manual_seed(epoch_seed(config.seed, epoch)))
        steps = steps_per_epoch(config, self.num_train)
        globals_ = [order[s * config.batch_size : (s + 1) * config.batch_size] for s in range(steps)]
        shares = [batch[ranks.share(len(batch))].tolist() for batch in globals_]
        # PRIME runs here per batch; each rank draws its own batch parameters.
        torch.manual_seed(epoch_seed(config.seed, epoch) + ranks.rank)
        self.train_set.epoch = epoch
        loader = batch_loader(self.train_set, shares, worker_count(config.workers), pin_memory=device.type == "cuda")
        for batch, (images, labels) in zip(globals_, loader):
            images = images.to(device, non_blocking=True)  # uint8 B×V×3×224×224: a quarter of float's bytes
            views = [images[:, v].float().div_(255) for v in range(images.shape[1])]
            if config.augment == "prime":
                views = _prime_views(views[0], bool(config.jsd), "imagenet")
            yield views, labels, len(batch)

    def validation(self, device: torch.device, batch_size: int = 250) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        from robustbench_pp.datasets.loader import CleanReader, LoadOptions, load_batches
        from robustbench_pp.train.folders import worker_count

        positions = np.arange(len(self.val_indices))
        chunks = [positions[start : start + batch_size] for start in range(0, len(positions), batch_size)]
        reader = CleanReader(self.val_source, self.val_indices)
        options = LoadOptions(device=str(device), num_workers=min(worker_count(self.config.workers), len(chunks)),
                              clean_in_memory=False)
        for images, labels in load_batches(reader, self.val_source.labels[self.val_indices], chunks, options):
            yield images, labels.cpu()
