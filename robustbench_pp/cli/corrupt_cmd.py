"""``rbpp corrupt-gallery``: one image under every corruption and severity, as a PNG grid."""

from __future__ import annotations

import click

from robustbench_pp.cli._errors import library_errors
from robustbench_pp.cli._types import SEED


def load_square_image(path: str, size: int):
    """:func:`robustbench_pp.report.gallery.load_square_image`, with a clean click error.

    Kept under its old import path (``robustbench_pp.cli.corrupt_cmd``) for callers of it.

    Raises:
        click.ClickException: the file is missing or not an image.
    """
    from robustbench_pp.report.gallery import load_square_image as load

    with library_errors():
        return load(path, size)


def _gallery_size(ctx, param, value):
    """``--size``: refused here (exit 2) below the gallery's minimum, not after the image has loaded.

    The gallery module is imported only now: importing it with this module would load the
    report package (and numpy) on every ``rbpp`` command.
    """
    from robustbench_pp.report.gallery import MIN_SIZE

    if value is not None and value < MIN_SIZE:
        raise click.BadParameter(f"{value} is below the gallery's minimum of {MIN_SIZE} pixels.", ctx, param)
    return value


@click.command("corrupt-gallery")
@click.option("--preset", type=click.Choice(["imagenet", "cifar"]), default="imagenet", show_default=True, help="Parameter set.")
@click.option("--image", "image_path", required=True, type=click.Path(dir_okay=False), help="A PNG or JPEG photograph.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, writable=True), help="Output PNG.")
@click.option("--size", type=click.IntRange(max=4096), default=None, callback=_gallery_size, help="Side in pixels (default 224 imagenet, 32 cifar).")
@click.option("--extras/--no-extras", default=False, show_default=True, help="Add the 4 extra corruptions (19 rows).")
@click.option("--only", default=None, help="Comma-separated corruption names (default: all rows).")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--dpi", type=click.IntRange(min=10, max=1200), default=100, show_default=True)
def corrupt_gallery(preset, image_path, out_path, size, extras, only, seed, dpi):
    """Render a (15 or 19)×5 grid of one image under every corruption and severity."""
    from robustbench_pp.names import ALL_CORRUPTIONS, CORRUPTIONS
    from robustbench_pp.report import gallery

    names = ALL_CORRUPTIONS if extras else CORRUPTIONS
    if only:
        names = tuple(n.strip() for n in only.split(",") if n.strip())
    size = size or gallery.DEFAULT_SIZES[preset]
    with library_errors(aliases={"names": "--only", "out": "--out", "size": "--size"}):
        gallery.check_gallery(names, size, out_path)
        image = gallery.load_square_image(image_path, size)
        gallery.render_gallery(image, names, preset, seed, out_path, dpi=dpi)
    click.echo(f"wrote {out_path}")
