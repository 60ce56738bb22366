"""The 19 corruption kernels: one small batched torch function each.

A kernel takes a float batch ``x`` (N×3×H×W, values in [0, 1], any device), the values of one
parameter row of ``parameters.PARAMETERS`` as positional arguments, and ``rng`` (an
``ImageRandomness`` holding one generator per image). It returns floats on the 0..1 scale that
the caller clips and truncates to uint8 like the released data. A kernel may overwrite ``x`` (the
caller's private float copy). No kernel knows its preset.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from robustbench_pp.corruptions import _box, _disk, _ops, _spatter

# --------------------------------------------------------------------------- noise


def _take(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """table.flatten()[index] (index 1-D): index_select is several times faster than take on CPU."""
    return table.reshape(-1).index_select(0, index)


def gaussian_noise(x, sigma, *, rng):
    return x.add_(rng.normal(x.shape[1:], std=sigma))


@lru_cache(maxsize=32)
def _poisson_tables(photons: float, device: str = "cpu"):
    """Inverse-CDF tables of Poisson(photons·v/255) for the 256 grey levels v.

    Returns (cdf 256×K float64, guide 256×(M+1)) with M = 2**b ≥ 2K cells: guide[v, j] is the
    smallest k with cdf[v, k] > j/M (Chen and Asau's guide table), so the k of a uniform u in
    cell j = floor(u·M) lies in [guide[v, j], guide[v, j + 1]]: exact inversion with a short
    search (needed in the few cells that hold a CDF step). M is a power of two so that u's cell
    is exactly its top b bits; the guide is uint8 when K allows (a small table stays in cache).
    """
    from scipy.stats import poisson

    rates = photons * np.arange(256) / 255.0
    size = int(poisson.ppf(1 - 1e-15, rates.max())) + 2
    cdf = poisson.cdf(np.arange(size)[None, :], rates[:, None])
    cdf[:, -1] = 1.0  # the remaining < 1e-15 of mass goes to the last entry
    cells = 1 << (2 * size - 1).bit_length()
    edges = np.arange(cells + 1) / cells
    guide = np.stack([np.searchsorted(row, edges, side="right") for row in cdf])
    guide = np.minimum(guide, size - 1).astype(np.uint8 if size <= 256 else np.int16)
    return torch.from_numpy(cdf).to(device), torch.from_numpy(guide).to(device)


def shot_noise(images, photons, *, rng):
    # uint8 in and out. x·photons is the Poisson rate; inputs are whole grey levels, so the 256
    # rates' CDFs are tabulated and each count is the exact inverse CDF of one float64 uniform.
    if _ops.use_compiled(images):
        from robustbench_pp.corruptions import _cpu

        cdf, guide = _poisson_tables(float(photons))
        out = torch.empty_like(images)
        cell_bits = (guide.shape[1] - 1).bit_length() - 1
        _cpu.shot_noise(images.numpy(), rng.bits(images.shape[1:], wide=True).numpy(), cdf.numpy(), guide.numpy(),
                        cell_bits, _counts_to_uint8(float(photons), cdf.shape[1]), out.numpy())
        return out
    return _ops.unit_to_uint8(_shot_noise_counts(_ops.to_unit(images), photons, rng))


@lru_cache(maxsize=32)
def _counts_to_uint8(photons: float, size: int) -> np.ndarray:
    """Count k -> output grey level (k / photons through the float round trip)."""
    return _ops.unit_to_uint8(torch.arange(size, dtype=torch.float32) / photons).numpy()


def _shot_noise_counts(x, photons, rng):
    cdf, guide = _poisson_tables(float(photons), str(x.device))
    size, cells = cdf.shape[1], guide.shape[1] - 1
    level = torch.round(x * 255).long().reshape(-1)
    u = rng.uniform(x.shape[1:], dtype=torch.float64).reshape(-1)
    cell = (u * cells).long().clamp_(max=cells - 1) + level * (cells + 1)
    k = _take(guide, cell).long()
    rows = level * size
    # Most cells hold no CDF step beyond their guide entry; binary-search the others.
    todo = (_take(cdf, rows + k) <= u).nonzero().squeeze(1)
    lo, hi = _take(k, todo) + 1, _take(guide, _take(cell, todo) + 1).long()
    u_todo, rows_todo = _take(u, todo), _take(rows, todo)
    while todo.numel() and bool((lo < hi).any()):
        mid = (lo + hi) // 2
        above = _take(cdf, rows_todo + mid) > u_todo
        hi = torch.where(above, mid, hi)
        lo = torch.where(above, lo, mid + 1)
    k.index_copy_(0, todo, lo)
    return k.view(x.shape).to(x.dtype) / photons


def impulse_noise(images, amount, *, rng):
    # uint8 in and out. One uniform per value: u < amount flips it (skimage's s&p), and given a
    # flip u/amount is uniform again, so u < amount/2 salts half of the flipped values.
    if _ops.use_compiled(images):
        from robustbench_pp.corruptions import _cpu

        out = torch.empty_like(images)
        # torch compares float32 u with the scalars rounded to float32; u = m·2**-24 < a <=> m < ceil(a·2**24)
        below = [np.int32(math.ceil(float(np.float32(a)) * 2**24)) for a in (amount, amount / 2)]
        _cpu.impulse_noise(images.numpy(), rng.bits(images.shape[1:]).numpy(), *below, out.numpy())
        return out
    x = _ops.to_unit(images)
    u = rng.uniform(x.shape[1:])
    return _ops.unit_to_uint8(torch.where(u < amount, (u < amount / 2).to(x.dtype), x))


def speckle_noise(x, sigma, *, rng):
    return x.addcmul_(x, rng.normal(x.shape[1:], std=sigma))


# --------------------------------------------------------------------------- blur


@lru_cache(maxsize=32)
def defocus_blur(images, radius, alias_blur, *, rng=None):
    # uint8 in and out. On CPU the disk as sums of grey levels over its rows, then the aliasing
    # blur (no FFT); elsewhere one FFT correlation with the whole kernel.
    if _ops.use_compiled(images):
        from robustbench_pp.corruptions import _cpu

        h, w = images.shape[-2:]
        out = torch.empty_like(images)
        *parts, reach = _disk.disk_parts(float(radius), float(alias_blur))
        _cpu.defocus_blur(images.numpy(), *parts, _ops.boundary_index(h, reach, "mirror"),
                          _ops.boundary_index(w, reach, "mirror"), reach, out.numpy())
        return out
    kernel = _disk.disk_kernel(float(radius), float(alias_blur))
    return _ops.unit_to_uint8(_ops.fft_filter2d(_ops.to_unit(images), kernel, mode="mirror"))


def glass_blur(x, sigma, max_delta, iterations, *, rng):
    # The reference's "swap" x[h,w], x[h',w'] = x[h',w'], x[h,w] aliases numpy views, so it
    # copies x[h',w'] into x[h,w]. Sequentially (rows then columns, descending) a pixel may copy
    # an already-updated pixel: we resolve those chains exactly, for all pixels at once.
    x8 = torch.floor(_ops.gaussian_blur(x, sigma) * 255)
    n, c, h, w = x8.shape
    rows = torch.arange(h - max_delta, max_delta, -1, device=x.device)
    cols = torch.arange(w - max_delta, max_delta, -1, device=x.device)
    compiled = _ops.use_compiled(x8)
    for _ in range(int(iterations)):
        offsets = rng.integers(-max_delta, max_delta, (2, len(rows), len(cols)), dtype=torch.int32 if compiled else torch.int64)
        if compiled:  # the sequential loop itself
            from robustbench_pp.corruptions import _cpu

            _cpu.glass_copies(x8.numpy(), offsets.numpy(), int(max_delta))
            continue
        src_row = rows[None, :, None] + offsets[:, 1]
        src_col = cols[None, None, :] + offsets[:, 0]
        x8 = _copy_chains(x8, rows, cols, src_row, src_col)
    return _ops.gaussian_blur(x8 / 255, sigma)


def _copy_chains(x8, rows, cols, src_row, src_col):
    n, c, h, w = x8.shape
    base = torch.arange(n, device=x8.device)[:, None] * (h * w)  # pixel ids are global
    targets = ((rows[:, None] * w + cols[None, :]).reshape(1, -1) + base).reshape(-1)
    sources = ((src_row * w + src_col).reshape(n, -1) + base).reshape(-1)
    in_region = (src_row >= rows[-1]) & (src_row <= rows[0]) & (src_col >= cols[-1]) & (src_col <= cols[0])
    # Processed earlier = a later row, or the same row and a later column (descending scans).
    later_row = src_row > rows[None, :, None]
    earlier = in_region & (later_row | ((src_row == rows[None, :, None]) & (src_col > cols[None, None, :])))
    # For every pixel: whom it copies from (itself outside the region), and whether that pixel
    # was updated before it. (index_copy_/take: much faster on CPU than tensor[index] syntax.)
    copy_from = torch.arange(n * h * w, device=x8.device).index_copy_(0, targets, sources)
    follows = torch.zeros(n * h * w, dtype=torch.bool, device=x8.device)
    follows.index_copy_(0, targets, earlier.reshape(-1))
    # Walk every chain of already-updated pixels to its end, touching only unfinished chains.
    current = torch.arange(n * h * w, device=x8.device)
    active = follows.nonzero().squeeze(1)
    while active.numel():
        current.index_copy_(0, active, _take(copy_from, _take(current, active)))
        active = active.masked_select(_take(follows, _take(current, active)))
    source = (_take(copy_from, current).view(n, h * w) - base)[:, None, :].expand(n, c, -1)
    return x8.reshape(n, c, h * w).gather(2, source).reshape(n, c, h, w)


def motion_blur(x, radius, sigma, *, rng):
    angles = rng.uniform((), -45.0, 45.0)
    return _ops.motion_blur(x, int(radius), sigma, angles)


def zoom_blur(x, end, step, *, rng=None):
    h, w = x.shape[-2:]
    zooms = np.arange(1, end, step)
    if _ops.use_compiled(x):
        from robustbench_pp.corruptions import _cpu

        out = torch.empty_like(x)
        _cpu.zoom_blur(x.contiguous().numpy(), *_zoom_taps(h, float(end), float(step)), *_zoom_runs(w, float(end), float(step)),
                       _zoom_taps(w, float(end), float(step))[2], out.numpy())
        return out
    out = x.clone()
    for zoom in zooms:
        out += _ops.clipped_zoom(x, float(zoom))[..., :h, :w]
    return out / (len(zooms) + 1)


@lru_cache(maxsize=64)
def _zoom_taps(size: int, end: float, step: float):
    """Per zoom of np.arange(1, end, step): each output position's two source positions and the
    second one's weight (scipy.ndimage.zoom order 1 of the centre crop, as _ops.clipped_zoom)."""
    first, second, weight = [], [], []
    for zoom in np.arange(1, end, step):
        crop = math.ceil(size / zoom)
        start, out_size = (size - crop) // 2, int(round(crop * zoom))
        source = np.arange(size) * ((crop - 1) / (out_size - 1) if out_size > 1 else 0.0)
        low = np.minimum(np.floor(source).astype(np.int64), crop - 1)
        first.append(start + low)
        second.append(start + np.minimum(low + 1, crop - 1))
        weight.append((source - low).astype(np.float32))
    return np.stack(first), np.stack(second), np.stack(weight)


@lru_cache(maxsize=64)
def _zoom_runs(size: int, end: float, step: float):
    """The column taps of :func:`_zoom_taps` as runs along which the first tap is j + offset:
    (zooms × runs × (first j, end j, offset), runs per zoom)."""
    first = _zoom_taps(size, end, step)[0]
    runs = []
    for taps in first:
        breaks = np.flatnonzero(np.diff(taps - np.arange(size)) != 0) + 1
        edges = np.concatenate([[0], breaks, [size]])
        runs.append([(a, b, taps[a] - a) for a, b in zip(edges[:-1], edges[1:])])
    table = np.zeros((len(runs), max(len(r) for r in runs), 3), np.int64)
    for z, zoom_runs in enumerate(runs):
        table[z, : len(zoom_runs)] = zoom_runs
    return table, np.array([len(r) for r in runs], np.int64)


def gaussian_blur(x, sigma, *, rng=None):
    return _ops.gaussian_blur(x, sigma)


# --------------------------------------------------------------------------- weather


def snow(x, loc, scale, zoom, threshold, radius, sigma, blend, *, rng):
    h, w = x.shape[-2:]
    layer = rng.normal((1, h, w), mean=loc, std=scale)
    layer = _ops.clipped_zoom(layer, zoom)
    layer = torch.where(layer < threshold, torch.zeros_like(layer), layer).clamp(0, 1)
    layer = _ops.motion_blur(layer, int(radius), sigma, rng.uniform((), -135.0, -45.0))
    layer = (torch.round(layer * 255) / 255)[..., :h, :w]
    x = blend * x + (1 - blend) * torch.maximum(x, _ops.gray(x) * 1.5 + 0.5)
    return x + layer + layer.flip(-1, -2)


_FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")


@lru_cache(maxsize=8)
def _frost_textures(scale: float, device: str = "cpu") -> tuple[torch.Tensor, ...]:
    """The five frost textures used by the originals (3×h×w floats, 0..255), resized by ``scale``."""
    import importlib.resources

    from PIL import Image

    textures = []
    folder = importlib.resources.files("imagecorruptions") / "frost"
    for filename in _FROST_FILES:
        with importlib.resources.as_file(folder / filename) as path, Image.open(path) as image:
            rgb = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32).copy())
        texture = rgb.permute(2, 0, 1)
        if scale != 1.0:  # cv2.resize(fx=fy=scale), bilinear without anti-aliasing
            texture = F.interpolate(texture[None], scale_factor=scale, mode="bilinear", align_corners=False, recompute_scale_factor=False)[0]
        textures.append(texture.to(device))
    return tuple(textures)


def _fitted_texture(texture: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """A texture at least h×w: enlarged (bicubic, ×1.1 margin) only if the image is larger."""
    th, tw = texture.shape[-2:]
    if th > h and tw > w:
        return texture
    factor = max(h / th, w / tw, 1.0) * 1.1
    size = (math.ceil(th * factor), math.ceil(tw * factor))
    return F.interpolate(texture[None], size=size, mode="bicubic", align_corners=False)[0]


def frost(x, image_coef, frost_coef, texture_scale, *, rng):
    h, w = x.shape[-2:]
    textures = [_fitted_texture(t, h, w) for t in _frost_textures(float(texture_scale), str(x.device))]
    choice = rng.integers(0, len(textures), ())
    starts = rng.uniform((2,))  # crop position as a fraction of the free range
    crops = []
    for k, (top_fraction, left_fraction) in zip(choice.tolist(), starts.tolist()):
        t = textures[k]
        top = int(top_fraction * (t.shape[-2] - h))
        left = int(left_fraction * (t.shape[-1] - w))
        crops.append(t[:, top : top + h, left : left + w])
    return image_coef * x + frost_coef * torch.stack(crops) / 255


def fog(x, strength, wibble_decay, map_size, *, rng):
    h, w = x.shape[-2:]
    size = max(int(map_size), _ops.next_power_of_two(max(h, w)))
    plasma = _ops.plasma_fractal(rng, size, wibble_decay)[:, None, :h, :w]
    peak = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x + strength * plasma) * peak / (peak + strength)


# --------------------------------------------------------------------------- digital


def brightness(x, amount, *, rng=None):
    return _ops.add_to_value(x, amount)


def contrast(x, factor, *, rng=None):
    means = x.mean(dim=(2, 3), keepdim=True)
    return x.mul_(factor).add_(means * (1 - factor))


def saturate(x, factor, offset, *, rng=None):
    return _ops.scale_saturation(x, factor, offset)


def elastic_transform(x, alpha, sigma, affine, *, rng):
    n, _, h, w = x.shape
    # Random affine: three points around the centre jittered by U(-affine, affine), OpenCV-style
    # (x, y) pairs built from (row, col) sizes as the original did; sampled with BORDER_REFLECT_101.
    centre = torch.tensor([h // 2, w // 2], dtype=torch.float64)
    half = min(h, w) // 3
    anchors = torch.stack([centre + half, torch.stack([centre[0] + half, centre[1] - half]), centre - half])
    jitter = rng.uniform((3, 2), -affine, affine).double().cpu()
    moved = anchors + jitter
    ones = torch.ones(n, 3, 1, dtype=torch.float64)
    # dst -> src affine: solves [moved 1] · A = anchors for every image.
    inverse = torch.linalg.solve(torch.cat([moved, ones], dim=2), anchors.expand(n, 3, 2))
    # Elastic stage: smoothed U(-1, 1) displacements × alpha, sampled with scipy's "reflect".
    fields = _ops.gaussian_blur(rng.uniform((2, h, w), -1.0, 1.0), sigma, mode="reflect", truncate=3.0) * alpha
    if _ops.use_compiled(x):  # both bilinear samplings in one compiled pass per image
        from robustbench_pp.corruptions import _cpu

        out = torch.empty_like(x)
        _cpu.elastic_sample(x.contiguous().numpy(), inverse.contiguous().numpy(), fields.contiguous().numpy(), out.numpy())
        return out
    gy, gx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    dst = torch.stack([gx, gy, torch.ones_like(gx)], dim=-1).reshape(1, h * w, 3)
    src = (dst @ inverse).reshape(n, h, w, 2)
    grid = torch.stack([2 * src[..., 0] / (w - 1) - 1, 2 * src[..., 1] / (h - 1) - 1], dim=-1)
    x = F.grid_sample(x, grid.to(x.device, x.dtype), mode="bilinear", padding_mode="reflection", align_corners=True)
    rows = torch.arange(h, device=x.device, dtype=x.dtype)[:, None] + fields[:, 1]
    cols = torch.arange(w, device=x.device, dtype=x.dtype)[None, :] + fields[:, 0]
    grid = torch.stack([(2 * cols + 1) / w - 1, (2 * rows + 1) / h - 1], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def pixelate(images, factor, *, rng=None):
    # uint8 in, uint8 out: Pillow's BOX filter down and BOX up, in its own fixed-point arithmetic.
    h, w = images.shape[-2:]
    small_h, small_w = int(h * factor), int(w * factor)
    if _ops.use_compiled(images):
        from robustbench_pp.corruptions import _cpu

        out = torch.empty_like(images)
        _cpu.pixelate(images.numpy(), *_box_taps(w, small_w), *_box_taps(h, small_h), _box_up_index(small_h, h),
                      _box_up_index(small_w, w), out.numpy())
        return out
    small = _box.pil_box_resize(images.to(torch.float64), small_h, small_w)
    return _box.pil_box_resize(small, h, w).to(torch.uint8)


@lru_cache(maxsize=64)
def _box_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's BOX taps as (input index, int32 weight) tables, padding taps clamped and weighted 0."""
    first, weights = _box.pil_box_coefficients(in_size, out_size)
    weights = weights[:, : int(np.flatnonzero(weights.any(axis=0))[-1]) + 1]  # Pillow's table has spare taps
    index = np.minimum(first[:, None] + np.arange(weights.shape[1])[None, :], in_size - 1)
    return index.astype(np.int64), weights.astype(np.int32)


@lru_cache(maxsize=64)
def _box_up_index(in_size: int, out_size: int) -> np.ndarray:
    """Enlarging with Pillow's BOX filter gives every output pixel one input pixel, weight 1: this one."""
    first, weights = _box.pil_box_coefficients(in_size, out_size)
    assert (weights[:, 0] == 1 << 22).all() and not weights[:, 1:].any(), "BOX enlarging is a copy"
    return first


def jpeg_compression(images, quality, *, rng=None):
    # uint8 in, uint8 out: no float round trip around the codec.
    from robustbench_pp.corruptions.jpeg import jpeg_roundtrip

    return jpeg_roundtrip(images, quality=int(quality))


# Kernels that take and return the uint8 batch itself (their outputs are whole grey levels).
UINT8_KERNELS = frozenset({"shot_noise", "impulse_noise", "defocus_blur", "pixelate", "jpeg_compression"})


# --------------------------------------------------------------------------- spatter


def spatter(x, loc, scale, sigma, threshold, intensity, mode, *, rng):
    h, w = x.shape[-2:]
    liquid = _ops.gaussian_blur(rng.normal((1, h, w), mean=loc, std=scale), sigma)
    liquid = torch.where(liquid < threshold, torch.zeros_like(liquid), liquid)
    if int(mode) == 0:
        water = x.new_tensor([175, 238, 238]).view(1, 3, 1, 1) / 255
        return x + _spatter.water_mask(liquid, intensity) * water
    mud = _ops.gaussian_blur((liquid > threshold).to(x.dtype), intensity)
    mud = torch.where(mud < 0.8, torch.zeros_like(mud), mud)
    brown = x.new_tensor([63, 42, 20]).view(1, 3, 1, 1) / 255
    return x * (1 - mud) + brown * mud


KERNELS = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "defocus_blur": defocus_blur,
    "glass_blur": glass_blur,
    "motion_blur": motion_blur,
    "zoom_blur": zoom_blur,
    "snow": snow,
    "frost": frost,
    "fog": fog,
    "brightness": brightness,
    "contrast": contrast,
    "elastic_transform": elastic_transform,
    "pixelate": pixelate,
    "jpeg_compression": jpeg_compression,
    "speckle_noise": speckle_noise,
    "gaussian_blur": gaussian_blur,
    "spatter": spatter,
    "saturate": saturate,
}
