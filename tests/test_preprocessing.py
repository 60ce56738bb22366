"""Pixel normalisation (robustbench_pp.preprocessing): the one place evaluation, training and the
benchmarks turn pixels into model inputs."""

from __future__ import annotations

import pytest
import torch

from robustbench_pp.preprocessing import SOURCE_NORMALIZATION, normalize, normalize_float


def test_normalize_matches_the_definition_and_keeps_channels_last():
    batch = torch.randint(0, 256, (2, 3, 5, 5), dtype=torch.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    expected = (batch.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(normalize(batch, mean, std), expected, rtol=1e-6, atol=1e-6)
    nhwc_view = batch.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)  # how npy cells arrive
    out = normalize(nhwc_view, mean, std)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert normalize(batch, mean, std, channels_last=True).is_contiguous(memory_format=torch.channels_last)
    assert normalize(batch, mean, std, dtype=torch.bfloat16).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="uint8"):
        normalize(batch.float(), mean, std)


def test_normalize_float_is_the_training_formula_exactly():
    images = torch.rand(3, 3, 4, 4)
    mean, std = SOURCE_NORMALIZATION["cifar10"]
    as_tensors = (torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1))
    assert torch.equal(normalize_float(images, *as_tensors), (images - as_tensors[0]) / as_tensors[1])
    assert torch.equal(normalize_float(images, mean, std), normalize_float(images, *as_tensors))


def test_uint8_and_float_paths_agree():
    batch = torch.randint(0, 256, (2, 3, 6, 6), dtype=torch.uint8)
    mean, std = SOURCE_NORMALIZATION["imagenet"]
    torch.testing.assert_close(normalize(batch, mean, std), normalize_float(batch.float() / 255, mean, std),
                               rtol=1e-5, atol=1e-5)
