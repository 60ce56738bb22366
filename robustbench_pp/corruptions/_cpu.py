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


# --------------------------------------------------------------------------- conversions


@njit(cache=True, nogil=True)
def levels_to_unit(levels, out):
    """``_ops.to_unit``: uint8 -> float32 / 255 (a float32 division, like torch's div_)."""
    for x in range(levels.size):
        out[x] = np.float32(levels[x]) / np.float32(255.0)


@njit(cache=True, nogil=True)
def unit_row_to_uint8(values, out):
    """``_ops.unit_to_uint8`` of one row: ×255, +1e-3, clipped, truncated, each step in float32
    (compiled without fused multiply-adds, like torch's separate mul_ and add_)."""
    for x in range(values.size):
        v = values[x] * np.float32(255.0)
        v = v + np.float32(1e-3)
        out[x] = np.uint8(min(max(v, np.float32(0.0)), np.float32(255.0)))


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


@njit(cache=True, nogil=True, fastmath={"contract"})
def defocus_blur(images, half_widths, scale, alias, corr_dy, corr_dx, corr_w, rows_index, cols_index, reach, out):
    """Correlation with ImageNet-C's anti-aliased disk K = alias ⊛ disk + corrections, per plane.

    The disk part is exact integer arithmetic: each output's sum of grey levels over the disk
    (rows of half-width ``half_widths[d]``, -1 for none) from row prefix sums, times ``scale``
    (1 / (255 · disk area)); then the separable ``alias`` Gaussian (valid positions only); then
    the sparse taps where OpenCV's blur of the disk inside its frame differs from alias ⊛ disk
    (``corr_*``, weights / 255). The image is mirror-padded by ``reach`` (``rows_index``,
    ``cols_index``), as ``_ops.fft_filter2d`` pads it. ``out``: uint8, as ``unit_to_uint8``.
    """
    n, c, h, w = images.shape
    radius, p = (half_widths.size - 1) // 2, alias.size // 2
    hp, wp, wide = h + 2 * reach, w + 2 * reach, w + 2 * p
    levels = np.empty((hp, wp), np.float32)
    prefix = np.zeros((hp, wp + 1), np.int32)
    sums = np.empty(wide, np.int32)
    disk = np.empty((h + 2 * p, wide), np.float32)
    line = np.empty(wide, np.float32)
    row_out = np.empty(w, np.float32)
    base = reach - p  # padded coordinate of disk-sum position 0
    for m in range(n):
        for ch in range(c):
            plane, target = images[m, ch], out[m, ch]
            for y in range(hp):
                src, dst, running = plane[rows_index[y]], levels[y], prefix[y]
                for x in range(wp):
                    dst[x] = src[cols_index[x]]
                total = np.int32(0)
                for x in range(wp):
                    total = np.int32(total + np.int32(src[cols_index[x]]))
                    running[x + 1] = total
            for yy in range(h + 2 * p):
                sums[:] = 0
                for d in range(-radius, radius + 1):
                    half = half_widths[d + radius]
                    if half < 0:
                        continue
                    upper = prefix[base + yy + d, base + half + 1 : base + half + 1 + wide]
                    lower = prefix[base + yy + d, base - half : base - half + wide]
                    for x in range(wide):
                        sums[x] = np.int32(sums[x] + np.int32(upper[x] - lower[x]))
                dst = disk[yy]
                for x in range(wide):
                    dst[x] = np.float32(sums[x]) * scale
            for i in range(h):
                line[:] = 0.0
                for k in range(alias.size):
                    src, weight = disk[i + k], alias[k]
                    for x in range(wide):
                        line[x] = line[x] + src[x] * weight
                row_out[:] = 0.0
                for k in range(alias.size):
                    weight = alias[k]
                    for x in range(w):
                        row_out[x] = row_out[x] + line[x + k] * weight
                for t in range(corr_w.size):
                    start = reach + corr_dx[t]
                    src, weight = levels[reach + i + corr_dy[t], start : start + w], corr_w[t]
                    for x in range(w):
                        row_out[x] = row_out[x] + src[x] * weight
                unit_row_to_uint8(row_out, target[i])


@njit(cache=True, nogil=True, fastmath={"contract"})
def zoom_blur(images, top, bottom, down, runs, run_counts, across, out):
    """Mean of the image and its centre crops zoomed back (bilinear, separable).

    Zoom z: output row i lerps rows ``top[z, i]`` and ``bottom[z, i]`` (weight ``down[z, i]``
    on the second); output column j lerps columns k and k + 1 of that (weight
    ``across[z, j]``), where k = j + offset over each of the zoom's ``run_counts[z]`` runs
    ``runs[z, r] = (first j, end j, offset)``: along a run the columns read are contiguous, so
    the loop runs on vector registers instead of gathering column by column.
    """
    n, c, h, w = images.shape
    zooms = top.shape[0]
    rows = np.empty(w + 1, np.float32)
    inverse = np.float32(1.0 / (zooms + 1))
    for m in range(n):
        for ch in range(c):
            plane, target = images[m, ch], out[m, ch]
            target[:] = plane
            for z in range(zooms):
                weights = across[z]
                for i in range(h):
                    a, b, f = plane[top[z, i]], plane[bottom[z, i]], down[z, i]
                    for x in range(w):
                        rows[x] = a[x] + f * (b[x] - a[x])
                    rows[w] = rows[w - 1]  # the last column's second tap (weight 0)
                    dst = target[i]
                    for r in range(run_counts[z]):
                        first, end, offset = runs[z, r, 0], runs[z, r, 1], runs[z, r, 2]
                        src, d, g = rows[first + offset : end + offset + 1], dst[first:end], weights[first:end]
                        for t in range(end - first):
                            d[t] += src[t] + g[t] * (src[t + 1] - src[t])
            for i in range(h):
                line = target[i]
                for x in range(w):
                    line[x] *= inverse


@njit(inline="always")
def _reflect(position, low, span):
    """grid_sample's reflection padding: mirror ``position`` about low and low + span."""
    if low <= position <= low + span or span <= 0:
        return position if span > 0 else low
    offset = abs(position - low)
    flips = int(offset // span)
    extra = offset - flips * span
    return low + extra if flips & 1 == 0 else low + span - extra


@njit(inline="always")
def _taps(position, size):
    """First tap, second tap and the second's weight of a bilinear sample at ``position``
    (within [0, size - 1]); at the last pixel the second tap is the first, weighing zero."""
    first = int(position)  # position >= 0: truncation is floor
    return first, min(first + 1, size - 1), np.float32(position - first)


@njit(cache=True, nogil=True)
def elastic_sample(images, inverse, fields, out):
    """The released elastic transform's two bilinear samplings, per image.

    First the affine warp: output (i, j) reads ``[j, i, 1] @ inverse[m]`` (pixel units),
    mirrored about the edge pixels (BORDER_REFLECT_101); then the displacement: it reads
    (i + fields[m, 1, i, j], j + fields[m, 0, i, j]) of the warped image, mirrored about the
    image edges (scipy's "reflect"). Coordinates in float64, values in float32; a pixel's taps
    and weights are computed once for its three channels.
    """
    n, c, h, w = images.shape
    warped = np.empty((c, h, w), np.float32)
    for m in range(n):
        a, image, target = inverse[m], images[m], out[m]
        for stage in range(2):
            source, dest = (image, warped) if stage == 0 else (warped, target)
            for i in range(h):
                for j in range(w):
                    if stage == 0:
                        sx = min(max(_reflect(j * a[0, 0] + i * a[1, 0] + a[2, 0], 0.0, w - 1.0), 0.0), w - 1.0)
                        sy = min(max(_reflect(j * a[0, 1] + i * a[1, 1] + a[2, 1], 0.0, h - 1.0), 0.0), h - 1.0)
                    else:
                        sx = min(max(_reflect(j + np.float64(fields[m, 0, i, j]), -0.5, np.float64(w)), 0.0), w - 1.0)
                        sy = min(max(_reflect(i + np.float64(fields[m, 1, i, j]), -0.5, np.float64(h)), 0.0), h - 1.0)
                    y0, y1, fy = _taps(sy, h)
                    x0, x1, fx = _taps(sx, w)
                    for ch in range(c):
                        plane = source[ch]
                        top = plane[y0, x0] + fx * (plane[y0, x1] - plane[y0, x0])
                        bottom = plane[y1, x0] + fx * (plane[y1, x1] - plane[y1, x0])
                        dest[ch, i, j] = top + fy * (bottom - top)


# --------------------------------------------------------------------------- glass blur


@njit(cache=True, nogil=True)
def glass_copies(levels, offsets, max_delta):
    """The reference's sequential "swaps" (which copy x[h', w'] into x[h, w]), in place.

    ``levels``: N×C×H×W floats; ``offsets``: N×2×rows×cols integer draws (column offset first),
    rows scanned from H - max_delta down to max_delta + 1, columns likewise. Channels never
    mix, so each channel plane runs the whole scan on its own.
    """
    n, c, h, w = levels.shape
    for m in range(n):
        row_offsets, col_offsets = offsets[m, 1], offsets[m, 0]
        for ch in range(c):
            plane = levels[m, ch]
            for a in range(row_offsets.shape[0]):
                row = h - max_delta - a
                dy, dx, line = row_offsets[a], col_offsets[a], plane[row]
                for b in range(row_offsets.shape[1]):
                    col = w - max_delta - b
                    line[col] = plane[row + dy[b], col + dx[b]]


# --------------------------------------------------------------------------- pixelate


@njit(cache=True, nogil=True)
def pixelate(images, col_index, col_weights, row_index, row_weights, up_rows, up_cols, out):
    """Pillow's BOX resize down and BOX up of uint8 N×C×H×W images, in its fixed-point arithmetic.

    Down: output x = (2**21 + sum_k weights[x, k] · in[index[x, k]]) >> 22 clipped to 0..255,
    horizontal pass then vertical (``kernels._box_taps``: 22-bit weights, zero on padding taps),
    in int32 (the weights of an output sum to ~2**22, so sums stay below 2**31). Each pass runs
    its inner loop along memory: the horizontal one on the transposed image. Up: output pixel
    (i, j) copies small pixel (``up_rows[i]``, ``up_cols[j]``): BOX enlarging has one tap of
    weight 1; consecutive output rows from the same small row are copies of each other.
    """
    n, c, h, w = images.shape
    small_h, small_w = row_index.shape[0], col_index.shape[0]
    transposed = np.empty((w, h), np.int32)
    across = np.empty((h, small_w), np.int32)  # the horizontal pass's result
    column = np.empty(h, np.int32)
    acc = np.empty(small_w, np.int32)
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
                column[:] = half
                for k in range(col_weights.shape[1]):
                    weight, src = col_weights[x, k], transposed[col_index[x, k]]
                    for y in range(h):
                        column[y] = np.int32(column[y] + src[y] * weight)
                for y in range(h):
                    across[y, x] = min(max(column[y] >> 22, np.int32(0)), np.int32(255))
            for y in range(small_h):
                acc[:] = half
                for k in range(row_weights.shape[1]):
                    weight, src = row_weights[y, k], across[row_index[y, k]]
                    for x in range(small_w):
                        acc[x] = np.int32(acc[x] + src[x] * weight)
                dst = small[y]
                for x in range(small_w):
                    dst[x] = min(max(acc[x] >> 22, np.int32(0)), np.int32(255))
            for y in range(h):
                if y > 0 and up_rows[y] == up_rows[y - 1]:
                    target[y] = target[y - 1]
                    continue
                source, line = small[up_rows[y]], target[y]
                for x in range(w):
                    line[x] = source[up_cols[x]]


# --------------------------------------------------------------------------- fog


@njit(cache=True, nogil=True)
def plasma_fractal(noise, scales, field):
    """``_ops.plasma_fractal``'s diamond-square steps, in its float32 arithmetic and order.

    ``noise``: N×K uniforms in [-1, 1), level after level (3 × cells² each: squares, then the
    points left of and above the centres); ``scales``: wibble² per level (float32).
    """
    n, size = field.shape[0], field.shape[1]
    quarter = np.float32(4.0)
    for m in range(n):
        f = field[m]
        f[:, :] = 0.0
        step, level, used = size, 0, 0
        while step >= 2:
            half, cells, scale = step // 2, size // step, scales[level]
            draw = noise[m, used : used + 3 * cells * cells]
            for a in range(cells):  # centres of the squares
                for b in range(cells):
                    r, c = a * step, b * step
                    r1, c1 = (r + step) % size, (c + step) % size
                    squares = (f[r, c] + f[r1, c]) + (f[r, c1] + f[r1, c1])
                    f[r + half, c + half] = squares / quarter + draw[a * cells + b] * scale
            for a in range(cells):  # left of the centres, then above them
                for b in range(cells):
                    r, c = a * step, b * step
                    centre, before = f[r + half, c + half], f[(r - half) % size, c + half]
                    corner, after = f[r, c], f[r, (c + step) % size]
                    f[r, c + half] = ((centre + before) + (corner + after)) / quarter + draw[cells * cells + a * cells + b] * scale
            for a in range(cells):
                for b in range(cells):
                    r, c = a * step, b * step
                    centre, before = f[r + half, c + half], f[r + half, (c - half) % size]
                    corner, after = f[r, c], f[(r + step) % size, c]
                    f[r + half, c] = ((centre + before) + (corner + after)) / quarter + draw[2 * cells * cells + a * cells + b] * scale
            used += 3 * cells * cells
            step //= 2
            level += 1
        low = f.min()
        for r in range(size):
            for c in range(size):
                f[r, c] = f[r, c] - low
        high = f.max()
        for r in range(size):
            for c in range(size):
                f[r, c] = f[r, c] / high
