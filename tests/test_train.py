"""rbpp train: reloadable checkpoints, determinism, resumption after SIGKILL, augmentations."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from robustbench_pp.models import create_model, file_sha256
from robustbench_pp.train import FASHION_MNIST_MEAN, TrainConfig, balanced_subset, train
from robustbench_pp.train import augment as aug


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def tiny_fashion(tmp_path, monkeypatch):
    """A learnable fake Fashion-MNIST in idx format: class k has a bright bar at row 2k."""
    rng = np.random.default_rng(0)
    root = tmp_path / "fmnist"
    root.mkdir()
    for prefix, count in (("train", 600), ("t10k", 100)):
        labels = np.arange(count) % 10
        images = rng.integers(0, 60, size=(count, 28, 28))
        for i, label in enumerate(labels):
            images[i, 2 * label + 4 : 2 * label + 7, 4:24] = 230
        _write_idx(root / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(root / f"{prefix}-labels-idx1-ubyte", labels)
    monkeypatch.setenv("FASHION_MNIST_ROOT", str(root))
    return root


def _config(out, **overrides):
    base = dict(model="resnet18_pp3", out=str(out), epochs=1, width=4, limit_train=200, batch_size=50, seed=5)
    base.update(overrides)
    return TrainConfig(**base)


def test_checkpoint_reloads_with_identical_outputs(tiny_fashion, tmp_path):
    result = train(_config(tmp_path / "run", epochs=2), progress=False, command="rbpp train --test")
    model = create_model(checkpoint=result.checkpoint).eval()  # no architecture flags needed
    card = json.loads(result.checkpoint.read_text())
    assert model.card.name == "resnet18_pp3" and model.card.width == 4 and model.card.num_classes == 10
    assert model.card.mean == FASHION_MNIST_MEAN and model.card.input_size == 32
    assert card["recipe"]["augment"] == "none" and card["seed"] == 5 and card["command"] == "rbpp train --test"
    assert card["data"]["train_images"] == 200 and card["complete"] and len(card["metrics"]["history"]) == 2
    state = torch.load(tmp_path / "run" / "train_state.pt", weights_only=True)
    trained = create_model("resnet18_pp3", width=4)
    trained.load_state_dict(state["model"])
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), trained.eval()(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="name 'resnet18' but the checkpoint card says 'resnet18_pp3'"):
        create_model("resnet18", checkpoint=result.checkpoint)


def test_deterministic_for_a_seed(tiny_fashion, tmp_path):
    weights = []
    for run, seed in (("a", 5), ("b", 5), ("c", 6)):
        train(_config(tmp_path / run, seed=seed, augment="autoaugment"), progress=False)
        weights.append(file_sha256(tmp_path / run / "model.safetensors"))
    assert weights[0] == weights[1] != weights[2]


def test_existing_run_needs_resume(tiny_fashion, tmp_path):
    from click.testing import CliRunner

    from robustbench_pp.cli import main

    result = train(_config(tmp_path / "run", epochs=2, eval_every=0), progress=False)
    assert [h["test_error"] is None for h in result.history] == [True, False]  # eval_every=0: only the last
    before = file_sha256(tmp_path / "run" / "model.safetensors")
    with pytest.raises(ValueError, match="`resume`"):
        train(_config(tmp_path / "run"), progress=False)
    cli = CliRunner().invoke(main, ["train", "--model", "resnet18_pp3", "--out", str(tmp_path / "run"), "--quiet"])
    assert cli.exit_code == 1 and "already holds a training run" in cli.output and "Traceback" not in cli.output
    assert "pass --resume to continue it or choose another --out" in cli.output  # the CLI names its flags
    assert file_sha256(tmp_path / "run" / "model.safetensors") == before  # nothing overwritten
    with pytest.raises(ValueError, match="config differs.*seed saved 5 now 6"):
        train(_config(tmp_path / "run", seed=6), resume=True, progress=False)


def test_card_records_what_the_weights_depend_on(tiny_fashion, tmp_path):
    torch.set_num_threads(2)
    result = train(_config(tmp_path / "run", eval_every=0), progress=False)
    # The run pins its own thread count (default 1) and deterministic algorithms, then restores both.
    assert torch.get_num_threads() == 2 and not torch.are_deterministic_algorithms_enabled()
    card = json.loads(result.checkpoint.read_text())
    record = card["reproducibility"]
    assert card["train_config"]["threads"] == card["torch_threads"] == record["threads"] == 1
    assert record["deterministic_algorithms"] is True and record["torch"] == torch.__version__
    assert record["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert card["model"]["inhibition_mode"] == "trainable" and card["format_version"] == 2
    with pytest.raises(ValueError, match="threads saved 1 now 2"):  # the weights depend on it
        train(_config(tmp_path / "run", eval_every=0, threads=2), resume=True, progress=False)


def test_resume_reads_a_state_saved_before_the_renames(tiny_fashion, tmp_path):
    """train_state.pt files written before `inhibition_mode` and `threads` existed still resume."""
    result = train(_config(tmp_path / "old", inhibition_mode="fixed"), progress=False)
    path = tmp_path / "old" / "train_state.pt"
    state = torch.load(path, weights_only=True)
    state["config"]["inhibition"] = state["config"].pop("inhibition_mode")
    del state["config"]["threads"]
    torch.save(state, path)
    again = train(_config(tmp_path / "old", inhibition_mode="fixed", threads=2), resume=True, progress=False)
    assert again.history == result.history  # accepted: the run was complete, nothing to redo
    with pytest.raises(ValueError, match="inhibition_mode saved 'fixed' now 'trainable'"):
        train(_config(tmp_path / "old", inhibition_mode="trainable"), resume=True, progress=False)


@pytest.mark.parametrize(
    "augment, recipe", [("autoaugment", "standard"), ("augmix", "standard"), ("augmix", "pushpull"), ("prime", "standard")]
)
def test_recipes_run(tiny_fashion, tmp_path, augment, recipe):
    result = train(_config(tmp_path / "run", augment=augment, recipe=recipe, limit_train=100), progress=False)
    card = json.loads(result.checkpoint.read_text())
    assert card["recipe"]["augment"] == augment and card["recipe"]["name"] == recipe
    assert card["recipe"]["jsd"] == (recipe == "standard" and augment in ("augmix", "prime"))
    assert card["recipe"]["schedule"] == ("onecycle" if recipe == "pushpull" else "cosine")
    assert np.isfinite(card["metrics"]["history"][0]["train_loss"])


def _run_cli(args, env):
    return subprocess.Popen([sys.executable, "-m", "robustbench_pp.cli", "train", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(tiny_fashion, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    args = ["--model", "resnet18", "--width", "4", "--limit-train", "400", "--limit-test", "20", "--batch-size", "20",
            "--epochs", "3", "--seed", "3", "--threads", "1", "--quiet"]
    killed = tmp_path / "killed"
    process = _run_cli([*args, "--out", str(killed)], env)
    deadline = time.time() + 120
    while not (killed / "train_state.pt").exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    state = torch.load(killed / "train_state.pt", weights_only=True)
    assert 1 <= state["epoch"] < 3, "the run finished before it could be killed; make it longer"
    resumed = _run_cli([*args, "--out", str(killed), "--resume"], env)
    assert resumed.wait() == 0, resumed.stderr.read().decode()
    # The uninterrupted reference runs in-process (same single thread): saves a torch start-up.
    train(TrainConfig(model="resnet18", out=str(tmp_path / "straight"), width=4, limit_train=400, limit_test=20,
                      batch_size=20, epochs=3, seed=3), progress=False)
    assert file_sha256(killed / "model.safetensors") == file_sha256(tmp_path / "straight" / "model.safetensors")
    card = json.loads((killed / "model.json").read_text())
    assert card["epoch"] == 3 and [h["epoch"] for h in card["metrics"]["history"]] == [1, 2, 3]


def test_balanced_subset():
    labels = np.repeat(np.arange(10), 50)
    subset = balanced_subset(labels, 95, seed=1)
    counts = np.bincount(labels[subset], minlength=10)
    assert counts.sum() == 95 and counts.max() - counts.min() <= 1
    assert np.array_equal(subset, balanced_subset(labels, 95, seed=1))
    assert not np.array_equal(subset, balanced_subset(labels, 95, seed=2))
    with pytest.raises(ValueError, match="needs 2 images of class 1; the source has 1"):
        balanced_subset(np.array([0, 0, 0, 0, 1]), 4, seed=0)


def test_crop_flip_keeps_pixels():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (8, 3, 6, 6), dtype=torch.uint8)
    same = aug.random_crop_flip(images, padding=0)
    for original, out in zip(images, same):
        assert torch.equal(out, original) or torch.equal(out, original.flip(-1))
    shifted = aug.random_crop_flip(images, padding=2)
    assert shifted.shape == images.shape and shifted.dtype == torch.uint8


def test_prime_primitives():
    torch.manual_seed(0)
    images = torch.rand(6, 3, 16, 16)
    torch.testing.assert_close(aug.prime_random_filter(images, max_sigma=0.0), images)
    torch.testing.assert_close(aug.prime_smooth_color(images, max_temperature=0.0), images)
    for primitive in aug.PRIME_PRIMITIVES:
        out = primitive(images)
        assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1
        assert not torch.allclose(out, images)
    mixed = aug.prime(images)
    assert mixed.shape == images.shape and 0 <= mixed.min() and mixed.max() <= 1


def test_smooth_color_matches_direct_sum():
    torch.manual_seed(1)
    images = torch.rand(2, 3, 4, 4)
    state = torch.random.get_rng_state()
    fast = aug.prime_smooth_color(images, max_cut=7, max_temperature=0.05)
    torch.random.set_rng_state(state)
    cut = torch.randint(1, 8, (2,))
    temperature = torch.rand(2) * 0.05
    coeff = torch.randn(2, 3, 7) * temperature.sqrt()[:, None, None]
    k = torch.arange(1, 8)
    coeff = coeff * (k[None] <= cut[:, None])[:, None]
    direct = images + sum(coeff[:, :, i, None, None] * torch.sin(torch.pi * (i + 1) * images) for i in range(7))
    torch.testing.assert_close(fast, direct.clamp(0, 1), atol=1e-5, rtol=1e-5)


def test_jensen_shannon_loss():
    logits = torch.randn(4, 10)
    assert aug.jensen_shannon_loss(logits, logits, logits).abs() < 1e-6
    assert aug.jensen_shannon_loss(logits, torch.randn(4, 10), torch.randn(4, 10)) > 0.01


def test_recipe_defaults_resolve():
    standard = TrainConfig(model="resnet18", out="unused").resolved()
    assert (standard.lr, standard.batch_size, standard.schedule, standard.jsd) == (0.1, 128, "cosine", False)
    assert TrainConfig(model="resnet18", out="u", augment="augmix").resolved().jsd is True
    assert TrainConfig(model="resnet18", out="u", augment="augmix", jsd=False).resolved().jsd is False
    pushpull = TrainConfig(model="resnet18_pp3", out="u", recipe="pushpull", augment="prime").resolved()
    assert (pushpull.lr, pushpull.weight_decay, pushpull.schedule, pushpull.jsd) == (0.2, 1e-5, "onecycle", False)
    # AlexNet (no BatchNorm) gets a tenth of the ResNet rate unless --lr is given.
    assert TrainConfig(model="alexnet", out="u").resolved().lr == pytest.approx(0.01)
    assert TrainConfig(model="alexnet", out="u", lr=0.05).resolved().lr == 0.05
    with pytest.raises(ValueError, match="did you mean"):
        TrainConfig(model="resnet81", out="u").resolved()


@pytest.mark.parametrize("name, value", [("epochs", 2.5), ("batch_size", True), ("threads", 1.5), ("workers", -1)])
def test_counts_that_are_not_whole_numbers_are_refused(name, value):
    with pytest.raises(ValueError, match=f"`{name}` must be a whole number"):
        TrainConfig(model="resnet18", out="u", **{name: value}).resolved()


def test_dataset_errors_name_the_fix(tmp_path):
    from robustbench_pp.datasets.sources import SourceError
    from robustbench_pp.train import load_dataset

    with pytest.raises(ValueError, match="`data_root`"):
        load_dataset("cifar10", "train")
    with pytest.raises(SourceError, match="cifar-10-batches-py"):
        load_dataset("cifar10", "train", data_root=tmp_path)  # no implicit download
    with pytest.raises(ValueError, match="cifar10 only"):
        load_dataset("fashion-mnist", "train", download=True)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("mnist", "train")


def test_dataset_errors_name_the_flags_on_the_command_line(tmp_path):
    from click.testing import CliRunner

    from robustbench_pp.cli import main

    result = CliRunner().invoke(main, ["train", "--model", "resnet18", "--dataset", "cifar10", "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and "--data-root" in result.output and "--download" in result.output, result.output
    assert "Traceback" not in result.output
