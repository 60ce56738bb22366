"""Batched building blocks of the corruption kernels (torch, any device).

Every function takes and returns float tensors N×C×H×W (values in [0, 1] unless said
otherwise) and treats each image of the batch independently, so that an image's result never
depends on the batch it was processed in.
"""

from __future__ import annotations

import hashlib
import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

# --------------------------------------------------------------------------- randomness


def image_seed(seed: int, name: str, severity: int, index: int) -> int:
    """A 63-bit seed that depends only on (seed, corruption name, severity, global image index)."""
    digest = hashlib.blake2b(f"{seed}/{name}/{severity}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


class ImageRandomness:
    """One torch.Generator per image: draws are stacked along a new leading batch dimension.

    Every kernel draws the same sequence of shapes for every image, so image i's numbers depend
    only on its own generator (hence on its seed), never on its neighbours in the batch.

    On the CPU, uniform numbers are made from the generator's raw integer draws (``random_``,
    2-3x faster than ``uniform_``) with torch's own transformation: the same numbers, the same
    generator state afterwards (tests/test_corruptions.py checks both).
    """

    def __init__(self, seeds: list[int], device: torch.device):
        self.device = torch.device(device)
        self.generators = [torch.Generator(device=self.device).manual_seed(s) for s in seeds]

    def _fill(self, shape, fill, dtype=torch.float32) -> torch.Tensor:
        if not self.generators:
            raise ValueError("no images to draw for")
        out = torch.empty((len(self.generators),) + tuple(shape), dtype=dtype, device=self.device)
        for image, g in zip(out, self.generators):
            fill(image, g)
        return out

    def _compiled(self, shape, words_per_draw: int = 1) -> bool:
        """Whether to draw in compiled code: on the CPU, and for draws large enough to repay
        reading and writing each generator's state (small ones are faster in torch; the
        numbers are the same either way)."""
        if self.device.type != "cpu" or not COMPILED_CPU_LOOPS or words_per_draw * math.prod(shape) < COMPILED_MIN_WORDS:
            return False
        from robustbench_pp.corruptions import _mt19937

        return _mt19937.available()

    def bits(self, shape, wide: bool = False) -> torch.Tensor:
        """Raw draws: int32 (one 32-bit draw each, top bit dropped) or, ``wide``, int64 (one 64-bit draw)."""
        if self.generators and self._compiled(shape, 2 if wide else 1):  # torch's stream, drawn in compiled code
            from robustbench_pp.corruptions import _mt19937

            return _mt19937.draw(self.generators, shape, "wide" if wide else "bits")
        return self._fill(shape, lambda image, g: image.random_(generator=g), torch.int64 if wide else torch.int32)

    def uniform(self, shape, low: float = 0.0, high: float = 1.0, dtype=torch.float32) -> torch.Tensor:
        """U(low, high) of shape N×shape (float32 unless ``dtype`` says otherwise)."""
        if self.device.type != "cpu" or dtype not in (torch.float32, torch.float64):
            return self._fill(shape, lambda image, g: image.uniform_(low, high, generator=g), dtype)
        return uniform_from_bits(self.bits(shape, wide=dtype == torch.float64), low, high, dtype)

    def normal(self, shape, mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
        """N(mean, std²) of shape N×shape (float32)."""
        return self._fill(shape, lambda image, g: image.normal_(mean, std, generator=g))

    def integers(self, low: int, high: int, shape, dtype=torch.int64) -> torch.Tensor:
        """Integers in [low, high) of shape N×shape (on the CPU drawn as int32: the same numbers)."""
        if self.generators and 0 < high - low < 2**31 and self._compiled(shape):
            from robustbench_pp.corruptions import _mt19937

            return _mt19937.draw(self.generators, shape, ("range", low, high - low)).to(dtype)
        drawn = torch.int64 if self.device.type != "cpu" or high - low >= 2**31 else torch.int32
        return self._fill(shape, lambda image, g: image.random_(low, high, generator=g), drawn).to(dtype)

    def poisson(self, rates: torch.Tensor) -> torch.Tensor:
        """Poisson draws with per-element rates (rates has the leading batch dimension)."""
        return torch.stack([torch.poisson(r, generator=g) for r, g in zip(rates, self.generators)])


def uniform_from_bits(bits: torch.Tensor, low: float = 0.0, high: float = 1.0, dtype=torch.float32) -> torch.Tensor:
    """torch's CPU ``uniform_`` from the raw draws of :meth:`ImageRandomness.bits`.

    torch keeps the low 24 (float32) or 53 (float64) bits of a draw, scales them to [0, 1) and
    computes ``x * (high - low) + low`` with the bounds rounded to the output type, rounding once
    (a fused multiply-add). float64 arithmetic gives that single rounding exactly.
    """
    if dtype == torch.float64:
        x = (bits & (2**53 - 1)).to(torch.float64).mul_(2.0**-53)
        return x if (low, high) == (0.0, 1.0) else x.mul_(high - low).add_(low)
    x = (bits & 0xFFFFFF).to(torch.float32).mul_(2.0**-24)  # exact: 24-bit integers times a power of two
    if (low, high) == (0.0, 1.0):
        return x
    lo, hi = np.float32(low), np.float32(high)
    return x.to(torch.float64).mul_(float(hi - lo)).add_(float(lo)).to(torch.float32)


# --------------------------------------------------------------------------- dtype conversions
# torch's CPU uint8 <-> float32 casts are several times slower than numpy's (SIMD) ones, and at
# 224 px they dominated the cheap corruptions; on other devices torch's casts are used.


def uint8_to_float(u8: torch.Tensor) -> torch.Tensor:
    """uint8 tensor -> contiguous float32 tensor with the same values (0..255)."""
    if u8.device.type == "cpu":
        return torch.from_numpy(u8.numpy().astype(np.float32, order="C"))
    return u8.to(torch.float32, memory_format=torch.contiguous_format)


def float_to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float tensor of values in [0, 255] -> uint8 by truncation (as np.uint8 does)."""
    if x.device.type == "cpu":
        return torch.from_numpy(x.numpy().astype(np.uint8))
    return x.to(torch.uint8)


# Added before truncating to uint8: float32 results that should be whole grey levels (JPEG,
# pixelate, exact identities) may land a few 1e-5 below them; the released data truncated
# float64 values, which land on them.
TRUNCATION_SLACK = 1e-3


def to_unit(u8: torch.Tensor) -> torch.Tensor:
    """uint8 batch -> float32 on the 0..1 scale (what every float kernel receives)."""
    if use_compiled(u8) and u8.is_contiguous():  # one pass instead of two, the same floats
        from robustbench_pp.corruptions import _cpu

        out = torch.empty(u8.shape, dtype=torch.float32)
        _cpu.levels_to_unit(u8.numpy().reshape(-1), out.numpy().reshape(-1))
        return out
    return _to_unit(u8)


def unit_to_uint8(y: torch.Tensor) -> torch.Tensor:
    """A kernel's 0..1 floats -> uint8: ×255, the slack, clipped to 0..255, truncated (may overwrite y)."""
    if y.dtype == torch.float32 and use_compiled(y) and y.is_contiguous():  # one pass, the same bytes
        from robustbench_pp.corruptions import _cpu

        out = torch.empty(y.shape, dtype=torch.uint8)
        _cpu.unit_row_to_uint8(y.numpy().reshape(-1), out.numpy().reshape(-1))
        return out
    return _unit_to_uint8(y)


def _to_unit(u8: torch.Tensor) -> torch.Tensor:
    return uint8_to_float(u8).div_(255)


def _unit_to_uint8(y: torch.Tensor) -> torch.Tensor:
    return float_to_uint8(y.mul_(255).add_(TRUNCATION_SLACK).clamp_(0, 255))


#: Run the compiled CPU loops (``_cpu.py``) for CPU batches. False runs the torch kernels there
#: too, as on other devices: the tests compare the two.
COMPILED_CPU_LOOPS = True

#: Per-image draws (32-bit words) below which torch's own ``random_`` is faster than the compiled
#: stream (it costs ~16 us per generator to read and write the state; measured crossover ~4000).
COMPILED_MIN_WORDS = 4096


def use_compiled(images: torch.Tensor) -> bool:
    """Whether a kernel should run its compiled CPU loop on this batch."""
    return compiled_on(images.device)


def compiled_on(device: torch.device) -> bool:
    """Whether the compiled CPU loops serve batches on ``device``."""
    return COMPILED_CPU_LOOPS and torch.device(device).type == "cpu" and levels_survive_round_trip()


@lru_cache(maxsize=1)
def levels_survive_round_trip() -> bool:
    """Whether every grey level v gives back v through to_unit, ×255 rounding and unit_to_uint8.

    The compiled CPU loops of noise kernels rely on it (they leave untouched pixels as they are
    and read grey level v's table row v); with a torch whose float arithmetic broke it they
    would fall back to the torch kernels.
    """
    levels = torch.arange(256, dtype=torch.uint8)
    unit = _to_unit(levels)
    return bool(torch.equal(_unit_to_uint8(unit.clone()), levels) and torch.equal(torch.round(unit * 255).to(torch.uint8), levels))


# --------------------------------------------------------------------------- boundaries, blurs


def boundary_index(n: int, pad: int, mode: str) -> np.ndarray:
    """Source index of each of the n + 2·pad positions of a padded axis, scipy.ndimage modes.

    "nearest" repeats the edge, "reflect" is half-sample symmetric (d c b a | a b c d),
    "mirror" is whole-sample symmetric (d c b | a b c d, OpenCV's BORDER_REFLECT_101).
    """
    i = np.arange(-pad, n + pad)
    if mode == "nearest" or n == 1:
        return np.clip(i, 0, n - 1)
    if mode == "reflect":
        i = np.mod(i, 2 * n)
        return np.where(i < n, i, 2 * n - 1 - i)
    if mode == "mirror":
        i = np.mod(i, 2 * n - 2)
        return np.where(i < n, i, 2 * n - 2 - i)
    raise ValueError(f"unknown boundary mode {mode!r}")


def pad2d(x: torch.Tensor, pad: int, mode: str) -> torch.Tensor:
    """Pad the last two dimensions by ``pad`` with a scipy.ndimage boundary mode (any pad size)."""
    rows = torch.as_tensor(boundary_index(x.shape[-2], pad, mode), device=x.device)
    cols = torch.as_tensor(boundary_index(x.shape[-1], pad, mode), device=x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


def gaussian_weights(sigma: float, truncate: float) -> np.ndarray:
    """scipy.ndimage's sampled, normalised Gaussian (radius = int(truncate·sigma + 0.5))."""
    radius = int(truncate * float(sigma) + 0.5)
    k = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (k / sigma) ** 2)
    return w / w.sum()


@lru_cache(maxsize=64)
def _filter_matrix(n: int, sigma: float, truncate: float, mode: str) -> np.ndarray:
    """Dense n×n matrix of a 1-D Gaussian filter with the boundary folded in."""
    w = gaussian_weights(sigma, truncate)
    radius = len(w) // 2
    src = boundary_index(n, radius, mode)
    matrix = np.zeros((n, n))
    rows = np.repeat(np.arange(n), len(w))
    cols = src[np.arange(n)[:, None] + np.arange(len(w))[None, :]].ravel()
    np.add.at(matrix, (rows, cols), np.tile(w, n))
    return matrix


# Kernels up to this many taps are applied as shifted sums (cheap, elementwise); longer ones
# as a dense matrix product, whose cost does not grow with sigma.
_MAX_SHIFTED_TAPS = 25


def _filter_axis(x: torch.Tensor, weights: np.ndarray, dim: int, mode: str, matrix_key) -> torch.Tensor:
    n = x.shape[dim]
    if len(weights) <= _MAX_SHIFTED_TAPS:
        radius = len(weights) // 2
        index = torch.as_tensor(boundary_index(n, radius, mode), device=x.device)
        padded = x.index_select(dim, index)
        out = padded.narrow(dim, 0, n) * float(weights[0])
        for k in range(1, len(weights)):
            out.add_(padded.narrow(dim, k, n), alpha=float(weights[k]))
        return out
    matrix = torch.as_tensor(_filter_matrix(n, *matrix_key), dtype=x.dtype, device=x.device)
    if dim == x.ndim - 1 or dim == -1:
        return x @ matrix.T
    return matrix @ x


def gaussian_blur(x: torch.Tensor, sigma: float, mode: str = "nearest", truncate: float = 4.0) -> torch.Tensor:
    """skimage.filters.gaussian over the last two dimensions (default mode "nearest", truncate 4)."""
    if sigma <= 1e-15:  # scipy skips such axes: the identity
        return x
    w = gaussian_weights(sigma, truncate)
    if len(w) <= _MAX_SHIFTED_TAPS and use_compiled(x):
        return _compiled_filter(x, w, mode)
    key = (float(sigma), float(truncate), mode)
    return _filter_axis(_filter_axis(x, w, x.ndim - 2, mode, key), w, x.ndim - 1, mode, key)


def box3(x: torch.Tensor) -> torch.Tensor:
    """OpenCV's cv2.blur with a 3×3 box (BORDER_REFLECT_101)."""
    w = np.full(3, 1 / 3)
    if use_compiled(x):
        return _compiled_filter(x, w, "mirror")
    return _filter_axis(_filter_axis(x, w, x.ndim - 2, "mirror", None), w, x.ndim - 1, "mirror", None)


def _compiled_filter(x: torch.Tensor, weights: np.ndarray, mode: str) -> torch.Tensor:
    """The shifted sums of :func:`_filter_axis` along both axes as one compiled loop (same bytes)."""
    from robustbench_pp.corruptions import _cpu

    h, w = x.shape[-2:]
    radius = len(weights) // 2
    taps = weights.astype(np.float32)  # torch rounds the scalar weights to float32 too
    planes = x.to(torch.float32).contiguous().reshape(-1, h, w)
    out = torch.empty_like(planes)
    _cpu.separable_filter(planes.numpy(), taps, boundary_index(h, radius, mode), taps, boundary_index(w, radius, mode), out.numpy())
    return out.reshape(x.shape)


def fft_filter2d(x: torch.Tensor, kernel: torch.Tensor, mode: str = "mirror") -> torch.Tensor:
    """Correlate every channel with a centred, odd-sized, symmetric 2-D kernel via the FFT."""
    r = kernel.shape[-1] // 2
    padded = pad2d(x, r, mode)
    size = padded.shape[-2:]
    spectrum = torch.fft.rfft2(padded, s=size) * torch.fft.rfft2(kernel.to(x.device, x.dtype), s=size)
    full = torch.fft.irfft2(spectrum, s=size)
    return full[..., 2 * r :, 2 * r :]


# --------------------------------------------------------------------------- geometry


def clipped_zoom(x: torch.Tensor, zoom: float) -> torch.Tensor:
    """Centre crop of size ceil(side/zoom), zoomed back by ``zoom`` (scipy.ndimage.zoom, order 1).

    scipy maps output o to input o·(in−1)/(out−1): bilinear with align_corners=True.
    The result is at least as large as x (not cropped back).
    """
    h, w = x.shape[-2:]
    ch, cw = math.ceil(h / zoom), math.ceil(w / zoom)
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = x[..., top : top + ch, left : left + cw]
    size = (int(round(ch * zoom)), int(round(cw * zoom)))
    return F.interpolate(crop, size=size, mode="bilinear", align_corners=True)


def motion_blur(x: torch.Tensor, radius: int, sigma: float, angles_deg: torch.Tensor) -> torch.Tensor:
    """imagecorruptions' numpy motion blur: Gaussian-weighted copies shifted along each image's angle.

    Copies shifted by (dx, dy) repeat the edge (np.roll plus edge fill); taps stop where the shift
    reaches the image size, as in the reference.
    """
    width = 2 * radius + 1
    taps = np.exp(-(np.arange(width) ** 2) / (2 * sigma**2))
    taps /= taps.sum()
    h, w = x.shape[-2:]
    # The reference's arithmetic, step by step, so that half-pixel ties round the same way.
    angles = np.deg2rad(np.asarray(angles_deg.tolist(), dtype=np.float64))
    point_y, point_x = width * np.sin(angles), width * np.cos(angles)
    hypot = np.hypot(point_y, point_x)[:, None]
    i = np.arange(width)[None, :]
    dy = -np.ceil(((i * point_y[:, None]) / hypot) - 0.5).astype(np.int64)
    dx = -np.ceil(((i * point_x[:, None]) / hypot) - 0.5).astype(np.int64)
    # Taps from the first shift that reaches the image size on are dropped.
    inside = np.cumprod((np.abs(dy) < h) & (np.abs(dx) < w), axis=1).astype(bool)
    if h * w <= 64 * 64:
        return _motion_blur_gather(x, taps, dy, dx, inside)
    if use_compiled(x):
        from robustbench_pp.corruptions import _cpu

        out = torch.empty_like(x, dtype=torch.float32)
        _cpu.motion_blur(x.to(torch.float32).contiguous().numpy(), taps.astype(np.float32), dy, dx, inside, out.numpy())
        return out
    pad = width
    padded = pad2d(x, pad, "nearest")
    out = torch.zeros_like(x)
    for n in range(x.shape[0]):
        acc = out[n]
        for k in np.flatnonzero(inside[n]):
            a, b = pad - dy[n, k], pad - dx[n, k]
            acc.add_(padded[n, :, a : a + h, b : b + w], alpha=float(taps[k]))
    return out


def _motion_blur_gather(x, taps, dy, dx, inside):
    """Small images: every tap for the whole batch at once, with clamped row/column gathers."""
    n, c, h, w = x.shape
    rows = torch.as_tensor(np.clip(np.arange(h)[None, None, :] - dy[:, :, None], 0, h - 1), device=x.device)
    cols = torch.as_tensor(np.clip(np.arange(w)[None, None, :] - dx[:, :, None], 0, w - 1), device=x.device)
    weights = torch.as_tensor(np.where(inside, taps[None, :], 0.0), dtype=x.dtype, device=x.device)
    out = torch.zeros_like(x)
    for k in range(taps.shape[0]):
        if not inside[:, k].any():
            break
        shifted = x.gather(2, rows[:, k][:, None, :, None].expand(n, c, h, w))
        shifted = shifted.gather(3, cols[:, k][:, None, None, :].expand(n, c, h, w))
        out.addcmul_(shifted, weights[:, k].view(n, 1, 1, 1))
    return out


# --------------------------------------------------------------------------- noise fields


def plasma_fractal(rng: ImageRandomness, mapsize: int, wibble_decay: float) -> torch.Tensor:
    """Diamond-square height maps N×mapsize×mapsize in [0, 1] (the ImageNet-C fog field)."""
    n = len(rng.generators)
    if compiled_on(rng.device):  # one draw per image, one compiled loop
        from robustbench_pp.corruptions import _cpu

        levels = [mapsize >> k for k in range(mapsize.bit_length()) if mapsize >> k >= 2]
        counts = [3 * (mapsize // step) ** 2 for step in levels]
        noise = rng.uniform((sum(counts),), -1.0, 1.0)  # the per-level draws, consecutive
        scales, wibble = [], 100.0
        for _ in levels:
            scales.append(np.float32(wibble * wibble))  # the scalar torch multiplies float32 noise by
            wibble /= wibble_decay
        field = torch.empty(n, mapsize, mapsize)
        _cpu.plasma_fractal(noise.numpy(), np.asarray(scales, np.float32), field.numpy())
        return field
    field = torch.zeros(n, mapsize, mapsize, device=rng.device)
    step, wibble = mapsize, 100.0
    while step >= 2:
        half = step // 2
        cells = mapsize // step
        noise = rng.uniform((3, cells, cells), -1.0, 1.0) * (wibble * wibble)
        corners = field[:, 0::step, 0::step]
        squares = corners + corners.roll(-1, 1)
        squares = squares + squares.roll(-1, 2)
        field[:, half::step, half::step] = squares / 4 + noise[:, 0]
        centres = field[:, half::step, half::step]
        corners = field[:, 0::step, 0::step]
        left = (centres + centres.roll(1, 1)) + (corners + corners.roll(-1, 2))
        field[:, 0::step, half::step] = left / 4 + noise[:, 1]
        top = (centres + centres.roll(1, 2)) + (corners + corners.roll(-1, 1))
        field[:, half::step, 0::step] = top / 4 + noise[:, 2]
        step //= 2
        wibble /= wibble_decay
    field = field - field.amin(dim=(1, 2), keepdim=True)
    return field / field.amax(dim=(1, 2), keepdim=True)


def next_power_of_two(x: int) -> int:
    return 1 if x <= 1 else 2 ** (int(x) - 1).bit_length()


# --------------------------------------------------------------------------- colour


def gray(x: torch.Tensor) -> torch.Tensor:
    """Luma N×1×H×W as OpenCV's RGB2GRAY (0.299 R + 0.587 G + 0.114 B)."""
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def add_to_value(x: torch.Tensor, amount: float) -> torch.Tensor:
    """RGB→HSV, V ← clip(V + amount, 0, 1), HSV→RGB; with H and S fixed RGB scales with V."""
    value = x.amax(dim=1, keepdim=True)
    new_value = (value + amount).clamp(0, 1)
    scale = new_value / value.clamp_min(1e-12)
    return torch.where(value > 0, x * scale, new_value.expand_as(x))


def scale_saturation(x: torch.Tensor, factor: float, offset: float) -> torch.Tensor:
    """RGB→HSV, S ← clip(S·factor + offset, 0, 1), HSV→RGB (skimage conventions).

    With H and V fixed, V − RGB scales with S; grey pixels (S = 0) have hue 0 (red) in skimage.
    """
    value = x.amax(dim=1, keepdim=True)
    chroma = value - x.amin(dim=1, keepdim=True)
    sat = torch.where(value > 0, chroma / value.clamp_min(1e-12), torch.zeros_like(value))
    new_sat = (sat * factor + offset).clamp(0, 1)
    coloured = value - (value - x) * (new_sat / sat.clamp_min(1e-12))
    grey_base = value * (1 - new_sat)
    greys = torch.cat([value, grey_base, grey_base], dim=1)
    return torch.where(chroma > 0, coloured, greys)


