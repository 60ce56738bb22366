"""A gallery of the corruptions: one image under every corruption and severity, as a PNG grid.

What ``rbpp corrupt-gallery`` renders (and ``docs/gallery-imagenet.png`` shows). matplotlib,
numpy and Pillow load when a gallery is made, not when this module is imported.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from robustbench_pp.names import ALL_CORRUPTIONS, SEVERITIES

#: Image side per preset when none is asked for.
DEFAULT_SIZES = {"imagenet": 224, "cifar": 32}
MIN_SIZE = 32


def load_square_image(path: str | os.PathLike, size: int):
    """Read an image as RGB, resize its shorter side to ``size`` and centre-crop (uint8 H×W×3).

    Raises:
        OSError: the file is missing or not an image (the message names it).
    """
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except (FileNotFoundError, IsADirectoryError, UnidentifiedImageError, OSError) as exc:
        raise OSError(f"cannot read image {path}: {exc}; pass a PNG or JPEG file") from None
    scale = size / min(rgb.size)
    resized = rgb.resize((max(size, round(rgb.width * scale)), max(size, round(rgb.height * scale))), Image.BICUBIC)
    left, top = (resized.width - size) // 2, (resized.height - size) // 2
    return np.asarray(resized.crop((left, top, left + size, top + size)), dtype=np.uint8)


def check_gallery(names: Sequence[str], size: int, out_path: str | os.PathLike) -> None:
    """Refuse what would fail after the slow part: unknown names, tiny images, a missing folder.

    Raises:
        ValueError: naming the parameter (``names``, ``size``, ``out``) and the fix.
    """
    unknown = [n for n in names if n not in ALL_CORRUPTIONS]
    if unknown or not names:
        raise ValueError(f"`names`: unknown corruption(s) {', '.join(unknown)}; choose from {', '.join(ALL_CORRUPTIONS)}")
    if size < MIN_SIZE:
        raise ValueError(f"`size` must be at least {MIN_SIZE}, got {size}")
    if not os.path.isdir(os.path.dirname(os.path.abspath(out_path))):
        raise ValueError(f"the folder of `out` {out_path} does not exist; create it first")


def render_gallery(image, names: Sequence[str], preset: str, seed: int, out_path: str | os.PathLike,
                   dpi: int = 100) -> None:
    """Corrupt ``image`` with every name × severity and save the grid to ``out_path`` atomically.

    Args:
        image: uint8 H×W×3 (see :func:`load_square_image`).
        names: corruption names, one row each.
        preset: the parameter set (``imagenet`` or ``cifar``).
        seed: the corruption seed.
        out_path: the PNG to write (replaced only once complete).
        dpi: resolution of the PNG.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from robustbench_pp.corruptions import corrupt
    from robustbench_pp.fileio import atomic_path

    batch = np.repeat(image[None], len(SEVERITIES), axis=0)
    rows = [np.stack([corrupt(batch[i : i + 1], name, s, preset=preset, seed=seed)[0] for i, s in enumerate(SEVERITIES)]) for name in names]
    fig, axes = plt.subplots(len(names), len(SEVERITIES) + 1, figsize=(1.3 * (len(SEVERITIES) + 1), 1.3 * len(names)))
    for r, (name, row) in enumerate(zip(names, rows)):
        axes[r, 0].imshow(image)
        axes[r, 0].set_ylabel(name.replace("_", " "), fontsize=7, rotation=0, ha="right", va="center")
        for c, tile in enumerate(row, start=1):
            axes[r, c].imshow(tile)
            if r == 0:
                axes[r, c].set_title(f"severity {SEVERITIES[c - 1]}", fontsize=7)
        if r == 0:
            axes[r, 0].set_title("clean", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"robustbench_pp corruptions, {preset} preset, seed {seed}", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.99))
    try:
        with atomic_path(out_path) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        plt.close(fig)
