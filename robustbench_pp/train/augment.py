"""Training augmentations as functions over batches of images.

Conventions: ``uint8`` batches are N×3×H×W tensors in [0, 255]; ``float`` batches are
N×3×H×W in [0, 1]. Randomness comes from torch's global generator, which the training loop
re-seeds at the start of every epoch (so a resumed run draws the same numbers).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# PRIME lives in its own module; its names stay importable from here.
from robustbench_pp.train.prime import (  # noqa: F401
    PRIME_CONFIGS,
    PRIME_PRIMITIVES,
    prime,
    prime_diffeomorphism,
    prime_random_filter,
    prime_smooth_color,
)


def random_crop_flip(images: torch.Tensor, padding: int = 4) -> torch.Tensor:
    """RandomCrop(size, zero padding ``padding``) + horizontal flip with p=0.5, per image.

    Args:
        images: N×C×H×W batch (any dtype).
        padding: zero border added before cropping back to H×W.

    Returns:
        A batch of the same shape and dtype.
    """
    n, _, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    top = torch.randint(0, 2 * padding + 1, (n,))
    left = torch.randint(0, 2 * padding + 1, (n,))
    flip = torch.rand(n) < 0.5
    rows = top[:, None] + torch.arange(h)[None, :]  # N×H
    cols = left[:, None] + torch.arange(w)[None, :]  # N×W
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    batch = torch.arange(n)[:, None, None]
    # Gather N×H×W×C, then back to N×C×H×W.
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


def autoaugment(images: torch.Tensor, policy: str = "cifar10") -> torch.Tensor:
    """torchvision's AutoAugment with the given policy, drawn independently per image (uint8 in/out)."""
    from torchvision.transforms import v2

    transform = v2.AutoAugment(v2.AutoAugmentPolicy(policy))
    return torch.stack([transform(image) for image in images])


def augmix(images: torch.Tensor, *, severity: int = 3, width: int = 3, depth: int = -1, alpha: float = 1.0,
           all_ops: bool = True) -> torch.Tensor:
    """torchvision's AugMix, drawn independently per image (uint8 in/out).

    ``all_ops=False`` drops the operations that overlap the test corruptions (contrast,
    colour, brightness, sharpness), as in the original AugMix recipe.
    """
    from torchvision.transforms import v2

    transform = v2.AugMix(severity=severity, mixture_width=width, chain_depth=depth, alpha=alpha, all_ops=all_ops)
    return torch.stack([transform(image) for image in images])


def jensen_shannon_loss(logits_clean: torch.Tensor, logits_aug1: torch.Tensor, logits_aug2: torch.Tensor) -> torch.Tensor:
    """AugMix's Jensen-Shannon consistency term between the clean and two augmented views.

    Returns:
        mean over views of KL(M ‖ p_view), M the mixture of the three softmaxes (batch mean).
    """
    probs = [F.softmax(logits.float(), dim=1) for logits in (logits_clean, logits_aug1, logits_aug2)]
    log_mixture = torch.clamp(sum(probs) / 3.0, 1e-7, 1.0).log()
    return sum(F.kl_div(log_mixture, p, reduction="batchmean") for p in probs) / 3.0
