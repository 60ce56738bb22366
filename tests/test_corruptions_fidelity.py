"""Fidelity of the corruption engine on real photographs (scikit-image's sample images).

imagenet preset: deterministic corruptions within a mean absolute difference of 1 grey level of
the reference package; random ones within ±0.5 dB of its mean PSNR-vs-clean over ≥ 32 images
and seeds. Where the package departs from the released data (elastic_transform, pixelate,
frost) and for the cifar preset (no package), we compare with independent, slow, per-image
computations of the spec's formulas written here with numpy/scipy/Pillow/OpenCV.
"""

from __future__ import annotations

import functools
import io
import math

import numpy as np
import pytest

from robustbench_pp.corruptions import corrupt, corruption_parameters
from robustbench_pp.names import ALL_CORRUPTIONS, SEVERITIES

pytest.importorskip("skimage")
pytest.importorskip("imagecorruptions")

_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "cat", "immunohistochemistry", "motorcycle_left", "camera")


def _photos_224() -> np.ndarray:
    from skimage import data, transform

    out = []
    for name in _PHOTOS:
        try:
            photo = getattr(data, name)()
        except Exception:  # pragma: no cover - a sample that needs a download (pooch) is skipped
            continue
        if photo.ndim == 2:
            photo = np.stack([photo] * 3, axis=-1)
        side = min(photo.shape[:2])
        top, left = (photo.shape[0] - side) // 2, (photo.shape[1] - side) // 2
        square = photo[top : top + side, left : left + side, :3]
        out.append((transform.resize(square, (224, 224), anti_aliasing=True) * 255).astype(np.uint8))
    return np.stack(out)


PHOTOS = _photos_224()


def photo_crops(n: int, size: int, seed: int = 0) -> np.ndarray:
    """n crops of side ``size`` at random places of the 224 px photographs."""
    rng = np.random.default_rng(seed)
    crops = []
    for i in range(n):
        photo = PHOTOS[i % len(PHOTOS)]
        top, left = rng.integers(0, 224 - size + 1, size=2)
        crops.append(photo[top : top + size, left : left + size])
    return np.stack(crops)


def mean_psnr(corrupted: np.ndarray, clean: np.ndarray) -> float:
    mse = ((corrupted.astype(np.float64) - clean.astype(np.float64)) ** 2).mean(axis=(1, 2, 3))
    return float(np.mean(10 * np.log10(255.0**2 / np.maximum(mse, 1e-10))))


def reference(images, name, severity):
    return corrupt(images, name, severity, backend="imagecorruptions", seed=11)


# --------------------------------------------------------------------------- imagenet vs reference

DETERMINISTIC = ("brightness", "contrast", "defocus_blur", "zoom_blur", "gaussian_blur", "saturate", "jpeg_compression")


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_imagenet_corruptions_match_the_reference(name):
    images = PHOTOS[:1] if name == "zoom_blur" else PHOTOS[:2]  # zoom_blur's reference: ~180 ms/image
    for severity in SEVERITIES:
        ours = corrupt(images, name, severity).astype(np.float64)
        mad = np.abs(ours - reference(images, name, severity)).mean()
        assert mad <= 1.0, f"{name} severity {severity}: mean |ours - reference| = {mad:.3f} grey levels"


# name -> (images, side): noisy statistics need more images; fog's map size needs 224 px
# (the package sizes its plasma map to the image, the released data used 256 for 224 px).
RANDOM = {
    "gaussian_noise": (32, 64),
    "shot_noise": (32, 64),
    "impulse_noise": (32, 64),
    "speckle_noise": (32, 64),
    "glass_blur": (32, 64),
    "motion_blur": (32, 96),
    "snow": (32, 96),
    "spatter": (32, 224),  # sparse severity-1 drops: small crops make the mean too noisy
    "fog": (128, 224),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RANDOM))
def test_random_imagenet_corruptions_match_the_reference_psnr(name):
    n, size = RANDOM[name]
    images = photo_crops(n, size, seed=1)
    for severity in SEVERITIES:
        ours = mean_psnr(corrupt(images, name, severity, seed=5), images)
        ref = mean_psnr(reference(images, name, severity), images)
        assert abs(ours - ref) <= 0.5, f"{name} severity {severity}: mean PSNR {ours:.2f} dB vs reference {ref:.2f} dB"


def test_reference_backend_is_reproducible_and_per_image_seeded():
    images = photo_crops(3, 48)
    a = reference(images, "gaussian_noise", 2)
    np.testing.assert_array_equal(a, reference(images, "gaussian_noise", 2))
    np.testing.assert_array_equal(a[1:], corrupt(images[1:], "gaussian_noise", 2, backend="imagecorruptions", seed=11, index_offset=1))


# --------------------------------------------------------------------------- independent slow computations


def slow_pixelate(image: np.ndarray, factor: float) -> np.ndarray:
    """Pillow BOX down to int(side·factor), BOX back up (the released data's pixelate)."""
    from PIL import Image

    h, w = image.shape[:2]
    small = Image.fromarray(image).resize((int(w * factor), int(h * factor)), Image.BOX)
    return np.asarray(small.resize((w, h), Image.BOX))


@pytest.mark.parametrize("preset", ["imagenet", "cifar"])
def test_pixelate_is_box_down_box_up(preset):
    images = PHOTOS[:2] if preset == "imagenet" else photo_crops(8, 32)
    for severity in SEVERITIES:
        (factor,) = corruption_parameters("pixelate", preset, severity)
        slow = np.stack([slow_pixelate(image, factor) for image in images]).astype(np.float64)
        mad = np.abs(corrupt(images, "pixelate", severity, preset=preset) - slow).mean()
        assert mad <= 0.05, f"pixelate {preset} severity {severity}: MAD {mad:.3f} vs Pillow BOX/BOX"


def slow_elastic(image: np.ndarray, alpha: float, sigma: float, affine: float, rng) -> np.ndarray:
    """The released data's elastic transform: random affine (OpenCV), then smoothed displacements."""
    import cv2
    from scipy.ndimage import gaussian_filter, map_coordinates

    x = image.astype(np.float32) / 255
    h, w = x.shape[:2]
    centre = np.float32([h, w]) // 2
    half = min(h, w) // 3
    src = np.float32([centre + half, [centre[0] + half, centre[1] - half], centre - half])
    dst = src + rng.uniform(-affine, affine, size=src.shape).astype(np.float32)
    x = cv2.warpAffine(x, cv2.getAffineTransform(src, dst), (w, h), borderMode=cv2.BORDER_REFLECT_101)
    fields = [gaussian_filter(rng.uniform(-1, 1, size=(h, w)), sigma, mode="reflect", truncate=3) * alpha for _ in range(2)]
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    out = np.stack(
        [map_coordinates(x[..., c], [rows + fields[1], cols + fields[0]], order=1, mode="reflect") for c in range(3)], axis=-1
    )
    return np.uint8(np.clip(out, 0, 1) * 255)


@pytest.mark.parametrize("preset, n, size", [("imagenet", 32, 112), ("cifar", 256, 32)])
def test_elastic_transform_matches_the_released_formula(preset, n, size):
    images = photo_crops(n, size, seed=2)
    rng = np.random.default_rng(0)
    for severity in SEVERITIES:
        row = corruption_parameters("elastic_transform", preset, severity)
        slow = np.stack([slow_elastic(image, *row, rng) for image in images])
        ours = mean_psnr(corrupt(images, "elastic_transform", severity, preset=preset, seed=3), images)
        assert abs(ours - mean_psnr(slow, images)) <= 0.5, f"elastic {preset} severity {severity}"


@functools.lru_cache(maxsize=16)
def _frost_texture(index: int, scale: float) -> np.ndarray:
    import importlib.resources

    import cv2

    name = ["frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg"][index]
    with importlib.resources.as_file(importlib.resources.files("imagecorruptions") / "frost" / name) as path:
        texture = cv2.imread(str(path))[..., ::-1]
    return cv2.resize(texture, (0, 0), fx=scale, fy=scale) if scale != 1 else texture


def slow_frost(image: np.ndarray, image_coef: float, frost_coef: float, scale: float, rng) -> np.ndarray:
    """The released data's frost: one of the first five textures (×scale), a random crop, a blend."""
    texture = _frost_texture(int(rng.integers(5)), scale)
    h, w = image.shape[:2]
    top, left = rng.integers(0, texture.shape[0] - h), rng.integers(0, texture.shape[1] - w)
    out = image_coef * image.astype(np.float64) + frost_coef * texture[top : top + h, left : left + w]
    return np.uint8(np.clip(out, 0, 255))


@pytest.mark.parametrize("preset, n, size", [("imagenet", 512, 64), ("cifar", 512, 32)])
def test_frost_matches_the_released_formula(preset, n, size):
    images = photo_crops(n, size, seed=3)
    rng = np.random.default_rng(1)
    for severity in SEVERITIES:
        row = corruption_parameters("frost", preset, severity)
        slow = np.stack([slow_frost(image, *row, rng) for image in images])
        ours = mean_psnr(corrupt(images, "frost", severity, preset=preset, seed=4), images)
        assert abs(ours - mean_psnr(slow, images)) <= 0.5, f"frost {preset} severity {severity}"


# --------------------------------------------------------------------------- cifar preset, slow formulas


def _hsv_edit(image, channel, fn):
    from skimage import color

    hsv = color.rgb2hsv(image / 255.0)
    hsv[..., channel] = fn(hsv[..., channel])
    return np.clip(color.hsv2rgb(hsv), 0, 1) * 255


def _slow_deterministic(name, image, row):
    """Per-image numpy/scipy/Pillow computations of the spec's deterministic formulas."""
    from PIL import Image
    from skimage.filters import gaussian

    x = image / 255.0
    if name == "brightness":
        return _hsv_edit(image, 2, lambda v: np.clip(v + row[0], 0, 1))
    if name == "saturate":
        return _hsv_edit(image, 1, lambda s: np.clip(s * row[0] + row[1], 0, 1))
    if name == "contrast":
        means = x.mean(axis=(0, 1), keepdims=True)
        return np.clip((x - means) * row[0] + means, 0, 1) * 255
    if name == "gaussian_blur":
        return np.clip(gaussian(x, sigma=row[0], channel_axis=-1), 0, 1) * 255
    if name == "jpeg_compression":
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=int(row[0]))
        return np.asarray(Image.open(buffer), dtype=np.float64)
    if name == "defocus_blur":
        import cv2
        from imagecorruptions.corruptions import disk  # the package's anti-aliased disk helper

        kernel = disk(radius=row[0], alias_blur=row[1])
        return np.clip(np.stack([cv2.filter2D(x[..., c], -1, kernel) for c in range(3)], -1), 0, 1) * 255
    if name == "zoom_blur":
        from scipy.ndimage import zoom

        h, w = x.shape[:2]
        zooms = np.arange(1, row[0], row[1])
        acc = x.copy()
        for z in zooms:
            ch, cw = math.ceil(h / z), math.ceil(w / z)
            top, left = (h - ch) // 2, (w - cw) // 2
            acc += zoom(x[top : top + ch, left : left + cw], (z, z, 1), order=1)[:h, :w]
        return np.clip(acc / (len(zooms) + 1), 0, 1) * 255
    raise KeyError(name)


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_cifar_deterministic_corruptions_match_slow_formulas(name):
    images = photo_crops(6, 32, seed=4)
    for severity in SEVERITIES:
        row = corruption_parameters(name, "cifar", severity)
        slow = np.stack([np.uint8(_slow_deterministic(name, image, row)) for image in images])
        mad = np.abs(corrupt(images, name, severity, preset="cifar").astype(np.float64) - slow).mean()
        assert mad <= 1.0, f"{name} cifar severity {severity}: MAD {mad:.3f}"


def _slow_random(name, image, row, rng):
    """Per-image numpy computations of the spec's random formulas (independent numpy RNG)."""
    x = image / 255.0
    if name == "gaussian_noise":
        return x + rng.normal(scale=row[0], size=x.shape)
    if name == "speckle_noise":
        return x + x * rng.normal(scale=row[0], size=x.shape)
    if name == "shot_noise":
        return rng.poisson(x * row[0]) / row[0]
    if name == "impulse_noise":
        flipped, salted = rng.random(x.shape) < row[0], rng.random(x.shape) < 0.5
        return np.where(flipped, salted.astype(float), x)
    if name == "glass_blur":
        from imagecorruptions.corruptions import _shuffle_pixels_njit_glass_blur  # sequential, numba
        from skimage.filters import gaussian

        sigma, delta, iterations = row
        y = np.uint8(gaussian(x, sigma=sigma, channel_axis=-1) * 255)
        y = _shuffle_pixels_njit_glass_blur(y.shape[0], y.shape[1], y, row, int(rng.integers(2**31)))
        return gaussian(y / 255.0, sigma=sigma, channel_axis=-1)
    if name == "fog":
        from imagecorruptions.corruptions import plasma_fractal  # diamond-square helper (global RNG)

        strength, decay, size = row
        np.random.seed(int(rng.integers(2**31)))
        peak = x.max()
        x = x + strength * plasma_fractal(mapsize=int(size), wibbledecay=decay)[:32, :32, None]
        return x * peak / (peak + strength)
    if name == "motion_blur":
        from imagecorruptions.corruptions import _motion_blur  # the package's numpy motion blur

        return _motion_blur(image, radius=row[0], sigma=row[1], angle=rng.uniform(-45, 45)) / 255
    if name == "spatter":
        return _slow_spatter(x, row, rng)
    raise KeyError(name)


def _slow_spatter(x, row, rng):
    """The released spatter formula per image: a blurred, thresholded liquid layer; water drops
    shaded by OpenCV's Canny/distance/equalise/emboss pipeline (mode 0) or mud (mode 1)."""
    import cv2
    from skimage.filters import gaussian

    loc, scale, sigma, threshold, intensity, mode = row
    liquid = gaussian(rng.normal(loc=loc, scale=scale, size=x.shape[:2]), sigma=sigma)
    liquid[liquid < threshold] = 0
    if mode == 0:
        liquid8 = (liquid * 255).astype(np.uint8)
        dist = cv2.distanceTransform(255 - cv2.Canny(liquid8, 50, 150), cv2.DIST_L2, 5)
        _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
        dist = cv2.equalizeHist(cv2.blur(dist, (3, 3)).astype(np.uint8))
        dist = cv2.filter2D(dist, cv2.CV_8U, np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]))
        shade = liquid8 * cv2.blur(dist, (3, 3)).astype(np.float32)
        shade = shade / max(float(shade.max()), 1e-12) * intensity
        return x + shade[..., None] * np.array([175, 238, 238]) / 255
    mud = gaussian(np.where(liquid > threshold, 1.0, 0.0), sigma=intensity)
    mud[mud < 0.8] = 0
    return x * (1 - mud[..., None]) + mud[..., None] * np.array([63, 42, 20]) / 255


@pytest.mark.parametrize("name", ["gaussian_noise", "speckle_noise", "shot_noise", "impulse_noise", "glass_blur", "fog",
                                  "motion_blur", "spatter"])
def test_cifar_random_corruptions_match_slow_formulas(name):
    # fog and spatter vary most between images (sparse drops at spatter severity 1): more of them.
    images = photo_crops({"fog": 96, "spatter": 256}.get(name, 32), 32, seed=5)
    rng = np.random.default_rng(7)
    for severity in SEVERITIES:
        row = corruption_parameters(name, "cifar", severity)
        slow = np.stack([np.uint8(np.clip(_slow_random(name, image, row, rng), 0, 1) * 255) for image in images])
        ours = mean_psnr(corrupt(images, name, severity, preset="cifar", seed=9), images)
        assert abs(ours - mean_psnr(slow, images)) <= 0.5, f"{name} cifar severity {severity}"


# --------------------------------------------------------------------------- monotonicity

# Severity pairs whose mean PSNR does not fall in the originals' own parameters; reproduced, not
# fixed. cifar (spec §1.1): elastic_transform rises (the affine part shrinks); glass_blur, frost,
# spatter and saturate are not monotonic. Also from the parameter rows themselves: cifar
# motion_blur 3→4 keeps sigma 2 and only adds taps of weight < 0.3 %, pixelate 2→3 shrinks
# 32 px to 28 then 27 px (box sampling phases differ); imagenet glass_blur 1→2 (the reference
# package measures it too: fewer iterations at severity 2), frost 3→4 (image coefficient falls,
# frost coefficient stays), saturate (1, 2 desaturate, 3..5 saturate) and elastic_transform 2→3
# (the released rows cut the affine jitter from 0.2 to 0.02 × 244 px: severity 3 is far milder).
NOT_MONOTONIC = {
    "cifar": {"elastic_transform", "glass_blur", "frost", "spatter", "saturate", "motion_blur", "pixelate"},
    "imagenet": {"saturate", "glass_blur", "frost", "elastic_transform"},
}


@pytest.mark.parametrize("preset", ["imagenet", "cifar"])
def test_mean_psnr_decreases_with_severity(preset):
    failures = []
    for name in ALL_CORRUPTIONS:
        if name in NOT_MONOTONIC[preset]:
            continue
        # Random corruptions: 64 images, and an allowance for the noise of their means, since
        # neighbouring severities can be close (imagenet fog 3→4: 0.12 dB apart over 256 photos
        # in both our engine and the reference package).
        deterministic = name in DETERMINISTIC + ("pixelate",)
        images = photo_crops(8 if deterministic else 64, 112 if preset == "imagenet" else 32, seed=6)
        allowance = 0.0 if deterministic else 0.15
        psnr = [mean_psnr(corrupt(images, name, s, preset=preset, seed=2), images) for s in SEVERITIES]
        if not all(b < a + allowance for a, b in zip(psnr, psnr[1:])):
            failures.append(f"{name}: {', '.join(f'{p:.2f}' for p in psnr)}")
    assert not failures, "PSNR not decreasing with severity: " + "; ".join(failures)

