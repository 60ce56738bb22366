"""Training recipes: the optimiser/schedule/augmentation settings that define a variant.

- ``standard``: SGD momentum 0.9, lr 0.1, weight decay 5e-4, batch 128, cosine schedule
  stepped per batch, the last partial batch dropped, bf16/fp16 autocast on CUDA; AugMix and
  PRIME with their Jensen-Shannon consistency loss (weight 12) as in the original papers,
  AugMix without the ops that overlap the test corruptions.
- ``pushpull``: what the PushPull-Net runs used (protocol section 4): SGD with PyTorch's
  ``OneCycleLR`` built with their arguments (30% warm-up, cosine, ``div_factor =
  int(lr_max / lr_initial)``, ``final_div_factor = int(lr_max / lr_end)`` with lr_end 5e-5, and
  torch's default momentum cycling 0.95 → 0.85 → 0.95), stepped per batch with the last
  partial batch kept; fp32 everywhere; weight decay 1e-5; seed 1234; torchvision AugMix
  defaults (all ops), no JSD; AutoAugment/AugMix applied to the image before the crop. Epochs,
  batch and learning rates per training set: CIFAR-10 30 epochs, batch 64, 5e-3 → 0.2;
  ImageNet-100/200 20 epochs, batch 64, 5e-3 → 0.2; ImageNet-1k 20 epochs, batch 128,
  0.05 → 1.0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

AUGMENTATIONS = ("none", "autoaugment", "augmix", "prime")
SCHEDULES = ("cosine", "step", "onecycle")


@dataclass(frozen=True)
class DatasetDefaults:
    """A recipe's settings that depend on the training set (None: the recipe's own)."""

    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None  # peak learning rate
    onecycle_start_lr: float | None = None  # one-cycle initial learning rate


@dataclass(frozen=True)
class Recipe:
    name: str
    lr: float  # peak learning rate (one-cycle: the maximum)
    weight_decay: float
    batch_size: int
    schedule: str  # cosine | step | onecycle
    jsd: bool  # AugMix/PRIME Jensen-Shannon consistency loss (3 forward passes per batch)
    jsd_weight: float  # λ of the JSD term (12 in AugMix and PRIME)
    augmix_all_ops: bool  # False drops ops overlapping the test corruptions (original AugMix)
    augment_before_crop: bool  # PushPull-Net applied AutoAugment/AugMix to the image before the crop
    epochs: int = 2
    seed: int = 0
    onecycle_start_lr: float = 5e-3  # one-cycle initial lr (PushPull-Net: 5e-3 -> 0.2)
    onecycle_end_lr: float = 5e-5  # lr_end of PushPull-Net's final_div_factor = int(lr_max / lr_end)
    momentum: float = 0.9  # SGD's; a one-cycle schedule cycles it 0.95 -> 0.85 -> 0.95 instead
    keep_last_batch: bool = False  # False drops the last partial batch (BatchNorm needs > 1 image)
    autocast_on_cuda: bool = True  # bf16 (or fp16 with a grad scaler) on CUDA; False: fp32
    per_dataset: Mapping[str, DatasetDefaults] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "per_dataset", MappingProxyType(dict(self.per_dataset)))

    def defaults_for(self, dataset: str) -> DatasetDefaults:
        """Epochs, batch and learning rates on ``dataset``, the recipe's own where it says nothing."""
        own = self.per_dataset.get(dataset, DatasetDefaults())
        return DatasetDefaults(
            epochs=own.epochs or self.epochs, batch_size=own.batch_size or self.batch_size,
            lr=own.lr if own.lr is not None else self.lr,
            onecycle_start_lr=own.onecycle_start_lr if own.onecycle_start_lr is not None else self.onecycle_start_lr,
        )


def onecycle_factors(lr_max: float, lr_initial: float, lr_end: float) -> tuple[int, int]:
    """``(div_factor, final_div_factor)`` as the PushPull-Net code computed them (``int`` truncates).

    OneCycleLR then starts at ``lr_max / div_factor`` and ends at that divided by
    ``final_div_factor``: 5e-3 -> 0.2 -> 1.25e-6 for CIFAR-10 (factors 40 and 4000).

    Raises:
        ValueError: when a factor would be below 1 (``lr`` smaller than the start or end lr).
    """
    div_factor, final_div_factor = int(lr_max / lr_initial), int(lr_max / lr_end)
    if div_factor < 1 or final_div_factor < 1:
        raise ValueError(f"`lr` {lr_max} must be at least the one-cycle start lr {lr_initial} and end lr {lr_end}")
    return div_factor, final_div_factor


# Learning-rate multiplier per architecture when no `lr` is given. AlexNet has no BatchNorm:
# at the ResNet rates (0.1, 0.2) it diverges or stays at chance; 0.1x (0.01, 0.02) trains
# (measured on 5000 Fashion-MNIST images, width 8: loss 2.30 -> 1.02 in 2 epochs at 0.02).
LR_SCALE_BY_ARCHITECTURE = {"alexnet": 0.1}

_PUSHPULL_SMALL = DatasetDefaults(epochs=20, batch_size=64, lr=0.2, onecycle_start_lr=5e-3)

RECIPES = {
    "standard": Recipe("standard", lr=0.1, weight_decay=5e-4, batch_size=128, schedule="cosine", jsd=True,
                       jsd_weight=12.0, augmix_all_ops=False, augment_before_crop=False),
    "pushpull": Recipe(
        "pushpull", lr=0.2, weight_decay=1e-5, batch_size=64, schedule="onecycle", jsd=False, jsd_weight=12.0,
        augmix_all_ops=True, augment_before_crop=True, epochs=30, seed=1234, keep_last_batch=True,
        autocast_on_cuda=False,
        per_dataset={
            "imagenet100": _PUSHPULL_SMALL, "imagenet200": _PUSHPULL_SMALL,
            "imagenet": DatasetDefaults(epochs=20, batch_size=128, lr=1.0, onecycle_start_lr=0.05),
        },
    ),
}
