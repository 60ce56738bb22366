"""A tiny fake ImageNet-style class folder: ``<root>/<wnid>/<name>.JPEG`` small JPEGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def fake_class_folder(root: Path, wnids, *, per_class: int = 1, seed: int = 0) -> Path:
    """Write ``per_class`` JPEGs of random size (40-80 px) per wnid; class k is tinted by k."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for k, wnid in enumerate(wnids):
        folder = root / wnid
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            height, width = (int(v) for v in rng.integers(40, 81, size=2))
            pixels = rng.integers(0, 80, size=(height, width, 3))
            pixels[..., k % 3] += 40 + (k * 37) % 130
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{wnid}_{i}.JPEG", quality=90)
    return root
