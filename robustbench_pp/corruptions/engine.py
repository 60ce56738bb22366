"""``corrupt``: validation, seeding, dispatch to a kernel, and the uint8 round trip."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from robustbench_pp.corruptions import _ops
from robustbench_pp.corruptions.kernels import KERNELS, UINT8_KERNELS
from robustbench_pp.corruptions.parameters import PARAMETERS, check_name, check_preset, check_severity

BACKENDS = ("torch", "imagecorruptions")

#: Version of the corrupted bytes this engine makes for a (seed, name, severity, index, image):
#: recorded in dataset manifests and on-the-fly fingerprints, bumped whenever any corruption's
#: output can change. 2 (issue 14): compiled CPU kernels; zoom_blur resamples with its own
#: bilinear weights and defocus_blur sums the disk without an FFT, which moves a few float32
#: results across a grey level (imagenet defocus and zoom, cifar zoom); all else unchanged.
ENGINE_VERSION = 2

#: Smallest accepted side (glass blur and the frost crop need some room; the reference needs 32).
MIN_SIDE = 16

# On CPU, batches are processed in chunks of about this many values: a chunk's float copies
# stay in cache between the kernel's passes. Results do not depend on the chunking (every
# kernel treats images independently; the shard tests check it).
_CPU_CHUNK_VALUES = 1 << 19


def _chunk_size(batch: torch.Tensor) -> int:
    if batch.device.type != "cpu":
        return max(1, batch.shape[0])
    return max(1, _CPU_CHUNK_VALUES // (batch.shape[1] * batch.shape[2] * batch.shape[3]))


def _as_torch_batch(images):
    """Validate and return (uint8 N×3×H×W tensor, was_numpy)."""
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8:
            raise ValueError(f"images must be uint8, got numpy dtype {images.dtype}; convert with images.astype(np.uint8)")
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"a numpy batch must be N×H×W×3 (RGB, channels last), got shape {images.shape}")
        array = np.ascontiguousarray(images)
        if not array.flags.writeable:  # a read-only memmap: torch may not alias it
            array = array.copy()
        batch, was_numpy = torch.from_numpy(array).permute(0, 3, 1, 2), True
    elif isinstance(images, torch.Tensor):
        if images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8, got torch dtype {images.dtype}")
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"a torch batch must be N×3×H×W (RGB, channels first), got shape {tuple(images.shape)}")
        batch, was_numpy = images, False
    else:
        raise ValueError(f"images must be a uint8 numpy array or torch tensor, got {type(images).__name__}")
    if min(batch.shape[-2:]) < MIN_SIDE:
        raise ValueError(f"images must be at least {MIN_SIDE}×{MIN_SIDE} pixels, got {tuple(batch.shape[-2:])}")
    return batch, was_numpy


def corrupt(images, name: str, severity: int, *, preset: str = "imagenet", seed: int = 0, index_offset: int = 0, backend: str = "torch"):
    """Apply one corruption at one severity to a batch of uint8 RGB images.

    Image i's randomness depends only on (seed, name, severity, index_offset + i): a data set
    made in shards (pass each shard's first global index as ``index_offset``) or in any batch
    size is bit-identical on CPU to one made in one go; on a GPU, run to run on one device type.

    Args:
        images: uint8 numpy array N×H×W×3, or uint8 torch tensor N×3×H×W on any device.
        name: one of robustbench_pp.names.ALL_CORRUPTIONS (15 benchmark + 4 extra).
        severity: 1..5.
        preset: "imagenet" (ImageNet-C parameters) or "cifar" (CIFAR-10-C parameters).
        seed: the data set's seed.
        index_offset: global index of images[0].
        backend: "torch" (batched kernels, any device) or "imagecorruptions" (the reference
            package, one image at a time on the CPU; imagenet preset only).

    Returns:
        The corrupted batch: same type, shape, dtype (uint8) and device as ``images``.

    Raises:
        ValueError: unknown name/preset/backend, severity outside 1..5, wrong dtype or shape,
            or the reference backend asked for a preset it does not implement.

    Example:
        >>> out = corrupt(np.zeros((2, 32, 32, 3), np.uint8), "fog", 3, preset="cifar", seed=1)
    """
    check_name(name)
    check_preset(preset)
    severity = check_severity(severity)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; accepted: {', '.join(BACKENDS)}")
    batch, was_numpy = _as_torch_batch(images)
    if backend == "imagecorruptions":
        out = reference_corrupt(batch.permute(0, 2, 3, 1).cpu().numpy(), name, severity, preset=preset, seed=seed, index_offset=index_offset)
        out = torch.from_numpy(out).permute(0, 3, 1, 2)
        return out.numpy().transpose(0, 2, 3, 1).copy() if was_numpy else out.to(batch.device)
    if batch.shape[0] == 0:
        return images.copy() if was_numpy else images.clone()
    seeds = [_ops.image_seed(seed, name, severity, index_offset + i) for i in range(batch.shape[0])]
    row = PARAMETERS[name][preset][severity - 1]
    kernel = KERNELS[name]
    # uint8 kernels keep no float copies: one chunk (their CPU loops go image by image anyway).
    chunk = batch.shape[0] if name in UINT8_KERNELS else _chunk_size(batch)
    outs = []
    with torch.no_grad():
        for start in range(0, batch.shape[0], chunk):
            rng = _ops.ImageRandomness(seeds[start : start + chunk], batch.device)
            if name in UINT8_KERNELS:
                outs.append(kernel(batch[start : start + chunk].contiguous(), *row, rng=rng))
            else:
                outs.append(_ops.unit_to_uint8(kernel(_ops.to_unit(batch[start : start + chunk]), *row, rng=rng)))
    out = outs[0] if len(outs) == 1 else torch.cat(outs)
    if was_numpy:
        return out.permute(0, 2, 3, 1).contiguous().numpy()
    return out


def corrupt_by_index(images, indices, name: str, severity: int, *, preset: str = "imagenet", seed: int = 0):
    """Corrupt a batch whose image k is image ``indices[k]`` of its data set (any subset, any order).

    Image k gets the randomness that :func:`corrupt` gives the image at global index
    ``indices[k]``, so a subset or a shuffled batch reproduces the images of one full pass
    (on-the-fly reading and generated files use this one function). Each run of consecutive
    indices is one :func:`corrupt` call with that run's first index as ``index_offset``.

    Args:
        images: uint8 numpy array N×H×W×3, or uint8 torch tensor N×3×H×W on any device.
        indices: N global indices (int), one per image.
        name, severity, preset, seed: as for :func:`corrupt`.

    Returns:
        The corrupted batch: same type, shape, dtype and device as ``images``.

    Raises:
        ValueError: as :func:`corrupt`, or when ``indices`` and ``images`` differ in length.

    Example:
        >>> out = corrupt_by_index(np.zeros((3, 32, 32, 3), np.uint8), [7, 8, 2], "fog", 3, preset="cifar")
    """
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if len(indices) != len(images):
        raise ValueError(f"{len(indices)} indices for a batch of {len(images)} images")
    pieces = [corrupt(images[start:stop], name, severity, preset=preset, seed=seed, index_offset=int(indices[start]))
              for start, stop in _consecutive_runs(indices)]
    if len(pieces) == 1:
        return pieces[0]
    if not pieces:
        return corrupt(images, name, severity, preset=preset, seed=seed)  # validates, copies the empty batch
    return np.concatenate(pieces) if isinstance(images, np.ndarray) else torch.cat(pieces)


def _consecutive_runs(values: np.ndarray) -> list[tuple[int, int]]:
    """Split an index array into maximal runs of consecutive values: [(start_slot, stop_slot)]."""
    if len(values) == 0:
        return []
    breaks = np.flatnonzero(np.diff(values) != 1) + 1
    edges = np.concatenate([[0], breaks, [len(values)]])
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


@contextlib.contextmanager
def _numpy_global_seed(seed: int):
    """Seed numpy's global RNG (the reference package uses it) and restore it afterwards."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def reference_corrupt(images: np.ndarray, name: str, severity: int, *, preset: str = "imagenet", seed: int = 0, index_offset: int = 0) -> np.ndarray:
    """Run the maintained ``imagecorruptions`` package on each image (N×H×W×3 uint8, ≥ 32 px).

    Each image gets numpy's global RNG seeded from (seed, name, severity, index), and the same
    32-bit seed as ``seed=`` where the package takes one (glass_blur, impulse_noise).

    Raises:
        ValueError: preset other than "imagenet" (the package implements only the ImageNet-C
            parameters), or images under 32 px (the package rejects them).
    """
    check_name(name)
    check_preset(preset)
    severity = check_severity(severity)
    if preset != "imagenet":
        raise ValueError(
            f"no reference implementation exists for the {preset!r} preset: the imagecorruptions "
            "package implements only the ImageNet-C parameters; use backend='torch'"
        )
    if images.ndim != 4 or min(images.shape[1:3]) < 32:
        raise ValueError(f"the imagecorruptions backend needs N×H×W×3 images of at least 32 px, got {images.shape}")
    import warnings

    from imagecorruptions import corrupt as reference

    out = np.empty_like(images)
    for i, image in enumerate(images):
        key = _ops.image_seed(seed, name, severity, index_offset + i) % 2**32
        kwargs = {"seed": key} if name in ("glass_blur", "impulse_noise") else {}
        with _numpy_global_seed(key), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out[i] = reference(np.ascontiguousarray(image), severity=severity, corruption_name=name, **kwargs)
    return out
