"""The `pushpull` recipe as the PushPull-Net runs: schedule, partial batch, precision, seed."""

from __future__ import annotations

import json
import math

import pytest
import torch

from robustbench_pp.train import RECIPES, TrainConfig, onecycle_factors, train
from tests._fixtures import tiny_fashion_mnist


@pytest.fixture
def fashion(tmp_path, monkeypatch):
    root = tiny_fashion_mnist(tmp_path / "fmnist", train=300, test=40)
    monkeypatch.setenv("FASHION_MNIST_ROOT", str(root))
    return root


def _reference_schedule(lr_max: float, lr_initial: float, lr_end: float, epochs: int, steps_per_epoch: int):
    """lr and momentum before every step of OneCycleLR built with the PushPull-Net code's arguments."""
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=lr_initial, momentum=0.9, weight_decay=1e-5)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr_max, epochs=epochs, steps_per_epoch=steps_per_epoch,
        div_factor=int(lr_max / lr_initial), final_div_factor=int(lr_max / lr_end),
    )
    seen = []
    for _ in range(epochs * steps_per_epoch):
        seen.append((optimizer.param_groups[0]["lr"], optimizer.param_groups[0]["momentum"]))
        optimizer.step()
        scheduler.step()
    return seen


def test_pushpull_schedule_equals_onecyclelr_at_every_step(fashion, tmp_path, monkeypatch):
    """The lr and momentum of every optimiser step of a real run equal OneCycleLR's (difference 0)."""
    expected = _reference_schedule(0.2, 5e-3, 5e-5, epochs=2, steps_per_epoch=math.ceil(203 / 50))
    used = []
    original_step = torch.optim.SGD.step

    def recording_step(self, *args, **kwargs):
        used.append((self.param_groups[0]["lr"], self.param_groups[0]["momentum"]))
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", recording_step)
    # 203 images in batches of 50: 4 full batches and a partial one of 3, kept -> 5 steps per epoch.
    config = TrainConfig(model="resnet18", out=str(tmp_path / "run"), recipe="pushpull", epochs=2, width=2,
                         limit_train=203, limit_test=20, batch_size=50, eval_every=0)
    result = train(config, progress=False)
    assert len(used) == len(expected) == 10
    assert max(abs(a - b) for pair_used, pair_expected in zip(used, expected)
               for a, b in zip(pair_used, pair_expected)) == 0
    assert used[0][0] == pytest.approx(0.005, rel=1e-12) and used[0][1] == 0.95  # 0.2 / int(0.2 / 5e-3); max momentum
    assert min(m for _, m in used) == pytest.approx(0.85, abs=1e-3)  # cycled down at the peak, not held at 0.9
    card = json.loads(result.checkpoint.read_text())
    assert card["seed"] == 1234 and card["recipe"]["precision"] == "fp32"
    assert card["recipe"]["last_partial_batch"] == "kept" and card["recipe"]["weight_decay"] == 1e-5
    assert card["train_config"]["lr_start"] == 5e-3 and card["data"]["train_images"] == 203


def test_onecycle_factors_are_truncated_as_the_original_code():
    assert onecycle_factors(0.2, 5e-3, 5e-5) == (40, 4000)  # CIFAR-10, ImageNet-100/200
    assert onecycle_factors(1.0, 0.05, 5e-5) == (20, 20000)  # ImageNet-1k
    assert onecycle_factors(0.3, 0.2, 5e-5) == (1, 5999)  # 0.3 / 5e-5 is 5999.999... in floats: int() truncates
    with pytest.raises(ValueError, match="`lr`"):
        onecycle_factors(1e-3, 5e-3, 5e-5)


@pytest.mark.parametrize(
    "dataset, epochs, batch, lr, lr_start",
    [("cifar10", 30, 64, 0.2, 5e-3), ("imagenet100", 20, 64, 0.2, 5e-3), ("imagenet200", 20, 64, 0.2, 5e-3),
     ("imagenet", 20, 128, 1.0, 0.05)],
)
def test_pushpull_defaults_per_training_set(dataset, epochs, batch, lr, lr_start):
    resolved = TrainConfig(model="resnet50_pp3", out="u", recipe="pushpull", dataset=dataset).resolved()
    assert (resolved.epochs, resolved.batch_size, resolved.lr, resolved.lr_start) == (epochs, batch, lr, lr_start)
    assert (resolved.seed, resolved.weight_decay, resolved.schedule, resolved.jsd) == (1234, 1e-5, "onecycle", False)
    assert resolved.stem == ("cifar" if dataset == "cifar10" else "imagenet")
    assert RECIPES["pushpull"].keep_last_batch and not RECIPES["pushpull"].autocast_on_cuda


def test_standard_recipe_is_unchanged():
    resolved = TrainConfig(model="resnet18", out="u").resolved()
    assert (resolved.epochs, resolved.seed, resolved.batch_size, resolved.schedule) == (2, 0, 128, "cosine")
    assert not RECIPES["standard"].keep_last_batch and RECIPES["standard"].autocast_on_cuda


def test_a_last_batch_of_one_image_is_refused(fashion, tmp_path):
    config = TrainConfig(model="resnet18", out=str(tmp_path / "run"), recipe="pushpull", epochs=1, width=2,
                         limit_train=201, batch_size=50)
    with pytest.raises(ValueError, match="share of 1: BatchNorm needs 2; change `batch_size`"):
        train(config, progress=False)
    assert not (tmp_path / "run").exists()
