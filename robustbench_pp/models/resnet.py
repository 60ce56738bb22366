"""ResNet-18/34/50 with a CIFAR or ImageNet stem, a width knob and optional PushPull first layer.

Module names follow torchvision (``conv1``, ``bn1``, ``layerN.M.*``, ``fc``) so torchvision
state_dicts load unchanged. Stems (spec section 3): "imagenet" = 7×7 stride 2 padding 3,
BN, ReLU, 3×3 max pool stride 2; "cifar" = 3×3 stride 1 padding 1, BN, ReLU, no max pool.
``width`` is the channel count of the first stage (64 = standard); stages double it.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from robustbench_pp.models.pushpull import PushPullConv2d
from robustbench_pp.models.registry import register_model

RESNET_PAPER = "He et al., Deep Residual Learning for Image Recognition, CVPR 2016"
PUSHPULL_PAPER = "Bennabhaktula et al., PushPull-Net: Inhibition-driven ResNet robust to image corruptions, ICPR 2024"


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _shortcut(in_planes, planes, stride) if stride != 1 or in_planes != planes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        # Stride on the 3x3 conv (torchvision's "ResNet v1.5"), so torchvision weights fit.
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (
            _shortcut(in_planes, out_planes, stride) if stride != 1 or in_planes != out_planes else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride, bias=False), nn.BatchNorm2d(out_planes))


class ResNet(nn.Module):
    """A ResNet whose first layer is a plain conv or a :class:`PushPullConv2d`.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
        num_classes: classifier outputs.
        stem: "cifar" or "imagenet".
        width: channels of the first stage.
        first_layer: "conv" or "pushpull".
        avg_kernel_size, inhibition_strength: PushPull settings (see :class:`PushPullConv2d`).
        inhibition_mode: PushPull inhibition, "fixed" (the scalar ``inhibition_strength``)
            or "trainable" (one α per channel).

    Raises:
        ValueError: an unknown stem, or a width or class count below 1.
    """

    def __init__(
        self,
        block,
        layers: tuple[int, int, int, int],
        num_classes: int,
        stem: str = "cifar",
        width: int = 64,
        first_layer: str = "conv",
        avg_kernel_size: int = 0,
        inhibition_mode: str | None = None,
        inhibition_strength: float = 1.0,
    ) -> None:
        super().__init__()
        if stem not in ("cifar", "imagenet"):
            raise ValueError(f"`stem` must be 'cifar' or 'imagenet', got {stem!r}")
        if width < 1 or num_classes < 1:
            raise ValueError(f"`width` and `num_classes` must be positive, got width={width}, num_classes={num_classes}")
        kernel, stride, padding = (3, 1, 1) if stem == "cifar" else (7, 2, 3)
        if first_layer == "pushpull":
            self.conv1 = PushPullConv2d(
                3, width, kernel, stride, padding, avg_kernel_size=avg_kernel_size,
                inhibition=inhibition_strength, trainable_inhibition=inhibition_mode == "trainable",
            )
        else:
            self.conv1 = nn.Conv2d(3, width, kernel, stride, padding, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if stem == "imagenet" else nn.Identity()
        in_planes = width
        stages = []
        for index, blocks in enumerate(layers):
            planes = width * 2**index
            stage = []
            for b in range(blocks):
                stage.append(block(in_planes, planes, stride=2 if (b == 0 and index > 0) else 1))
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        for module in self.modules():
            # Same Kaiming init for the PushPull push kernel as for every other conv (spec sec. 4).
            if isinstance(module, (nn.Conv2d, PushPullConv2d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


_DEPTHS = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)), 50: (Bottleneck, (3, 4, 6, 3))}


def _build(depth: int, first_layer: str, avg_kernel_size: int, *, num_classes, stem, width, inhibition_mode,
           inhibition_strength):
    block, layers = _DEPTHS[depth]
    return ResNet(
        block, layers, num_classes, stem=stem, width=width, first_layer=first_layer,
        avg_kernel_size=avg_kernel_size, inhibition_mode=inhibition_mode, inhibition_strength=inhibition_strength,
    )


def _resnet_width(state_dict: dict) -> int | None:
    weight = state_dict.get("conv1.weight")
    return int(weight.shape[0]) if weight is not None else None


for _depth in _DEPTHS:
    register_model(f"resnet{_depth}", architecture=f"resnet{_depth}", paper=RESNET_PAPER, infer_width=_resnet_width)(
        partial(_build, _depth, "conv", 0)
    )
    # _pp0: PushPull without pooling of the pull response (avg_kernel_size=0 runs of the PushPull-Net code).
    for _avg in (0, 3, 5):
        register_model(
            f"resnet{_depth}_pp{_avg}",
            architecture=f"resnet{_depth}",
            paper=PUSHPULL_PAPER,
            first_layer="pushpull",
            avg_kernel_size=_avg,
            # The published training default is a trainable per-channel inhibition.
            default_inhibition_mode="trainable",
            infer_width=_resnet_width,
        )(partial(_build, _depth, "pushpull", _avg))
