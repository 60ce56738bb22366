"""Training on ImageNet-style class folders: listing, per-image augmentation, PRIME per batch, DDP."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from robustbench_pp.datasets import get_dataset
from robustbench_pp.train import TrainConfig, train
from robustbench_pp.train.folders import FolderTrainSet, batch_loader, list_training_folder
from robustbench_pp.train.prime import batch_diffeomorphism, batch_random_filter, batch_smooth_color, prime
from tests._fake_imagenet import fake_class_folder

IMAGENET100 = get_dataset("imagenet100-c").wnids()
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def imagenet100_folder(tmp_path_factory):
    """100 classes of the shipped list (one image each) plus two classes outside it."""
    root = tmp_path_factory.mktemp("imagenet100") / "train"
    return fake_class_folder(root, [*IMAGENET100, "n00000001", "n99999999"], per_class=1)


def test_listing_keeps_the_subset_classes_in_sorted_wnid_order(imagenet100_folder, tmp_path):
    listing = list_training_folder("imagenet100", imagenet100_folder)
    assert listing.class_names == IMAGENET100 and len(listing.paths) == 100
    assert [Path(p).parent.name for p in listing.paths] == list(IMAGENET100)
    assert listing.labels.tolist() == list(range(100))
    with pytest.raises(ValueError, match="`data_root`.*lacks 100 of the 100 requested classes"):
        list_training_folder("imagenet100", fake_class_folder(tmp_path / "other", ["n00000002"]))
    with pytest.raises(ValueError, match="has 102 class folders; imagenet needs 1000"):
        list_training_folder("imagenet", imagenet100_folder)
    with pytest.raises(ValueError, match="training folder .*missing.* \\(`data_root`\\) not found"):
        list_training_folder("imagenet200", tmp_path / "missing")


def _train_set(folder, **overrides) -> FolderTrainSet:
    listing = list_training_folder("imagenet100", folder)
    values = dict(paths=listing.paths, labels=listing.labels, augment="autoaugment", augmix_all_ops=True,
                  augment_before_crop=True, jsd=False, seed=3)
    values.update(overrides)
    return FolderTrainSet(**values)


def test_an_image_depends_on_seed_epoch_and_index_only(imagenet100_folder):
    train_set = _train_set(imagenet100_folder)
    views, label = train_set[7]
    assert views.shape == (1, 3, 224, 224) and views.dtype == torch.uint8 and label == 7
    torch.manual_seed(123)  # the global stream does not matter, and is left as it was
    state = torch.random.get_rng_state()
    assert torch.equal(train_set[7][0], views) and torch.equal(torch.random.get_rng_state(), state)
    in_workers = list(batch_loader(train_set, [[7, 3], [5]], workers=2, pin_memory=False))
    assert torch.equal(in_workers[0][0][0], views) and in_workers[0][1].tolist() == [7, 3]
    train_set.epoch = 1
    assert not torch.equal(train_set[7][0], views)
    jsd = _train_set(imagenet100_folder, augment="augmix", jsd=True, augment_before_crop=False)
    assert jsd[7][0].shape == (3, 3, 224, 224)


def test_prime_imagenet_draws_its_parameters_once_per_batch():
    torch.manual_seed(0)
    image = torch.rand(1, 3, 32, 32)
    twins = image.repeat(2, 1, 1, 1)
    warped = batch_diffeomorphism(twins)
    assert torch.equal(warped[0], warped[1]) and not torch.allclose(warped[0], image[0])  # one field per batch
    colored = batch_smooth_color(twins)
    assert not torch.equal(colored[0], colored[1])  # coefficients per image
    torch.testing.assert_close(batch_random_filter(twins, max_sigma=0.0), twins)
    mixed = prime(torch.rand(4, 3, 32, 32), config="imagenet")
    assert mixed.shape == (4, 3, 32, 32) and 0 <= mixed.min() and mixed.max() <= 1
    with pytest.raises(ValueError, match="unknown PRIME configuration"):
        prime(image, config="tiny")


def _folder_config(out, train_root, **overrides) -> TrainConfig:
    values = dict(model="resnet18_pp3", out=str(out), dataset="imagenet100", recipe="pushpull", data_root=str(train_root),
                  val_root=str(train_root), epochs=1, width=4, batch_size=25, limit_test=20, workers=0, seed=2)
    values.update(overrides)
    return TrainConfig(**values)


@pytest.mark.slow
@pytest.mark.parametrize("augment", ["none", "autoaugment", "augmix", "prime"])
def test_training_on_a_fake_imagenet100_folder(imagenet100_folder, tmp_path, augment):
    result = train(_folder_config(tmp_path / "run", imagenet100_folder, augment=augment), progress=False)
    card = json.loads(result.checkpoint.read_text())
    assert card["model"]["num_classes"] == 100 and card["model"]["input_size"] == 224
    assert card["model"]["stem"] == "imagenet" and card["model"]["mean"] == [0.485, 0.456, 0.406]
    assert card["data"]["train_images"] == 100 and card["data"]["test_images"] == 20
    assert card["data"]["val_geometry"] == "resize256-crop224" and card["recipe"]["augment"] == augment
    entry = card["metrics"]["history"][0]
    assert np.isfinite(entry["train_loss"]) and 0 <= entry["test_error"] <= 1


def test_a_missing_validation_folder_is_named_by_its_flag(imagenet100_folder, tmp_path):
    from click.testing import CliRunner

    from robustbench_pp.cli import main

    result = CliRunner().invoke(main, [
        "train", "--model", "resnet18", "--dataset", "imagenet100", "--data-root", str(imagenet100_folder),
        "--val-root", str(tmp_path / "no-val"), "--out", str(tmp_path / "run"), "--quiet"])
    assert result.exit_code == 1 and "--val-root" in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "run" / "model.json").exists()


@pytest.mark.slow
def test_two_gloo_processes_train_the_weights_of_one_with_the_same_global_batch(imagenet100_folder, tmp_path):
    """torchrun, 2 CPU processes (gloo, synchronised BatchNorm): one epoch equals a 1-process run.

    62 images in global batches of 41: shares of 21 + 20, then 11 + 10 (unequal shares test the
    loss weighting). Measured here: largest parameter difference 5.4e-5 (one process on 1 vs 2
    threads: 5.1e-5); per-rank BatchNorm gives 0.11, unweighted shares 8.3e-4.
    """
    args = ["--model", "resnet18_pp3", "--dataset", "imagenet100", "--recipe", "pushpull", "--data-root",
            str(imagenet100_folder), "--val-root", str(imagenet100_folder), "--epochs", "1", "--width", "4",
            "--batch-size", "41", "--limit-train", "62", "--limit-test", "10", "--workers", "0", "--seed", "2",
            "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "robustbench_pp.cli", "train", *args, "--out", str(tmp_path / "two")],
        env=env, capture_output=True, text=True, timeout=600)
    assert launched.returncode == 0, launched.stderr[-3000:]
    train(_folder_config(tmp_path / "one", imagenet100_folder, batch_size=41, limit_train=62, limit_test=10),
          progress=False)
    two = torch.load(tmp_path / "two" / "train_state.pt", weights_only=True)
    one = torch.load(tmp_path / "one" / "train_state.pt", weights_only=True)
    assert two["model"].keys() == one["model"].keys()
    for name, value in one["model"].items():
        running = "running_" in name or "num_batches" in name
        torch.testing.assert_close(two["model"][name], value, rtol=0, atol=2e-3 if running else 2e-4, msg=name)
    assert two["optimizer"]["state"].keys() == one["optimizer"]["state"].keys()
    card = json.loads((tmp_path / "two" / "model.json").read_text())
    assert card["processes"] == 2 and card["complete"] and card["data"]["train_images"] == 62


@pytest.mark.slow
def test_a_run_stopped_after_an_epoch_resumes_under_torchrun(imagenet100_folder, tmp_path, monkeypatch):
    """Epoch 1 on one process, epoch 2 resumed by two: the weights of an uninterrupted 1-process run."""
    from robustbench_pp.train import loop

    config = _folder_config(tmp_path / "stopped", imagenet100_folder, epochs=2, batch_size=41, limit_train=62,
                            limit_test=10)
    saves = []
    original = loop._save_epoch

    def save_then_stop(*args):
        original(*args)
        saves.append(1)
        raise KeyboardInterrupt  # as if killed after the first epoch's checkpoint

    monkeypatch.setattr(loop, "_save_epoch", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train(config, progress=False)
    monkeypatch.setattr(loop, "_save_epoch", original)
    assert json.loads((tmp_path / "stopped" / "model.json").read_text())["epoch"] == 1
    args = ["--model", "resnet18_pp3", "--dataset", "imagenet100", "--recipe", "pushpull", "--data-root",
            str(imagenet100_folder), "--val-root", str(imagenet100_folder), "--epochs", "2", "--width", "4",
            "--batch-size", "41", "--limit-train", "62", "--limit-test", "10", "--workers", "0", "--seed", "2",
            "--quiet", "--resume", "--out", str(tmp_path / "stopped")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    resumed = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                              "-m", "robustbench_pp.cli", "train", *args], env=env, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    train(dataclasses.replace(config, out=str(tmp_path / "straight")), progress=False)
    done = torch.load(tmp_path / "stopped" / "train_state.pt", weights_only=True)
    straight = torch.load(tmp_path / "straight" / "train_state.pt", weights_only=True)
    assert done["epoch"] == straight["epoch"] == 2
    for name, value in straight["model"].items():
        running = "running_" in name or "num_batches" in name
        torch.testing.assert_close(done["model"][name], value, rtol=0, atol=2e-3 if running else 2e-4, msg=name)
    card = json.loads((tmp_path / "stopped" / "model.json").read_text())
    assert card["complete"] and [h["epoch"] for h in card["metrics"]["history"]] == [1, 2]
