"""Corruption engine: API contract, validation, determinism and shard invariance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustbench_pp.corruptions import PRESETS, corrupt, corruption_parameters, jpeg_roundtrip
from robustbench_pp.names import ALL_CORRUPTIONS, SEVERITIES


def _photo_batch(n: int, size: int) -> np.ndarray:
    """Small crops of a real photograph (varied positions), uint8 N×size×size×3."""
    from skimage import data

    photo = data.astronaut()
    step = (photo.shape[0] - size) // max(n, 1)
    return np.stack([photo[i * step : i * step + size, i * step : i * step + size] for i in range(n)])


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("name", ALL_CORRUPTIONS)
def test_every_corruption_and_severity_runs_on_numpy_and_torch(name, preset):
    images = _photo_batch(2, 32)
    for severity in SEVERITIES:
        out = corrupt(images, name, severity, preset=preset, seed=3)
        assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.shape == images.shape
        tensor = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
        out_t = corrupt(tensor, name, severity, preset=preset, seed=3)
        assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.uint8 and out_t.shape == tensor.shape
        # Same seed and indices: the numpy and torch paths give the same bytes.
        np.testing.assert_array_equal(out_t.permute(0, 2, 3, 1).numpy(), out)


@pytest.mark.parametrize("name", ALL_CORRUPTIONS)
def test_shards_and_batch_sizes_give_identical_bytes(name):
    images = _photo_batch(5, 48)
    whole = corrupt(images, name, 3, preset="imagenet", seed=7)
    parts = [corrupt(images[i : i + 2], name, 3, preset="imagenet", seed=7, index_offset=i) for i in range(0, 5, 2)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    single = corrupt(images[3:4], name, 3, preset="imagenet", seed=7, index_offset=3)
    np.testing.assert_array_equal(single[0], whole[3])


@pytest.mark.parametrize("name", ["gaussian_noise", "glass_blur", "fog", "frost", "motion_blur", "elastic_transform", "spatter"])
def test_seed_and_index_change_random_corruptions(name):
    images = np.repeat(_photo_batch(1, 48), 2, axis=0)
    out = corrupt(images, name, 4, seed=0)
    assert not np.array_equal(out[0], out[1]), "two indices must draw different randomness"
    assert not np.array_equal(corrupt(images, name, 4, seed=1), out), "the seed must matter"
    np.testing.assert_array_equal(corrupt(images, name, 4, seed=0), out)


def test_deterministic_corruptions_do_not_depend_on_the_seed():
    images = _photo_batch(2, 32)
    for name in ("brightness", "contrast", "defocus_blur", "zoom_blur", "pixelate", "jpeg_compression", "gaussian_blur", "saturate"):
        np.testing.assert_array_equal(corrupt(images, name, 2, seed=0), corrupt(images, name, 2, seed=99))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(name="gausian_noise", severity=1), "Did you mean 'gaussian_noise'"),
        (dict(name="fog", severity=0), "1..5"),
        (dict(name="fog", severity=6), "1..5"),
        (dict(name="fog", severity=2.0), "integer"),
        (dict(name="fog", severity=1, preset="mnist"), "cifar, imagenet"),
        (dict(name="fog", severity=1, backend="opencv"), "torch, imagecorruptions"),
        (dict(name="fog", severity=1, preset="cifar", backend="imagecorruptions"), "no reference implementation"),
    ],
)
def test_bad_arguments_raise_value_errors_saying_what_is_accepted(kwargs, message):
    with pytest.raises(ValueError, match=message):
        corrupt(_photo_batch(1, 32), **kwargs)


@pytest.mark.parametrize(
    "images",
    [
        np.zeros((2, 32, 32, 3), np.float32),
        np.zeros((32, 32, 3), np.uint8),
        np.zeros((2, 3, 32, 32), np.uint8),
        torch.zeros(2, 32, 32, 3, dtype=torch.uint8),
        torch.zeros(2, 3, 32, 32, dtype=torch.float32),
        np.zeros((2, 8, 8, 3), np.uint8),
        [[0]],
    ],
)
def test_wrong_dtype_or_shape_is_rejected(images):
    with pytest.raises(ValueError):
        corrupt(images, "contrast", 1)


def test_empty_batch_returns_an_empty_batch():
    out = corrupt(np.zeros((0, 32, 32, 3), np.uint8), "fog", 1)
    assert out.shape == (0, 32, 32, 3)


def test_corruption_parameters_are_the_spec_rows():
    assert corruption_parameters("gaussian_noise", "cifar") == ((0.04,), (0.06,), (0.08,), (0.09,), (0.10,))
    assert corruption_parameters("glass_blur", "imagenet", 5) == (1.5, 4, 2)
    assert corruption_parameters("elastic_transform", "imagenet", 1) == pytest.approx((488, 170.8, 24.4))
    assert corruption_parameters("jpeg_compression", "cifar", 5) == (40,)
    with pytest.raises(ValueError, match="unknown corruption"):
        corruption_parameters("rain")


def test_jpeg_roundtrip_matches_pillow_and_keeps_types():
    import io

    from PIL import Image

    images = _photo_batch(2, 64)
    out = jpeg_roundtrip(images, quality=85)
    assert out.shape == images.shape and out.dtype == np.uint8
    buffer = io.BytesIO()
    Image.fromarray(images[0]).save(buffer, "JPEG", quality=85)
    pillow = np.asarray(Image.open(buffer))
    assert np.abs(out[0].astype(int) - pillow).mean() < 0.5
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2)
    np.testing.assert_array_equal(jpeg_roundtrip(tensor).permute(0, 2, 3, 1).numpy(), out)
    with pytest.raises(ValueError, match="quality"):
        jpeg_roundtrip(images, quality=0)


@pytest.mark.parametrize("photons", [3, 60, 500])
def test_shot_noise_draws_poisson_counts(photons):
    from robustbench_pp.corruptions import _ops, kernels

    levels = torch.tensor([1.0, 50.0, 128.0, 255.0]) / 255
    x = levels.view(1, 1, 4, 1).expand(1, 3, 4, 20000).contiguous()
    # The torch kernel's counts (the compiled CPU loop gives the same bytes: test below).
    counts = kernels._shot_noise_counts(x, photons, _ops.ImageRandomness([5], "cpu"))[0] * photons
    for i, level in enumerate(levels.tolist()):
        sample = counts[:, i].reshape(-1).double()
        rate = photons * level
        assert torch.allclose(sample, sample.round(), atol=1e-3), "counts are whole numbers"
        assert abs(sample.mean().item() - rate) < 4 * (rate / sample.numel()) ** 0.5 + 1e-9
        assert abs(sample.var().item() / rate - 1) < 0.05


@pytest.mark.parametrize("size, radius, sigma", [(32, 9, 2.5), (80, 15, 8)])
def test_motion_blur_matches_the_reference_shifts_exactly(size, radius, sigma):
    """Both code paths (batched gathers for small images, slices for large) against the package."""
    from imagecorruptions.corruptions import _motion_blur

    from robustbench_pp.corruptions import _ops

    x = torch.from_numpy(_photo_batch(3, size)).permute(0, 3, 1, 2).float() / 255
    angles = torch.tensor([-44.5, 0.0, 37.25])
    ours = _ops.motion_blur(x, radius, sigma, angles)
    for n, angle in enumerate(angles.tolist()):
        ref = _motion_blur(x[n].permute(1, 2, 0).numpy(), radius=radius, sigma=sigma, angle=angle)
        np.testing.assert_allclose(ours[n].permute(1, 2, 0).numpy(), ref, atol=1e-5)


@pytest.mark.parametrize("low, high, dtype", [(0.0, 1.0, torch.float32), (-1.0, 1.0, torch.float32), (-45.0, 45.0, torch.float32),
                                              (-135.0, -45.0, torch.float32), (-24.4, 24.4, torch.float32),
                                              (-0.96, 0.96, torch.float32), (0.0, 1.0, torch.float64)])
def test_uniform_draws_from_raw_bits_are_torchs_uniform_draws(low, high, dtype):
    """The CPU draws uniforms from raw integer draws: the same numbers and generator state as uniform_."""
    from robustbench_pp.corruptions import _ops

    torch_generator = torch.Generator().manual_seed(2**40 + 17)
    expected = torch.empty(4099, dtype=dtype).uniform_(low, high, generator=torch_generator)
    rng = _ops.ImageRandomness([2**40 + 17], "cpu")
    torch.testing.assert_close(rng.uniform((4099,), low, high, dtype=dtype)[0], expected, rtol=0, atol=0)
    torch.testing.assert_close(rng.integers(-3, 3, (50,))[0], torch.randint(-3, 3, (50,), generator=torch_generator), rtol=0, atol=0)


# Kernels with a compiled CPU loop (corruptions/_cpu.py) beside the torch kernel other devices run.
COMPILED = ("shot_noise", "impulse_noise", "glass_blur", "motion_blur", "snow", "pixelate", "jpeg_compression",
            "gaussian_blur", "spatter", "fog")


@pytest.mark.parametrize("name", COMPILED)
def test_compiled_cpu_loops_give_the_bytes_of_the_torch_kernels(name, monkeypatch):
    from robustbench_pp.corruptions import _ops

    for preset, size in (("cifar", 32), ("imagenet", 72)):
        images = _photo_batch(3, size)
        compiled = [corrupt(images, name, severity, preset=preset, seed=4) for severity in SEVERITIES]
        monkeypatch.setattr(_ops, "COMPILED_CPU_LOOPS", False)
        in_torch = [corrupt(images, name, severity, preset=preset, seed=4) for severity in SEVERITIES]
        monkeypatch.setattr(_ops, "COMPILED_CPU_LOOPS", True)
        for severity, a, b in zip(SEVERITIES, compiled, in_torch):
            np.testing.assert_array_equal(a, b, err_msg=f"{name} {preset} severity {severity}")


@pytest.mark.parametrize("size", [(32, 32), (224, 224), (37, 53), (20, 17), (100, 72)])
def test_compiled_jpeg_round_trip_is_pillows_file_byte_for_byte(size):
    """libjpeg-turbo's arithmetic without the file: every quality, odd sizes (encoder padding)."""
    import io

    from PIL import Image

    from robustbench_pp.corruptions import _jpeg_cpu

    rng = np.random.default_rng(size[0])
    photos = _photo_batch(2, max(size))[:, : size[0], : size[1]]
    images = np.concatenate([photos, rng.integers(0, 256, (1, *size, 3), dtype=np.uint8)])
    for quality in (1, 7, 10, 15, 18, 25, 40, 50, 58, 65, 80, 85, 95, 100):
        ours = _jpeg_cpu.round_trip(np.ascontiguousarray(images.transpose(0, 3, 1, 2)), quality).transpose(0, 2, 3, 1)
        for image, mine in zip(images, ours):
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, "JPEG", quality=quality)
            np.testing.assert_array_equal(mine, np.asarray(Image.open(buffer).convert("RGB")), err_msg=f"quality {quality}")


@pytest.mark.parametrize("name", ["defocus_blur", "zoom_blur", "elastic_transform"])
def test_compiled_resampling_kernels_agree_with_the_torch_kernels_within_a_grey_level(name, monkeypatch):
    """defocus (disk row sums, no FFT), zoom blur and elastic (their own bilinear weights) round
    differently: rare values one grey level apart, never more."""
    from robustbench_pp.corruptions import _ops

    for preset, size in (("cifar", 32), ("imagenet", 96)):
        images = _photo_batch(3, size)
        compiled = [corrupt(images, name, severity, preset=preset).astype(int) for severity in SEVERITIES]
        monkeypatch.setattr(_ops, "COMPILED_CPU_LOOPS", False)
        in_torch = [corrupt(images, name, severity, preset=preset).astype(int) for severity in SEVERITIES]
        monkeypatch.setattr(_ops, "COMPILED_CPU_LOOPS", True)
        for severity, a, b in zip(SEVERITIES, compiled, in_torch):
            assert np.abs(a - b).max() <= 1, f"{name} {preset} severity {severity}"
            assert (a != b).mean() < 1e-3, f"{name} {preset} severity {severity}: {(a != b).mean():.4%} differ"


def test_compiled_generator_stream_is_torchs_stream_and_state():
    """Raw draws made from a torch generator's state in compiled code: same numbers, same state."""
    from robustbench_pp.corruptions import _mt19937

    assert _mt19937.available(), "the compiled stream should match this torch"
    ours = [torch.Generator().manual_seed(s) for s in (5, 2**62 + 9)]
    theirs = [torch.Generator().manual_seed(s) for s in (5, 2**62 + 9)]
    # Sizes that end mid-state and cross twists (624 words), mixed with torch's own draws.
    for kind, shape in (("bits", (3, 331)), ("wide", (700,)), (("range", -4, 8), (1250,)), ("bits", (1,))):
        low_high = () if isinstance(kind, str) else (kind[1], kind[1] + kind[2])
        dtype = torch.int64 if kind == "wide" else torch.int32
        expected = torch.stack([torch.empty(shape, dtype=dtype).random_(*low_high, generator=g) for g in theirs])
        torch.testing.assert_close(_mt19937.draw(ours, shape, kind), expected, rtol=0, atol=0)
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(torch.randn(17, generator=a), torch.randn(17, generator=b), rtol=0, atol=0)
