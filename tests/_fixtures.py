"""Small real-format data files built by tests (no downloads)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write an idx file (gzip) the way Fashion-MNIST ships: magic, dims, big-endian data."""
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.tobytes())


def tiny_fashion_mnist(root: Path, *, test: int = 120, train: int = 200, seed: int = 0) -> Path:
    """A Fashion-MNIST folder with ``test``/``train`` images of 10 classes (class-dependent blobs)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, count in (("t10k", test), ("train", train)):
        labels = (np.arange(count) % 10).astype(np.uint8)
        rng.shuffle(labels)
        yy, xx = np.mgrid[0:28, 0:28]
        images = np.empty((count, 28, 28), dtype=np.uint8)
        for i, label in enumerate(labels):
            cy, cx = 6 + 2 * (label % 5), 8 + 6 * (label // 5)
            blob = 220 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 18.0)
            images[i] = np.clip(blob + rng.normal(0, 12, (28, 28)), 0, 255).astype(np.uint8)
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root
