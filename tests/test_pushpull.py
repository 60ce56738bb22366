"""PushPullConv2d against an independent, slow computation of the spec's formulas."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from robustbench_pp.models import PushPullConv2d


def _slow_pushpull(x, weight, bias, alpha, stride, padding, avg):
    """Spec section 3 written out: explicit pull kernel loop, explicit zero-pad-excluding pooling."""
    out_channels = weight.shape[0]
    pull_weight = torch.empty_like(weight)
    for o in range(out_channels):
        pull_weight[o] = -weight[o] + (weight[o].max() + weight[o].min())
    push = torch.relu(F.conv2d(x.double(), weight.double(), stride=stride, padding=padding))
    pull_raw = F.conv2d(x.double(), pull_weight.double(), stride=stride, padding=padding)
    if avg > 0:
        half = (avg - 1) // 2
        n, c, h, w = pull_raw.shape
        pooled = torch.zeros_like(pull_raw)
        for i in range(h):
            for j in range(w):
                i0, i1, j0, j1 = max(0, i - half), min(h, i + half + 1), max(0, j - half), min(w, j + half + 1)
                pooled[:, :, i, j] = pull_raw[:, :, i0:i1, j0:j1].mean(dim=(2, 3))  # only real pixels
        pull_raw = pooled
    pull = torch.relu(pull_raw)
    out = push - alpha.double().view(1, -1, 1, 1) * pull
    if bias is not None:
        out = out + bias.double().view(1, -1, 1, 1)
    return out


@pytest.mark.parametrize(
    "avg, stride, padding, kernel, trainable, bias",
    [(3, 1, 1, 3, False, True), (5, 1, 1, 3, True, True), (3, 2, 3, 7, True, True), (0, 1, 0, 3, False, False),
     (5, 2, 1, 3, False, True)],
)
def test_matches_independent_computation(avg, stride, padding, kernel, trainable, bias):
    torch.manual_seed(0)
    layer = PushPullConv2d(3, 6, kernel, stride, padding, avg_kernel_size=avg, inhibition=0.7,
                           trainable_inhibition=trainable, bias=bias)
    with torch.no_grad():
        layer.weight.normal_()
        if trainable:
            layer.inhibition.uniform_(0, 2)
    x = torch.randn(2, 3, 12, 11)
    alpha = layer.inhibition if trainable else torch.full((6,), 0.7)
    expected = _slow_pushpull(x, layer.weight.detach(), layer.bias.detach() if bias else None, alpha.detach(),
                              stride, padding, avg)
    got = layer(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)


def test_parameters_and_init():
    layer = PushPullConv2d(3, 8, 3, trainable_inhibition=True)
    names = dict(layer.named_parameters())
    assert set(names) == {"weight", "bias", "inhibition"}
    assert names["inhibition"].shape == (8,) and 0 <= names["inhibition"].min() and names["inhibition"].max() <= 1
    assert -1 <= names["bias"].min() and names["bias"].max() <= 1
    fixed = PushPullConv2d(3, 8, 3, inhibition=0.5)
    assert set(fixed.state_dict()) == {"weight", "bias"}  # fixed α is not a weight
    assert torch.all(fixed.inhibition == 0.5)


def test_gradients_reach_inhibition_and_weight():
    layer = PushPullConv2d(3, 4, 3, padding=1, trainable_inhibition=True)
    layer(torch.randn(2, 3, 8, 8)).square().sum().backward()
    assert layer.inhibition.grad is not None and layer.inhibition.grad.abs().sum() > 0
    assert layer.weight.grad.abs().sum() > 0


def test_even_pool_size_rejected():
    with pytest.raises(ValueError, match="avg_kernel_size"):
        PushPullConv2d(3, 4, 3, avg_kernel_size=4)


def test_channels_last_and_bfloat16_autocast():
    torch.manual_seed(1)
    layer = PushPullConv2d(3, 4, 3, padding=1, avg_kernel_size=5, trainable_inhibition=True)
    x = torch.randn(2, 3, 16, 16)
    ref = layer(x)
    cl = layer(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(cl, ref, atol=1e-5, rtol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = layer(x)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), ref, atol=0.1, rtol=0.05)


def test_torchscript_and_export():
    torch.manual_seed(2)
    layer = PushPullConv2d(3, 4, 3, padding=1, trainable_inhibition=True).eval()
    x = torch.randn(1, 3, 10, 10)
    scripted = torch.jit.script(layer)
    torch.testing.assert_close(scripted(x), layer(x))
    exported = torch.export.export(layer, (x,))
    torch.testing.assert_close(exported.module()(x), layer(x))


@pytest.mark.slow
def test_torch_compile():
    torch.manual_seed(3)
    layer = PushPullConv2d(3, 4, 3, padding=1, trainable_inhibition=True)
    x = torch.randn(2, 3, 10, 10)
    compiled = torch.compile(layer)
    torch.testing.assert_close(compiled(x), layer(x), atol=1e-5, rtol=1e-5)


@pytest.mark.needs_cuda
def test_cuda_matches_cpu():
    torch.manual_seed(4)
    layer = PushPullConv2d(3, 4, 3, padding=1, trainable_inhibition=True)
    x = torch.randn(2, 3, 10, 10)
    torch.testing.assert_close(layer.cuda()(x.cuda()).cpu(), layer.cpu()(x), atol=1e-4, rtol=1e-4)
