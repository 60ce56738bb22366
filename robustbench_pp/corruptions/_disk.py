"""ImageNet-C's anti-aliased disk (defocus blur): the kernel, and its parts for the compiled CPU loop."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from robustbench_pp.corruptions import _ops


def disk_kernel(radius: float, alias_blur: float) -> torch.Tensor:
    """ImageNet-C's anti-aliased disk: a pixel disk smoothed by OpenCV's GaussianBlur."""
    smooth = disk_kernel_parts(radius, alias_blur)[0]
    # Trim the all-zero border (small disks in a 17×17 frame): same result, smaller FFTs.
    nonzero = np.flatnonzero(np.abs(smooth).sum(axis=0) > 0)
    trim = min(int(nonzero[0]), len(smooth) - 1 - int(nonzero[-1])) if len(nonzero) else 0
    smooth = smooth[trim : len(smooth) - trim, trim : len(smooth) - trim]
    return torch.as_tensor(smooth, dtype=torch.float32)


@lru_cache(maxsize=32)
def disk_kernel_parts(radius: float, alias_blur: float):
    """(smoothed disk, 0/1 disk, Gaussian taps): OpenCV's GaussianBlur of the disk in its frame."""
    half, ksize = (8, 3) if radius <= 8 else (int(radius), 5)
    coords = np.arange(-half, half + 1)
    xx, yy = np.meshgrid(coords, coords)
    mask = ((xx**2 + yy**2) <= radius**2).astype(np.float64)
    disk = mask / mask.sum()
    g = np.exp(-((np.arange(ksize) - (ksize - 1) / 2) ** 2) / (2 * alias_blur**2))
    g /= g.sum()
    index = _ops.boundary_index(len(coords), ksize // 2, "mirror")
    padded = disk[index][:, index]
    rows = sum(g[k] * padded[k : k + len(coords)] for k in range(ksize))
    smooth = sum(g[k] * rows[:, k : k + len(coords)] for k in range(ksize))
    return smooth, mask, g


@lru_cache(maxsize=32)
def disk_parts(radius: float, alias_blur: float):
    """The anti-aliased disk as disk rows, a separable Gaussian and sparse corrections.

    OpenCV blurs the disk inside its frame with mirrored edges; where the disk reaches the frame
    (radius 8 and 10) that differs from the plain convolution alias ⊛ disk on a few dozen
    taps, kept as corrections. Returns (half-width of each disk row or -1, 1/(255·area),
    Gaussian taps, correction rows, columns and weights/255, reach of the whole kernel).
    """
    smooth, mask, g = disk_kernel_parts(radius, alias_blur)
    disk = mask / mask.sum()
    half, p = disk.shape[0] // 2, len(g) // 2
    widths = np.where(mask.any(axis=1), mask.sum(axis=1).astype(np.int64) // 2, -1)
    convolved = np.zeros((disk.shape[0] + 2 * p,) * 2)
    for a in range(len(g)):
        for b in range(len(g)):
            convolved[a : a + disk.shape[0], b : b + disk.shape[1]] += g[a] * g[b] * disk
    frame = np.zeros_like(convolved)
    frame[p : p + disk.shape[0], p : p + disk.shape[1]] = smooth
    correction = frame - convolved
    dy, dx = np.nonzero(np.abs(correction) > 1e-12)
    weights = (correction[dy, dx] / 255).astype(np.float32)
    return (widths, np.float32(1 / (255 * mask.sum())), g.astype(np.float32), dy - half - p, dx - half - p, weights, half + p)
