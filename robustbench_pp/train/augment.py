"""Training augmentations as functions over batches of images.

Conventions: ``uint8`` batches are N×3×H×W tensors in [0, 255]; ``float`` batches are
N×3×H×W in [0, 1]. Randomness comes from torch's global generator, which the training loop
re-seeds at the start of every epoch (so a resumed run draws the same numbers).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


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


# --- PRIME (Modas et al., ECCV 2022): max-entropy spectral, spatial and colour primitives ---
# Defaults are the paper's CIFAR configuration: random filters 3×3 with σ ≤ 4, diffeomorphisms
# with cut-off 2..100 and temperature in the no-overhang range, smooth colour with ≤ 100
# frequencies and temperature ≤ 0.01.


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
    dx, dy = fields
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    src_x = (xs[None] - dx).clamp(0, w - 1)
    src_y = (ys[None] - dy).clamp(0, h - 1)
    grid = torch.stack([src_x / (w - 1) * 2 - 1, src_y / (h - 1) * 2 - 1], dim=-1).to(images.dtype)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=True)


PRIME_PRIMITIVES = (prime_random_filter, prime_smooth_color, prime_diffeomorphism)


def prime(images: torch.Tensor, *, width: int = 3, max_depth: int = 3) -> torch.Tensor:
    """PRIME mixing (AugMix-style): ``(1−m)·x + m·Σ_i w_i·chain_i(x)``.

    Each of ``width`` chains applies 1..``max_depth`` primitives (uniform depth, uniform
    choice among spectral, colour, spatial), w ~ Dirichlet(1), m ~ Beta(1, 1), per image.

    Args:
        images: float N×3×H×W batch in [0, 1].

    Returns:
        The mixed batch, float in [0, 1].
    """
    n = images.shape[0]
    chains = images.repeat(width, 1, 1, 1)  # (width·N)×C×H×W, chain-major
    depth = torch.randint(1, max_depth + 1, (width * n,), device=images.device)
    for step in range(max_depth):
        choice = torch.randint(0, len(PRIME_PRIMITIVES), (width * n,), device=images.device)
        for index, primitive in enumerate(PRIME_PRIMITIVES):
            selected = torch.nonzero((choice == index) & (depth > step)).flatten()
            if len(selected):
                chains[selected] = primitive(chains[selected])
    weights = torch.distributions.Dirichlet(torch.ones(width, device=images.device)).sample((n,))  # N×width
    mix = (weights.t()[:, :, None, None, None] * chains.view(width, n, *images.shape[1:])).sum(0)
    m = torch.rand(n, 1, 1, 1, device=images.device)  # Beta(1, 1) is uniform
    return ((1 - m) * images + m * mix).clamp(0.0, 1.0)


def jensen_shannon_loss(logits_clean: torch.Tensor, logits_aug1: torch.Tensor, logits_aug2: torch.Tensor) -> torch.Tensor:
    """AugMix's Jensen-Shannon consistency term between the clean and two augmented views.

    Returns:
        mean over views of KL(M ‖ p_view), M the mixture of the three softmaxes (batch mean).
    """
    probs = [F.softmax(logits.float(), dim=1) for logits in (logits_clean, logits_aug1, logits_aug2)]
    log_mixture = torch.clamp(sum(probs) / 3.0, 1e-7, 1.0).log()
    return sum(F.kl_div(log_mixture, p, reduction="batchmean") for p in probs) / 3.0
