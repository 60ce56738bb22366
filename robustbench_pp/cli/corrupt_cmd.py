"""``rbpp corrupt-gallery``: one image under every corruption and severity, as a PNG grid."""

from __future__ import annotations

import os

import click

_DEFAULT_SIZES = {"imagenet": 224, "cifar": 32}


def load_square_image(path: str, size: int):
    """Read an image as RGB, resize its shorter side to ``size`` and centre-crop (uint8 H×W×3).

    Raises:
        click.ClickException: the file is missing or not an image.
    """
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except (FileNotFoundError, IsADirectoryError, UnidentifiedImageError, OSError) as exc:
        raise click.ClickException(f"cannot read image {path}: {exc}; pass a PNG or JPEG file") from None
    scale = size / min(rgb.size)
    resized = rgb.resize((max(size, round(rgb.width * scale)), max(size, round(rgb.height * scale))), Image.BICUBIC)
    left, top = (resized.width - size) // 2, (resized.height - size) // 2
    return np.asarray(resized.crop((left, top, left + size, top + size)), dtype=np.uint8)


def render_gallery(image, names, preset: str, seed: int, out_path: str, dpi: int = 100) -> None:
    """Corrupt ``image`` with every name × severity and save the grid to ``out_path`` atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from robustbench_pp.corruptions import corrupt
    from robustbench_pp.fileio import atomic_path
    from robustbench_pp.names import SEVERITIES

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


@click.command("corrupt-gallery")
@click.option("--preset", type=click.Choice(["imagenet", "cifar"]), default="imagenet", show_default=True, help="Parameter set.")
@click.option("--image", "image_path", required=True, type=click.Path(dir_okay=False), help="A PNG or JPEG photograph.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, writable=True), help="Output PNG.")
@click.option("--size", type=int, default=None, help="Side in pixels (default 224 imagenet, 32 cifar).")
@click.option("--extras/--no-extras", default=False, show_default=True, help="Add the 4 extra corruptions (19 rows).")
@click.option("--only", default=None, help="Comma-separated corruption names (default: all rows).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--dpi", type=int, default=100, show_default=True)
def corrupt_gallery(preset, image_path, out_path, size, extras, only, seed, dpi):
    """Render a (15 or 19)×5 grid of one image under every corruption and severity."""
    from robustbench_pp.names import ALL_CORRUPTIONS, CORRUPTIONS

    size = size or _DEFAULT_SIZES[preset]
    if size < 32:
        raise click.ClickException(f"--size must be at least 32, got {size}")
    if not os.path.isdir(os.path.dirname(os.path.abspath(out_path))):
        raise click.ClickException(f"the folder of --out {out_path} does not exist; create it first")
    names = ALL_CORRUPTIONS if extras else CORRUPTIONS
    if only:
        names = tuple(n.strip() for n in only.split(",") if n.strip())
        unknown = [n for n in names if n not in ALL_CORRUPTIONS]
        if unknown or not names:
            raise click.ClickException(f"--only: unknown corruption(s) {', '.join(unknown)}; choose from {', '.join(ALL_CORRUPTIONS)}")
    image = load_square_image(image_path, size)
    render_gallery(image, names, preset, seed, out_path, dpi=dpi)
    click.echo(f"wrote {out_path}")
