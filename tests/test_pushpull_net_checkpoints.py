"""Checkpoints exactly as the PushPull-Net training code writes them load, with identical logits.

The network they are saved from is rebuilt here from the spec (section 3) in that code's
module names (``conv1.push_conv``, ``conv1.pull_inhibition_strength``, ``bn``, ``classifier``;
torchvision's residual stages), independently of robustbench_pp's ResNet. Its Lightning files
are assembled the way Lightning 2.1 / PyTorch 2.1 pickled them: hyper-parameters in an
``AttributeDict`` (a dict subclass) holding the augmentation object and a ``PosixPath``, the
optimizer state, and a OneCycleLR state whose ``anneal_func`` is a bound method. The classes of
those objects exist only while the file is written (as on the training machine); reading it
never imports them.
"""

from __future__ import annotations

import pathlib
import sys
import types
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
import torchvision
from click.testing import CliRunner
from torch import nn
from torchvision.models.resnet import BasicBlock

from robustbench_pp.cli import main
from robustbench_pp.models import CheckpointError, create_model, load_checkpoint


class OriginalPushPull(nn.Module):
    """PushPull-Conv in the original code's names (spec section 3, written from the spec)."""

    def __init__(self, out_channels, kernel, stride, padding, avg, trainable, strength):
        super().__init__()
        self.stride, self.padding, self.trainable = stride, padding, trainable
        self.push_conv = nn.Conv2d(3, out_channels, kernel, stride, padding, bias=False)
        self.bias = nn.Parameter(torch.empty(out_channels).uniform_(-1, 1))
        if trainable:
            self.pull_inhibition_strength = nn.Parameter(torch.rand(out_channels))
        else:
            self.pull_inhibition_strength = strength  # a plain attribute: not in the state_dict
        self.avg = nn.AvgPool2d(avg, 1, (avg - 1) // 2, count_include_pad=False) if avg else None

    def forward(self, x):
        w = self.push_conv.weight
        pull_w = -w + (w.amax(dim=(1, 2, 3), keepdim=True) + w.amin(dim=(1, 2, 3), keepdim=True))
        push = F.relu(self.push_conv(x))
        pull = F.conv2d(x, pull_w, None, self.stride, self.padding)
        if self.avg is not None:
            pull = self.avg(pull)
        alpha = self.pull_inhibition_strength
        alpha = alpha.view(1, -1, 1, 1) if self.trainable else alpha
        return push - F.relu(pull) * alpha + self.bias.view(1, -1, 1, 1)


class OriginalResNet18(nn.Module):
    """ResNet-18 as the original code lays it out (stem ``conv1``/``bn``, head ``classifier``)."""

    def __init__(self, width, num_classes, stem, push_pull, avg=3, trainable=True, strength=1.0):
        super().__init__()
        kernel, stride, padding = (3, 1, 1) if stem == "cifar" else (7, 2, 3)
        if push_pull:
            self.conv1 = OriginalPushPull(width, kernel, stride, padding, avg, trainable, strength)
        else:
            self.conv1 = nn.Conv2d(3, width, kernel, stride, padding)  # the plain stem has a bias there
        self.bn = nn.BatchNorm2d(width)
        self.maxpool = nn.Identity() if stem == "cifar" else nn.MaxPool2d(3, 2, 1)
        stages, planes_in = [], width
        for index in range(4):
            planes, stride = width * 2**index, 1 if index == 0 else 2
            down = None if stride == 1 and planes_in == planes else nn.Sequential(
                nn.Conv2d(planes_in, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
            stages.append(nn.Sequential(BasicBlock(planes_in, planes, stride, down), BasicBlock(planes, planes)))
            planes_in = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.classifier = nn.Linear(planes_in, num_classes)

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _trained_looking(model):
    torch.manual_seed(0)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand_like(tensor) + 0.5 if "running_var" in name else torch.randn_like(tensor) * 0.3)
    return model.eval()


def _logits(model, size):
    torch.manual_seed(1)
    with torch.no_grad():
        return model.eval()(torch.rand(3, 3, size, size))


class _TrainingMachine:
    """Fake modules for the classes a training run pickles; installed only while writing."""

    def __init__(self, monkeypatch):
        self.monkeypatch = monkeypatch

    def module(self, name: str, **classes):
        parts = name.split(".")
        for depth in range(1, len(parts)):  # parent packages, as pickle imports them
            parent = ".".join(parts[:depth])
            if parent not in sys.modules:
                self.monkeypatch.setitem(sys.modules, parent, types.ModuleType(parent))
        module = types.ModuleType(name)
        for cls_name, cls in classes.items():
            cls.__module__, cls.__qualname__ = name, cls_name
            setattr(module, cls_name, cls)
        self.monkeypatch.setitem(sys.modules, name, module)
        return module

    def one_cycle_state(self, optimizer):
        """A OneCycleLR ``state_dict()`` as PyTorch 2.1 returned it: ``anneal_func`` a bound method."""

        class OneCycleLR:  # PyTorch 2.1's attribute layout, reduced
            def __init__(self, optimizer):
                self.optimizer, self.total_steps, self.last_epoch = optimizer, 100, 99
                self.anneal_func = self._annealing_cos

            def _annealing_cos(self, start, end, pct):
                return end + (start - end) / 2.0 * (1 + torch.cos(torch.tensor(torch.pi * pct)))

            def state_dict(self):
                return {k: v for k, v in self.__dict__.items() if k != "optimizer"}

        OneCycleLR.__module__, OneCycleLR.__qualname__ = "torch.optim.lr_scheduler", "OneCycleLR"
        self.monkeypatch.setattr(torch.optim.lr_scheduler, "OneCycleLR", OneCycleLR)
        return OneCycleLR(optimizer).state_dict()

    def hyper_parameters(self, values: dict):
        class AttributeDict(dict):
            def __getattr__(self, key):
                return self[key]

        self.module("lightning.fabric.utilities.data", AttributeDict=AttributeDict)
        return AttributeDict(values)


def _prime_module(machine):
    class GeneralizedPRIMEModule(nn.Module):  # a PRIME-like augmentation module of that code's own package
        def __init__(self):
            super().__init__()
            self.mixture_width, self.max_depth = 3, 3
            self.aug = nn.Identity()

    machine.module("data.prime", GeneralizedPRIMEModule=GeneralizedPRIMEModule)
    return GeneralizedPRIMEModule()


def _write_lightning(path, original, hparams, machine):
    optimizer = torch.optim.SGD(original.parameters(), lr=0.01, momentum=0.9)
    original.train()(torch.rand(2, 3, 64, 64)).sum().backward()
    optimizer.step()  # optimizer state with momentum buffers, as after training
    checkpoint = {
        "epoch": 29, "global_step": 4690, "pytorch-lightning_version": "2.1.0",
        "state_dict": OrderedDict(original.state_dict()),
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 30}}}},
        "callbacks": {"ModelCheckpoint{'monitor': None}": {"best_model_path": "", "dirpath": "/home/x/logs"}},
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [machine.one_cycle_state(optimizer)],
        "hparams_name": "args",
        "hyper_parameters": machine.hyper_parameters(hparams),
    }
    torch.save(checkpoint, path)
    return checkpoint


CASES = {
    # name: (stem, push_pull, avg, trainable, strength, augmentation kind, expected registered name, recipe)
    "autoaugment-pp3": ("cifar", True, 3, True, 1.0, "autoaugment", "resnet18_pp3", "autoaugment"),
    "augmix-pp5-fixed": ("imagenet", True, 5, False, 0.7, "augmix", "resnet18_pp5", "augmix"),
    "prime-pp0": ("cifar", True, 0, True, 1.0, "prime", "resnet18_pp0", "prime"),
    "plain-stem": ("cifar", False, 0, False, 1.0, "none", "resnet18", "none"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_lightning_files_of_the_training_code_load_with_identical_logits(tmp_path, monkeypatch, case):
    stem, push_pull, avg, trainable, strength, augmentation, expected_name, recipe = CASES[case]
    machine = _TrainingMachine(monkeypatch)
    torch.manual_seed(3)
    original = OriginalResNet18(8, 10, stem, push_pull, avg, trainable, strength)
    augment = {"autoaugment": lambda: torchvision.transforms.AutoAugment(torchvision.transforms.AutoAugmentPolicy.IMAGENET),
               "augmix": lambda: torchvision.transforms.AugMix(), "prime": lambda: _prime_module(machine),
               "none": lambda: "none"}[augmentation]()
    hparams = {"use_push_pull": push_pull, "num_push_pull_layers": 1, "avg_kernel_size": avg,
               "pull_inhibition_strength": strength, "trainable_pull_inhibition": trainable, "model": "resnet18",
               "dataset_name": "cifar10" if stem == "cifar" else "imagenet100", "num_classes": 10,
               "augmentation": augment, "ckpt": pathlib.PurePosixPath("/home/x/last.ckpt"), "img_size": 32}
    _write_lightning(tmp_path / "last.ckpt", _trained_looking(original), hparams, machine)
    monkeypatch.undo()  # the training machine's classes are gone: reading must not need them
    with pytest.raises(Exception):  # noqa: PT011 - any refusal: torch cannot read it without the code
        torch.load(tmp_path / "last.ckpt", weights_only=True)

    loaded = create_model(checkpoint=tmp_path / "last.ckpt")
    assert loaded.card.name == expected_name and loaded.checkpoint.kind == "lightning"
    assert loaded.card.inhibition_mode == (None if not push_pull else ("trainable" if trainable else "fixed"))
    if push_pull and not trainable:
        assert loaded.card.inhibition_strength == strength
    assert loaded.checkpoint.info["recipe"] == recipe
    size = 32 if stem == "cifar" else 64
    difference = (_logits(loaded, size) - _logits(original, size)).abs().max().item()
    assert difference < 1e-5, difference


def test_plain_state_dict_in_the_original_names_loads_with_a_model_name(tmp_path):
    torch.manual_seed(4)
    original = _trained_looking(OriginalResNet18(8, 10, "cifar", True, 3, True))
    torch.save(original.state_dict(), tmp_path / "weights.pt")
    loaded = create_model("resnet18_pp3", checkpoint=tmp_path / "weights.pt")
    assert loaded.card.width == 8 and loaded.card.inhibition_mode == "trainable"
    assert loaded.checkpoint.info["key_names"] == "pushpull-net"
    assert (_logits(loaded, 32) - _logits(original, 32)).abs().max().item() < 1e-5
    plain = _trained_looking(OriginalResNet18(8, 10, "cifar", False))
    torch.save(plain.state_dict(), tmp_path / "plain.pt")
    again = create_model("resnet18", checkpoint=tmp_path / "plain.pt")  # the stem bias is folded into bn
    assert (_logits(again, 32) - _logits(plain, 32)).abs().max().item() < 1e-5
    no_pool = _trained_looking(OriginalResNet18(8, 10, "cifar", True, 0, True))
    torch.save(no_pool.state_dict(), tmp_path / "pp0.pt")
    assert (_logits(create_model("resnet18_pp0", checkpoint=tmp_path / "pp0.pt"), 32)
            - _logits(no_pool, 32)).abs().max().item() < 1e-5


@pytest.mark.slow
def test_original_state_dict_evaluates_from_the_command_line(tmp_path):
    from _fixtures import tiny_fashion_mnist

    fmnist = tiny_fashion_mnist(tmp_path / "fm", test=40, train=10)
    torch.manual_seed(5)
    torch.save(_trained_looking(OriginalResNet18(4, 10, "cifar", True, 3, True)).state_dict(), tmp_path / "w.pt")
    out = tmp_path / "r.jsonl"
    result = CliRunner().invoke(main, ["evaluate", "--model", "resnet18_pp3", "--checkpoint", str(tmp_path / "w.pt"),
                                       "--dataset", "fashion-mnist-c", "--source-root", str(fmnist), "--on-the-fly",
                                       "--corruptions", "fog", "--severities", "1", "--limit", "20", "--device", "cpu",
                                       "--quiet", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.exists()


def test_unsupported_pooling_size_and_broken_hparams_are_one_line_errors(tmp_path):
    original = OriginalResNet18(4, 10, "cifar", True, 3, True)
    torch.save({"state_dict": original.state_dict(),
                "hyper_parameters": {"use_push_pull": True, "avg_kernel_size": 7, "model": "resnet18"}},
               tmp_path / "a.ckpt")
    with pytest.raises(CheckpointError, match="avg_kernel_size=7 has no registered model"):
        load_checkpoint(tmp_path / "a.ckpt")
    torch.save({"state_dict": original.state_dict(), "hyper_parameters": [1, 2]}, tmp_path / "b.ckpt")
    with pytest.raises(CheckpointError, match="must be mappings"):
        load_checkpoint(tmp_path / "b.ckpt")
