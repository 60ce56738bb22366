"""PRIME (Modas et al., ECCV 2022): max-entropy spectral, spatial and colour primitives, mixed.

Two configurations (``PRIME_CONFIGS``):

- ``cifar``: the PRIME paper's CIFAR settings with every random parameter drawn per image
  (this package's CIFAR-size PRIME);
- ``imagenet``: the PRIME paper's ImageNet settings as the PushPull-Net runs used them
  (protocol section 4): each primitive call draws its parameters once for the whole batch
  (the diffeomorphism's cut-off and temperature from Beta(½, ½) distributions over their
  ranges, with one displacement field for all images; the colour map's cut-off up to 500,
  temperature up to 0.05 and a band of 20 consecutive frequencies; the filter's σ up to 4),
  while kernels, colour coefficients, chain depths, primitive choices and mixing weights stay
  per image. The PushPull-Net code ran PRIME on ImageNet only.

Both mix AugMix-style: ``(1−m)·x + m·Σ_i w_i·chain_i(x)`` over 3 chains of depth 1..3,
w ~ Dirichlet(1), m ~ Beta(1, 1), per image. Batches are float N×3×H×W in [0, 1]; randomness
comes from torch's global generator (re-seeded by the training loop every epoch).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# --- The CIFAR configuration: parameters drawn per image ---
# Random filters 3×3 with σ ≤ 4, diffeomorphisms with cut-off 2..100 and temperature in the
# no-overhang range, smooth colour with ≤ 100 frequencies and temperature ≤ 0.01.


def prime_random_filter(images: torch.Tensor, max_sigma: float = 4.0, kernel_size: int = 3) -> torch.Tensor:
    """Spectral primitive: convolve each image with δ + σ·N(0, 1) (one k×k kernel per image, all channels).

    σ ~ U(0, max_sigma) per image; the δ sits at the kernel centre. Output clipped to [0, 1].
    """
    n, c, h, w = images.shape
    sigma = torch.rand(n, device=images.device) * max_sigma
    kernels = torch.randn(n, kernel_size, kernel_size, device=images.device) * sigma[:, None, None]
    kernels[:, kernel_size // 2, kernel_size // 2] += 1.0
    weight = kernels.repeat_interleave(c, dim=0)[:, None].to(images.dtype)
    out = F.conv2d(images.reshape(1, n * c, h, w), weight, padding=kernel_size // 2, groups=n * c)
    return out.reshape(n, c, h, w).nan_to_num(1.0).clamp(0.0, 1.0)


def prime_smooth_color(images: torch.Tensor, max_cut: int = 100, max_temperature: float = 0.01) -> torch.Tensor:
    """Colour primitive: per channel x ↦ x + Σ_{k≤cut} β_k sin(πkx), β_k ~ N(0, T).

    cut ~ U{1..max_cut} and T ~ U(0, max_temperature) per image. Output clipped to [0, 1].
    """
    n, c = images.shape[:2]
    cut = torch.randint(1, max_cut + 1, (n,), device=images.device)
    temperature = torch.rand(n, device=images.device) * max_temperature
    freqs = torch.arange(1, max_cut + 1, device=images.device)
    coeff = torch.randn(n, c, max_cut, device=images.device) * temperature.sqrt()[:, None, None]
    coeff = coeff * (freqs[None, :] <= cut[:, None])[:, None, :]
    theta = math.pi * images
    # sin(kθ) by the recurrence sin((k+1)θ) = 2cosθ·sin(kθ) − sin((k−1)θ): one sin and one cos in all.
    two_cos, previous, current = 2 * torch.cos(theta), torch.zeros_like(theta), torch.sin(theta)
    out = images.clone()
    for k in range(max_cut):
        out = out + coeff[:, :, k, None, None] * current
        previous, current = current, two_cos * current - previous
    return out.clamp(0.0, 1.0)


def _temperature_range(side: int, cut: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Petrini et al. (2021): T_min gives a typical displacement of half a pixel; T_max is the
    # largest temperature without overhangs (the map stays a diffeomorphism).
    log_cut = torch.log(cut.double() + 1e-6)
    t_min = 1.0 / (math.pi * side**2 * log_cut)
    t_max = 4.0 / (math.pi**3 * cut.double() ** 2 * log_cut)
    return t_min, torch.maximum(t_min, t_max)


def _warp(images: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """``images`` resampled at (x − dx, y − dy): bilinear, border clamped; dx, dy are N×H×W or one H×W field."""
    n, c, h, w = images.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=images.device), torch.arange(w, device=images.device), indexing="ij")
    src_x = (xs - dx).clamp(0, w - 1)
    src_y = (ys - dy).clamp(0, h - 1)
    grid = torch.stack([src_x / (w - 1) * 2 - 1, src_y / (h - 1) * 2 - 1], dim=-1).to(images.dtype)
    return F.grid_sample(images, grid.expand(n, h, w, 2), mode="bilinear", padding_mode="border", align_corners=True)


def prime_diffeomorphism(images: torch.Tensor, cut_min: int = 2, cut_max: int = 100) -> torch.Tensor:
    """Spatial primitive: warp by a random smooth displacement field (max-entropy diffeomorphism).

    Each of the two displacement components is Σ_{i²+j²<(cut+½)²} C_ij/√(i²+j²)·sin(iπx)sin(jπy)
    with C_ij ~ N(0, 1), scaled by √T·side; cut ~ U{cut_min..cut_max}, T ~ U(T_min, T_max) per
    image. Bilinear resampling with border clamping. Square images only.

    Raises:
        ValueError: for non-square images.
    """
    n, c, h, w = images.shape
    if h != w:
        raise ValueError(f"prime_diffeomorphism needs square images, got {h}×{w}")
    device = images.device
    cut = torch.randint(cut_min, cut_max + 1, (n,), device=device)
    t_min, t_max = _temperature_range(w, cut)
    temperature = (t_min + torch.rand(n, device=device, dtype=torch.float64) * (t_max - t_min)).float()
    k = torch.arange(1, cut_max + 1, device=device, dtype=torch.float32)
    radius = (k[:, None] ** 2 + k[None, :] ** 2).sqrt()
    energy = (radius[None] < cut[:, None, None] + 0.5) / radius[None]  # N×M×M
    coords = torch.linspace(0, 1, w, device=device)
    modes = torch.sin(math.pi * coords[:, None] * k[None, :])  # side×M
    fields = []
    for _ in range(2):
        coeff = torch.randn(n, cut_max, cut_max, device=device) * energy
        fields.append(torch.einsum("bij,xi,yj->byx", coeff, modes, modes) * (temperature.sqrt() * w)[:, None, None])
    return _warp(images, *fields)


PRIME_PRIMITIVES = (prime_random_filter, prime_smooth_color, prime_diffeomorphism)


# --- The ImageNet configuration: parameters drawn once per batch ---


def _beta_half(device) -> float:
    """One draw of Beta(½, ½): PRIME's s = r = 1 setting (s = α + β, r = α / β)."""
    return float(torch.distributions.Beta(torch.tensor(0.5, device=device), torch.tensor(0.5, device=device)).sample())


def batch_random_filter(images: torch.Tensor, max_sigma: float = 4.0, kernel_size: int = 3) -> torch.Tensor:
    """Spectral primitive, σ ~ U(0, max_sigma) once per batch: each image convolved with its own δ + σ·N(0, 1)."""
    n, c, h, w = images.shape
    sigma = float(torch.rand((), device=images.device)) * max_sigma
    kernels = torch.randn(n, kernel_size, kernel_size, device=images.device) * sigma
    kernels[:, kernel_size // 2, kernel_size // 2] += 1.0
    weight = kernels.repeat_interleave(c, dim=0)[:, None].to(images.dtype)
    out = F.conv2d(images.reshape(1, n * c, h, w), weight, padding=kernel_size // 2, groups=n * c)
    return out.reshape(n, c, h, w).nan_to_num(1.0).clamp(0.0, 1.0)


def batch_smooth_color(images: torch.Tensor, max_cut: int = 500, max_temperature: float = 0.05,
                       band: int = 20) -> torch.Tensor:
    """Colour primitive, x ↦ x + Σ_k β_k sin(πkx) over a band of ``band`` consecutive frequencies.

    Per batch: cut ~ U{1..max_cut}, T ~ U(0, max_temperature), the band's first frequency
    ~ U{1..cut} (the band ends at cut at the latest); per image and channel: β_k ~ N(0, T).
    """
    n, c = images.shape[:2]
    device = images.device
    cut = int(torch.randint(1, max_cut + 1, (), device=device))
    temperature = float(torch.rand((), device=device)) * max_temperature
    first = int(torch.randint(1, cut + 1, (), device=device))
    count = min(first + band, cut + 1) - first
    coeff = torch.randn(n, c, count, device=device) * math.sqrt(temperature)
    theta = math.pi * images
    # sin(kθ) by the recurrence sin((k+1)θ) = 2cosθ·sin(kθ) − sin((k−1)θ), from k = first.
    two_cos = 2 * torch.cos(theta)
    previous, current = torch.sin((first - 1) * theta), torch.sin(first * theta)
    out = images.clone()
    for k in range(count):
        out = out + coeff[:, :, k, None, None] * current
        previous, current = current, two_cos * current - previous
    return out.clamp(0.0, 1.0)


def batch_diffeomorphism(images: torch.Tensor, cut_min: int = 2, cut_max: int = 500) -> torch.Tensor:
    """Spatial primitive: one random smooth displacement field for the whole batch.

    The batch's largest cut-off is drawn from U{cut_min+1..cut_max}, the cut-off from a
    Beta(½, ½) over [cut_min, that maximum] and the temperature from a Beta(½, ½) over the
    no-overhang range (see :func:`_temperature_range`). Square images only.

    Raises:
        ValueError: for non-square images.
    """
    n, c, h, w = images.shape
    if h != w:
        raise ValueError(f"batch_diffeomorphism needs square images, got {h}×{w}")
    device = images.device
    largest = int(torch.randint(cut_min + 1, cut_max + 1, (), device=device))
    cut = int(_beta_half(device) * (largest + 1 - cut_min) + cut_min)
    t_min, t_max = (float(t) for t in _temperature_range(w, torch.tensor(cut)))
    temperature = _beta_half(device) * (t_max - t_min) + t_min
    k = torch.arange(1, cut + 1, device=device, dtype=torch.float32)
    radius = (k[:, None] ** 2 + k[None, :] ** 2).sqrt()
    energy = (radius < cut + 0.5) / radius
    modes = torch.sin(math.pi * torch.linspace(0, 1, w, device=device)[:, None] * k[None, :])  # side×cut
    dx, dy = ((modes @ (torch.randn(cut, cut, device=device) * energy) @ modes.t()).t() * math.sqrt(temperature) * w
              for _ in range(2))
    return _warp(images, dx, dy)


@dataclass(frozen=True)
class PrimeConfig:
    """A PRIME configuration: its three primitives and the shape of the mixture."""

    name: str
    primitives: Sequence[Callable[[torch.Tensor], torch.Tensor]]  # spectral, colour, spatial
    width: int = 3  # chains mixed per image
    max_depth: int = 3  # primitives per chain: uniform in 1..max_depth


PRIME_CONFIGS = {
    "cifar": PrimeConfig("cifar", PRIME_PRIMITIVES),
    "imagenet": PrimeConfig("imagenet", (batch_random_filter, batch_smooth_color, batch_diffeomorphism)),
}


def prime(images: torch.Tensor, *, config: str = "cifar", width: int | None = None,
          max_depth: int | None = None) -> torch.Tensor:
    """PRIME mixing (AugMix-style): ``(1−m)·x + m·Σ_i w_i·chain_i(x)``.

    Each of ``width`` chains applies 1..``max_depth`` primitives (uniform depth, uniform
    choice among spectral, colour, spatial), w ~ Dirichlet(1), m ~ Beta(1, 1), per image. At
    each depth a primitive runs once on the chains that chose it (with the ``imagenet``
    configuration its parameters are drawn once for those chains).

    Args:
        images: float N×3×H×W batch in [0, 1].
        config: ``"cifar"`` or ``"imagenet"`` (see :data:`PRIME_CONFIGS`).
        width, max_depth: override the configuration's mixture shape.

    Returns:
        The mixed batch, float in [0, 1].

    Raises:
        ValueError: for an unknown ``config``.
    """
    if config not in PRIME_CONFIGS:
        raise ValueError(f"unknown PRIME configuration {config!r}; choose one of {', '.join(PRIME_CONFIGS)}")
    chosen = PRIME_CONFIGS[config]
    width, max_depth = width or chosen.width, max_depth or chosen.max_depth
    n = images.shape[0]
    chains = images.repeat(width, 1, 1, 1)  # (width·N)×C×H×W, chain-major
    depth = torch.randint(1, max_depth + 1, (width * n,), device=images.device)
    for step in range(max_depth):
        choice = torch.randint(0, len(chosen.primitives), (width * n,), device=images.device)
        for index, primitive in enumerate(chosen.primitives):
            selected = torch.nonzero((choice == index) & (depth > step)).flatten()
            if len(selected):
                chains[selected] = primitive(chains[selected])
    weights = torch.distributions.Dirichlet(torch.ones(width, device=images.device)).sample((n,))  # N×width
    mix = (weights.t()[:, :, None, None, None] * chains.view(width, n, *images.shape[1:])).sum(0)
    m = torch.rand(n, 1, 1, 1, device=images.device)  # Beta(1, 1) is uniform
    return ((1 - m) * images + m * mix).clamp(0.0, 1.0)
