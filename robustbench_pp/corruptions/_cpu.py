"""CPU loops of the corruption kernels, compiled with numba (the torch versions serve other devices).

Each loop computes exactly what its torch twin in ``kernels.py`` computes, one pixel at a time and
in one pass over the batch, from the same random draws (``ImageRandomness.bits``): the bytes are
the same, tests/test_corruptions.py compares the two on every severity. These are the kernels
whose torch form is many passes of cheap elementwise work (table look-ups, compares, gathers):
at 224 px one pass in compiled code is several times faster. Images are uint8 N×3×H×W
(C-contiguous), draws int32/int64 of the same shape.

numba caches the machine code beside this file (``cache=True``): the first call in a fresh
install compiles for a few seconds, later processes load it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# --------------------------------------------------------------------------- noise


@njit(cache=True, nogil=True)
def impulse_noise(images, bits, below_amount, below_half, out):
    """Salt and pepper: u < amount/2 -> 255, u < amount -> 0, else the pixel unchanged.

    u is torch's float32 uniform of the draw, m·2**-24 with m its low 24 bits; the comparisons
    u < a are done exactly as m < ceil(a·2**24) (``below_amount``, ``below_half``), in integers
    and without branches so that the loop runs on vector registers.
    """
    flat_in, flat_bits, flat_out = images.reshape(-1), bits.reshape(-1), out.reshape(-1)
    for i in range(flat_in.size):
        m = flat_bits[i] & np.int32(0xFFFFFF)
        value = np.uint8(0) if m < below_amount else flat_in[i]
        flat_out[i] = np.uint8(255) if m < below_half else value


@njit(cache=True, nogil=True)
def shot_noise(images, bits, cdf, guide, cell_bits, counts_to_uint8, out):
    """Poisson counts by exact inversion of tabulated CDFs, mapped to output grey levels.

    Grey level v reads table row v; ``cdf`` (rows × K, float64) and ``guide``
    (rows × (2**cell_bits + 1)) as built by ``kernels._poisson_tables``; u is torch's float64
    uniform of the 64-bit draw (its top ``cell_bits`` of 53 bits are its cell). A count is the
    smallest k with cdf[k] > u: the cell's guide entry when the next cell's is the same (no CDF
    step inside the cell), else searched upwards from it. ``counts_to_uint8[k]`` is k's output.
    """
    flat_in, flat_bits, flat_out = images.reshape(-1), bits.reshape(-1), out.reshape(-1)
    scale = 2.0**-53
    shift = 53 - cell_bits
    for i in range(flat_in.size):
        mantissa = flat_bits[i] & 0x1FFFFFFFFFFFFF
        cell = mantissa >> shift
        row = flat_in[i]
        k = guide[row, cell]
        if guide[row, cell + 1] != k:
            u = np.float64(mantissa) * scale
            while cdf[row, k] <= u:
                k += 1
        flat_out[i] = counts_to_uint8[k]


# --------------------------------------------------------------------------- glass blur


@njit(cache=True, nogil=True)
def glass_copies(levels, offsets, max_delta):
    """The reference's sequential "swaps" (which copy x[h', w'] into x[h, w]), in place.

    ``levels``: N×C×H×W floats; ``offsets``: N×2×rows×cols integer draws (column offset first),
    rows scanned from H - max_delta down to max_delta + 1, columns likewise.
    """
    n, c, h, w = levels.shape
    for m in range(n):
        for a in range(offsets.shape[2]):
            row = h - max_delta - a
            for b in range(offsets.shape[3]):
                col = w - max_delta - b
                src_row = row + offsets[m, 1, a, b]
                src_col = col + offsets[m, 0, a, b]
                for ch in range(c):
                    levels[m, ch, row, col] = levels[m, ch, src_row, src_col]
