"""Pillow's BOX resampling of 8-bit images, as Pillow computes it (Resample.c): pixelate's arithmetic."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch


@lru_cache(maxsize=64)
def pil_box_coefficients(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's BOX resampling of one axis as it computes it (Resample.c, 8-bit images).

    Returns (first, weights): output i is ``(2**21 + sum_k weights[i, k] · in[first[i] + k]) >> 22``
    clipped to 0..255, with Pillow's 22-bit fixed-point weights (zero beyond an output's taps).
    """
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    taps = int(math.ceil(support)) * 2 + 1
    centre = (np.arange(out_size) + 0.5) * scale
    first = np.maximum((centre - support + 0.5).astype(np.int64), 0)  # C's (int) truncation; values > -1
    last = np.minimum((centre + support + 0.5).astype(np.int64), in_size)
    k = np.arange(taps)[None, :]
    pos = (first[:, None] + k - centre[:, None] + 0.5) * (1.0 / filterscale)  # as Pillow: times 1/filterscale
    w = ((pos > -0.5) & (pos <= 0.5) & (k < (last - first)[:, None])).astype(np.float64)
    total = w.sum(axis=1, keepdims=True)
    w = np.divide(w, total, out=w, where=total != 0)
    return first, (0.5 + w * (1 << 22)).astype(np.int64)  # all weights are >= 0


@lru_cache(maxsize=64)
def pil_box_matrix(in_size: int, out_size: int) -> np.ndarray:
    """out×in fixed-point weights of :func:`pil_box_coefficients` as a dense matrix (float64)."""
    first, weights = pil_box_coefficients(in_size, out_size)
    matrix = np.zeros((out_size, in_size))
    for xx in range(out_size):
        taps = weights[xx][: in_size - first[xx]]
        matrix[xx, first[xx] : first[xx] + len(taps)] = taps
    return matrix


def pil_box_resize(levels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pillow's Image.resize(..., BOX) of 8-bit images: horizontal pass, then vertical, each
    rounded to 8 bits with Pillow's fixed-point arithmetic (exact in float64: sums < 2**31).

    ``levels``: float64 tensor of whole grey levels 0..255 (…×H×W); returns the same type.
    """
    out = levels
    if width != levels.shape[-1]:
        m = torch.as_tensor(pil_box_matrix(levels.shape[-1], width), device=levels.device)
        out = torch.floor((out @ m.T + 2**21) / 2**22).clamp(0, 255)
    if height != levels.shape[-2]:
        m = torch.as_tensor(pil_box_matrix(levels.shape[-2], height), device=levels.device)
        out = torch.floor((m @ out + 2**21) / 2**22).clamp(0, 255)
    return out
