"""JPEG round trips of uint8 batches: libjpeg-turbo's arithmetic compiled on CPU, nvJPEG on CUDA.

On the CPU the round trip skips the file: ``_jpeg_cpu`` computes libjpeg-turbo's integer
pipeline without the (lossless) entropy coding, byte for byte what Pillow, torchvision or
OpenCV give after writing and reading the file, ~2.5x faster. Other devices encode and decode
through torchvision.io (nvJPEG on CUDA).
"""

from __future__ import annotations

import numpy as np
import torch

from robustbench_pp.corruptions import _ops


def jpeg_roundtrip(images, quality: int = 85):
    """Encode every image as JPEG at ``quality`` and decode it again (what ImageNet-C's files hold).

    Args:
        images: uint8 numpy array N×H×W×3 or uint8 torch tensor N×3×H×W (any device).
        quality: JPEG quality 1..100 (ImageNet-C stored its images at 85).

    Returns:
        The decoded batch, same type, shape, dtype and device as ``images``.

    Raises:
        ValueError: wrong dtype or shape, or quality outside 1..100.
    """
    import warnings

    from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg

    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    as_numpy = isinstance(images, np.ndarray)
    if as_numpy:
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected a uint8 numpy array N×H×W×3, got {images.dtype} {images.shape}")
        batch = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    elif isinstance(images, torch.Tensor):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected a uint8 torch tensor N×3×H×W, got {images.dtype} {tuple(images.shape)}")
        batch = images
    else:
        raise ValueError(f"expected a numpy array or a torch tensor, got {type(images).__name__}")
    if batch.shape[0] == 0:
        return images.copy() if as_numpy else images.clone()
    if batch.device.type == "cpu" and _ops.COMPILED_CPU_LOOPS:
        from robustbench_pp.corruptions import _jpeg_cpu

        decoded = torch.from_numpy(_jpeg_cpu.round_trip(batch.numpy(), int(quality)))
        return np.ascontiguousarray(decoded.numpy().transpose(0, 2, 3, 1)) if as_numpy else decoded
    with warnings.catch_warnings():
        # torchvision 0.29 flags its JPEG codec as deprecated in favour of TorchCodec; it works.
        warnings.simplefilter("ignore", DeprecationWarning)
        encoded = encode_jpeg([image.contiguous() for image in batch], quality=int(quality))
        encoded = [data.cpu() for data in encoded]  # decode_jpeg reads its input from host memory
        decoded = torch.stack(decode_jpeg(encoded, mode=ImageReadMode.RGB, device=batch.device))
    if as_numpy:
        return decoded.permute(0, 2, 3, 1).numpy().copy()
    return decoded
