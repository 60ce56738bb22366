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


# --------------------------------------------------------------------------- filters

# fastmath "contract" lets LLVM fuse ``acc + x * w`` into one fused multiply-add, as torch's
# vectorised ``acc.add_(x, alpha=w)`` does: with it these loops give the torch kernels' bytes.


@njit(cache=True, nogil=True, fastmath={"contract"})
def separable_filter(planes, row_weights, row_index, col_weights, col_index, out):
    """Correlate every H×W plane with 1-D kernels along rows (axis -2), then along columns.

    ``*_index`` give the source of each position of the padded axis (``_ops.boundary_index``);
    the sums run over the taps in order, first tap multiplied, the others fused-multiply-added,
    like ``_ops._filter_axis``'s shifted sums. ``planes`` and ``out`` may be the same array.
    """
    p, h, w = planes.shape
    rows_taps, cols_taps = row_weights.size, col_weights.size
    across = np.empty((h, w), np.float32)
    padded = np.empty(w + cols_taps - 1, np.float32)
    for m in range(p):
        plane = planes[m]
        for i in range(h):
            acc, src = across[i], plane[row_index[i]]
            for j in range(w):
                acc[j] = src[j] * row_weights[0]
            for k in range(1, rows_taps):
                src, weight = plane[row_index[i + k]], row_weights[k]
                for j in range(w):
                    acc[j] = acc[j] + src[j] * weight
        target = out[m]
        for i in range(h):
            line, dst = across[i], target[i]
            for j in range(w + cols_taps - 1):
                padded[j] = line[col_index[j]]
            for j in range(w):
                dst[j] = padded[j] * col_weights[0]
            for k in range(1, cols_taps):
                weight = col_weights[k]
                for j in range(w):
                    dst[j] = dst[j] + padded[j + k] * weight


@njit(cache=True, nogil=True, fastmath={"contract"})
def motion_blur(images, taps, dy, dx, inside, out):
    """Sum of shifted copies: out[i, j] += taps[k] · x[clamp(i - dy[k]), clamp(j - dx[k])] per image,
    over its taps k where ``inside`` in order (``_ops.motion_blur``'s large-image path)."""
    n, c, h, w = images.shape
    pad = int(np.abs(dx).max()) if dx.size else 0
    padded = np.empty((h, w + 2 * pad), np.float32)
    acc = np.empty(w, np.float32)
    for m in range(n):
        used = np.flatnonzero(inside[m])
        for ch in range(c):
            plane, target = images[m, ch], out[m, ch]
            for i in range(h):
                line = padded[i]
                for j in range(w + 2 * pad):
                    line[j] = plane[i, min(max(j - pad, 0), w - 1)]
            for i in range(h):
                acc[:] = 0.0
                for k in used:
                    start = pad - dx[m, k]
                    src, weight = padded[min(max(i - dy[m, k], 0), h - 1), start : start + w], taps[k]
                    for j in range(w):
                        acc[j] = acc[j] + src[j] * weight
                target[i] = acc


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


# --------------------------------------------------------------------------- pixelate


@njit(cache=True, nogil=True)
def pixelate(images, col_index, col_weights, row_index, row_weights, up_rows, up_cols, out):
    """Pillow's BOX resize down and BOX up of uint8 N×C×H×W images, in its fixed-point arithmetic.

    Down: output x = (2**21 + sum_k weights[x, k] · in[index[x, k]]) >> 22 clipped to 0..255,
    horizontal pass then vertical (``kernels._box_taps``: 22-bit weights, zero on padding taps),
    in int32 (the weights of an output sum to ~2**22, so sums stay below 2**31). The horizontal
    pass runs on the transposed image, so that its loops run along memory. Up: output pixel
    (i, j) copies small pixel (``up_rows[i]``, ``up_cols[j]``): BOX enlarging has one tap of
    weight 1; consecutive output rows from the same small row are copies of each other.
    """
    n, c, h, w = images.shape
    small_h, small_w = row_index.shape[0], col_index.shape[0]
    transposed = np.empty((w, h), np.int32)
    across = np.empty((small_w, h), np.int32)  # horizontal pass result, transposed
    acc = np.empty(h, np.int32)
    small = np.empty((small_h, small_w), np.uint8)
    half = np.int32(1 << 21)
    for m in range(n):
        for ch in range(c):
            image, target = images[m, ch], out[m, ch]
            for y in range(h):
                line = image[y]
                for x in range(w):
                    transposed[x, y] = line[x]
            for x in range(small_w):
                acc[:] = half
                for k in range(col_weights.shape[1]):
                    weight, src = col_weights[x, k], transposed[col_index[x, k]]
                    for y in range(h):
                        acc[y] = np.int32(acc[y] + src[y] * weight)
                dst = across[x]
                for y in range(h):
                    dst[y] = min(max(acc[y] >> 22, np.int32(0)), np.int32(255))
            for y in range(small_h):
                for x in range(small_w):
                    total, line = half, across[x]
                    for k in range(row_weights.shape[1]):
                        total = np.int32(total + line[row_index[y, k]] * row_weights[y, k])
                    small[y, x] = min(max(total >> 22, np.int32(0)), np.int32(255))
            for y in range(h):
                if y > 0 and up_rows[y] == up_rows[y - 1]:
                    target[y] = target[y - 1]
                    continue
                source, line = small[up_rows[y]], target[y]
                for x in range(w):
                    line[x] = source[up_cols[x]]
