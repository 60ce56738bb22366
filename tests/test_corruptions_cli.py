"""rbpp corrupt-gallery: renders a PNG grid; bad input gives a clean click error."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from robustbench_pp.cli.corrupt_cmd import corrupt_gallery


@pytest.fixture()
def photo_path(tmp_path):
    from skimage import data

    path = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(path)
    return path


def test_gallery_writes_a_png_grid(tmp_path, photo_path):
    out = tmp_path / "gallery.png"
    args = ["--preset", "cifar", "--image", str(photo_path), "--out", str(out), "--dpi", "40", "--only", "fog,contrast,snow,pixelate"]
    result = CliRunner().invoke(corrupt_gallery, args)
    assert result.exit_code == 0, result.output
    with Image.open(out) as png:
        assert png.format == "PNG"
        width, height = png.size
    assert 0.5 * width < height < width  # 4 rows of 6 tiles plus a title
    assert not list(tmp_path.glob("tmp*.png")), "no temporary file is left behind"


def test_gallery_rejects_a_missing_image_and_keeps_existing_output(tmp_path):
    out = tmp_path / "gallery.png"
    out.write_bytes(b"old")
    result = CliRunner().invoke(corrupt_gallery, ["--image", str(tmp_path / "nope.png"), "--out", str(out)])
    assert result.exit_code != 0 and "cannot read image" in result.output
    assert out.read_bytes() == b"old"


def test_gallery_rejects_a_missing_output_folder(tmp_path, photo_path):
    result = CliRunner().invoke(corrupt_gallery, ["--image", str(photo_path), "--out", str(tmp_path / "no" / "g.png")])
    assert result.exit_code != 0 and "does not exist" in result.output


def test_gallery_rejects_unknown_names(tmp_path, photo_path):
    result = CliRunner().invoke(corrupt_gallery, ["--image", str(photo_path), "--out", str(tmp_path / "g.png"), "--only", "rain"])
    assert result.exit_code != 0 and "unknown corruption" in result.output


def test_gallery_command_is_registered():
    from robustbench_pp.cli import main

    assert "corrupt-gallery" in main.commands


def test_load_square_image_resizes_and_centre_crops(photo_path):
    from robustbench_pp.cli.corrupt_cmd import load_square_image

    image = load_square_image(str(photo_path), 64)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8


@pytest.mark.parametrize("size", ["20", "31", "-5"])
def test_a_size_below_the_gallery_minimum_fails_at_the_option_with_exit_2(tmp_path, photo_path, size):
    from robustbench_pp.report.gallery import MIN_SIZE

    out = tmp_path / "g.png"
    result = CliRunner().invoke(corrupt_gallery, ["--image", str(photo_path), "--out", str(out), "--size", size])
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--size'" in result.output and f"minimum of {MIN_SIZE}" in result.output
    assert not out.exists()
