"""Pixel normalisation: the one owner of the per-channel statistics and of ``normalize``.

Evaluation, training and the benchmarks all turn images into model inputs here. Geometry
(resize, crop, padding) belongs to the datasets (:mod:`robustbench_pp.datasets.clean`);
what happens to the pixel values belongs to this module.

Statistics are on [0, 1] pixels, per RGB channel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

Stats = tuple[float, float, float]

#: CIFAR-10 statistics as used by the PushPull-Net code (protocol section 3).
CIFAR10_MEAN: Stats = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: Stats = (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN: Stats = (0.5071, 0.4865, 0.4409)
CIFAR100_STD: Stats = (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN: Stats = (0.485, 0.456, 0.406)
IMAGENET_STD: Stats = (0.229, 0.224, 0.225)
# Computed once from the padded training set: load_fashion_mnist(split="train") (60000 images,
# zero-padded 28 -> 32, grey replicated to RGB), pixel values / 255, mean and std over every
# pixel of every image: 0.21900 and 0.33181 (float64). The padding lowers the mean from
# Fashion-MNIST's usual 28 px value (0.2860).
FASHION_MNIST_MEAN: Stats = (0.2190, 0.2190, 0.2190)
FASHION_MNIST_STD: Stats = (0.3318, 0.3318, 0.3318)

#: The usual normalisation of each clean source kind (a dataset's default when the model
#: does not say otherwise).
SOURCE_NORMALIZATION: Mapping[str, tuple[Stats, Stats]] = {
    "fashion-mnist": (FASHION_MNIST_MEAN, FASHION_MNIST_STD),
    "cifar10": (CIFAR10_MEAN, CIFAR10_STD),
    "cifar100": (CIFAR100_MEAN, CIFAR100_STD),
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
}


def normalize(batch, mean: Sequence[float], std: Sequence[float], *, dtype=None, channels_last: bool | None = None):
    """Turn a uint8 B×3×H×W batch into normalised floats on the batch's own device.

    Args:
        batch: uint8 tensor (move it to the GPU first: 4× fewer bytes than float32).
        mean, std: per-channel statistics on [0, 1] pixels.
        dtype: float dtype of the result (default float32; float16/bfloat16 for autocast runs).
        channels_last: force the memory format; None keeps the batch's own format.

    Returns:
        ``(batch / 255 - mean) / std`` as a float tensor on ``batch.device``.

    Raises:
        ValueError: for anything but a uint8 4-D batch with one channel per statistic.
    """
    import torch

    if batch.dtype != torch.uint8 or batch.ndim != 4 or batch.shape[1] != len(mean):
        raise ValueError(f"normalize expects a uint8 B×{len(mean)}×H×W tensor, got {batch.dtype} {tuple(batch.shape)}")
    dtype = dtype or torch.float32
    scale = torch.tensor(std, device=batch.device, dtype=torch.float32).mul(255.0)
    shift = torch.tensor(mean, device=batch.device, dtype=torch.float32).div(torch.tensor(std, device=batch.device))
    # (x/255 - m)/s = x/(255 s) - m/s: one multiply-add, in float32 for exactness, then cast.
    out = batch.to(torch.float32).div_(scale.view(1, -1, 1, 1)).sub_(shift.view(1, -1, 1, 1)).to(dtype)
    if channels_last is True:
        out = out.contiguous(memory_format=torch.channels_last)
    elif channels_last is False:
        out = out.contiguous()
    return out


def normalize_float(images, mean, std):
    """Normalise a float B×3×H×W batch already in [0, 1] (augmented training views).

    Args:
        images: float tensor in [0, 1].
        mean, std: per-channel statistics, as sequences or as tensors broadcastable to the
            batch (B×3×H×W); sequences are moved to the batch's device and dtype.

    Returns:
        ``(images - mean) / std``, computed in that order (training numbers depend on it).
    """
    import torch

    if not isinstance(mean, torch.Tensor):
        mean = torch.tensor(mean, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    if not isinstance(std, torch.Tensor):
        std = torch.tensor(std, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    return (images - mean) / std
