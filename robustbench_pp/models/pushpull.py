"""PushPull-Conv (PushPull-Net, ICPR 2024): a convolution with a built-in inhibitory response.

For input ``x`` and push kernel ``w`` (out×in×k×k):

- pull kernel per output channel ``o``: ``w_pull[o] = -w[o] + (max(w[o]) + min(w[o]))``,
  max/min over that channel's in×k×k values (opposite contrast, same value range);
- ``push = ReLU(conv(x, w))``; ``pull = ReLU(A(conv(x, w_pull)))`` with ``A`` an average
  pooling of size ``a`` (stride 1, padding (a−1)/2, padding not counted; ``a = 0``: none);
- ``out = push − α ⊙ pull + b`` with per-channel bias ``b`` and inhibition ``α`` either a
  fixed scalar or trainable per output channel (initialised U(0, 1)).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def pull_kernel(push_weight: torch.Tensor) -> torch.Tensor:
    """The pull kernel of a push kernel (spec section 3), per output channel.

    Args:
        push_weight: out×in×k×k push kernel.

    Returns:
        A tensor of the same shape: ``-w[o] + max(w[o]) + min(w[o])`` for each ``o``.
    """
    flat = push_weight.flatten(1)
    offset = flat.amax(dim=1) + flat.amin(dim=1)
    return -push_weight + offset.view(-1, 1, 1, 1)


def _mean_pool_same(x: torch.Tensor, size: int) -> torch.Tensor:
    """Average pooling, stride 1, padding (size−1)/2, zero padding not counted.

    Equal to ``F.avg_pool2d(..., count_include_pad=False)`` but computed as a depthwise
    box-sum convolution divided by the number of real pixels under the window, which is
    3-4× faster on CPU (measured on 500×8×32×32: 28 ms vs 98 ms).
    """
    channels, (height, width), pad = x.shape[1], x.shape[-2:], (size - 1) // 2
    box = torch.ones(channels, 1, size, size, dtype=x.dtype, device=x.device)
    sums = F.conv2d(x, box, padding=pad, groups=channels)
    ones = torch.ones(1, 1, height, width, dtype=x.dtype, device=x.device)
    counts = F.conv2d(ones, box[:1], padding=pad)
    return sums / counts


class PushPullConv2d(nn.Module):
    """A PushPull convolution, a drop-in replacement for the first ``nn.Conv2d`` of a network.

    ``.weight`` is the push kernel (Kaiming-uniform init like ``nn.Conv2d``), ``.bias`` the
    per-channel bias (init U(−1, 1) as in the published training code). With
    ``trainable_inhibition=True`` the inhibition is a parameter ``.inhibition`` of shape
    ``(out_channels,)`` initialised U(0, 1); otherwise it is the fixed scalar ``inhibition``,
    kept as a non-persistent buffer (so the state_dict holds only trainable tensors).

    Cost: on CPU the unit is several times a plain first convolution (two convolutions, a
    box filter and ~10 full-resolution element-wise passes); ``torch.compile`` fuses them.

    Support (tested on CPU; the code path is the same on CUDA): float32, autocast
    bfloat16/float16 (the output has the autocast dtype), channels_last inputs,
    ``torch.compile``, ``torch.jit.script`` and ``torch.export``.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel side.
        stride: convolution stride.
        padding: convolution zero padding.
        avg_kernel_size: side ``a`` of the pull average pooling; must be 0 (none) or odd.
        inhibition: fixed inhibition strength α (ignored when trainable).
        trainable_inhibition: learn one α per output channel.
        bias: add a per-channel bias.

    Raises:
        ValueError: for an even ``avg_kernel_size`` (the pooling would shift the map).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        avg_kernel_size: int = 3,
        inhibition: float = 1.0,
        trainable_inhibition: bool = False,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if avg_kernel_size < 0 or (avg_kernel_size > 0 and avg_kernel_size % 2 == 0):
            raise ValueError(f"avg_kernel_size must be 0 (no pooling) or odd, got {avg_kernel_size}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.avg_kernel_size = avg_kernel_size
        self.trainable_inhibition = trainable_inhibition
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels).uniform_(-1.0, 1.0))
        else:
            self.register_parameter("bias", None)
        if trainable_inhibition:
            self.inhibition = nn.Parameter(torch.rand(out_channels))
        else:
            self.register_buffer("inhibition", torch.full((out_channels,), float(inhibition)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Two convolutions and a fused multiply-add: measured ~25% faster on CPU than one
        # convolution over the concatenated kernels followed by slicing.
        push = F.relu(F.conv2d(x, self.weight, None, self.stride, self.padding))
        pull = F.conv2d(x, pull_kernel(self.weight), None, self.stride, self.padding)
        if self.avg_kernel_size > 0:
            pull = _mean_pool_same(pull, self.avg_kernel_size)
        inhibition = self.inhibition.to(push.dtype).view(1, -1, 1, 1)
        if self.bias is None:
            return push - inhibition * F.relu(pull)
        return torch.addcmul(self.bias.to(push.dtype).view(1, -1, 1, 1), inhibition, F.relu(pull), value=-1) + push

    def extra_repr(self) -> str:
        mode = "trainable" if self.trainable_inhibition else f"fixed={float(self.inhibition[0]):g}"
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, avg_kernel_size={self.avg_kernel_size}, inhibition={mode}, "
            f"bias={self.bias is not None}"
        )
