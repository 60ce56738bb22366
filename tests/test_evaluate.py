"""rbpp evaluate: counts, subsets, audit, resume after SIGKILL, shards/merge, 2-process gloo."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from _fixtures import tiny_fashion_mnist
from robustbench_pp import results
from robustbench_pp.cli import main
from robustbench_pp.evaluate import EvalSettings, EvaluationError, Forward, evaluate_cell, run_evaluation
from robustbench_pp.evaluate.engine import CALIBRATION_BINS

CELLS = "gaussian_noise,contrast"


@pytest.fixture(scope="module")
def fmnist(tmp_path_factory):
    return tiny_fashion_mnist(tmp_path_factory.mktemp("fmnist"), test=121, train=40)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from robustbench_pp.models import create_model

    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=10, width=4)
    path = tmp_path_factory.mktemp("ckpt") / "resnet18_w4.pt"
    torch.save(model.state_dict(), path)
    return path


def _env(fmnist):
    env = dict(os.environ, FASHION_MNIST_ROOT=str(fmnist), OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    env.pop("WORLD_SIZE", None)
    return env


def _base_args(checkpoint, out, *extra):
    return ["evaluate", "--model", "resnet18", "--width", "4", "--checkpoint", str(checkpoint),
            "--dataset", "fashion-mnist-c", "--on-the-fly", "--corruptions", CELLS, "--severities", "1,4",
            "--device", "cpu", "--batch-size", "32", "--quiet", "--workers", "0", "--out", str(out), *extra]


def _counts(path):
    return {r.cell: (r.n_correct, r.n_total, r.n_correct_top5, r.extra["correct_bits"]) for r in results.read_records(path)}


class _Fixed(torch.nn.Module):
    """Returns stored logits for a batch, to check top-1/top-5/ECE by hand."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits
        self.calls = []

    def forward(self, x):
        self.calls.append(len(x))
        start = sum(self.calls[:-1])
        return self.logits[start : start + len(x)]


def test_engine_counts_top5_and_calibration_by_hand():
    logits = torch.tensor([[5.0, 1, 0, 0, 0, 0], [0, 4.0, 3, 0, 0, 0], [0, 0, 0, 0, 0, 9.0], [1.0, 1, 1, 1, 1, 1]])
    labels = torch.tensor([0, 2, 0, 3])
    model = _Fixed(logits)
    forward = Forward(model, (0.5,) * 3, (0.5,) * 3, torch.device("cpu"))
    images = torch.zeros((4, 3, 8, 8), dtype=torch.uint8)
    outcome = evaluate_cell(forward, [(images, labels)])
    assert outcome.correct.tolist() == [True, False, False, False]
    # top-5 of 6 classes: sample 2's label 0 is among the five highest (ties broken by index);
    # sample 3 (all equal) counts as hit when label 3 lies in the first five indices.
    assert outcome.n_correct_top5 == int(sum((logits.topk(5).indices == labels[:, None]).any(1)))
    probabilities = logits.softmax(1)
    confidence = probabilities.max(1).values
    assert outcome.calibration[:, 0].sum() == 4
    assert outcome.calibration[:, 1].sum() == pytest.approx(float(confidence.sum()))
    # ECE from the bins equals the textbook formula.
    bins = np.clip(np.ceil(confidence.numpy() * CALIBRATION_BINS) - 1, 0, CALIBRATION_BINS - 1)
    expected = sum(abs(confidence.numpy()[bins == b].sum() - outcome.correct[bins == b].sum()) for b in range(CALIBRATION_BINS)) / 4
    record = results.CellRecord(model="m", dataset="d", corruption="fog", severity=1, n_correct=1, n_total=4, seconds=0,
                                provenance={k: None for k in results.REQUIRED_PROVENANCE},
                                calibration=outcome.calibration.tolist())
    assert record.ece == pytest.approx(expected)


def test_out_of_memory_halves_the_chunk_and_keeps_results():
    class Fussy(torch.nn.Module):
        def forward(self, x):
            if len(x) > 3:
                raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")
            return x.flatten(1)[:, :10]

    images = torch.randint(0, 255, (10, 3, 8, 8), dtype=torch.uint8)
    labels = torch.arange(10) % 10
    forward = Forward(Fussy(), (0.5,) * 3, (0.25,) * 3, torch.device("cpu"))
    outcome = evaluate_cell(forward, [(images, labels)])
    reference = evaluate_cell(Forward(Fussy(), (0.5,) * 3, (0.25,) * 3, torch.device("cpu"), max_chunk=2),
                              [(images, labels)])
    assert forward.oom_retries >= 1 and forward.max_chunk <= 3
    assert outcome.correct.tolist() == reference.correct.tolist()
    with pytest.raises(RuntimeError, match="boom"):
        class Broken(torch.nn.Module):
            def forward(self, x):
                raise RuntimeError("boom")
        evaluate_cell(Forward(Broken(), (0.5,) * 3, (0.5,) * 3, torch.device("cpu")), [(images, labels)])


def test_run_records_subset_provenance_and_intervals(fmnist, checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_MNIST_ROOT", str(fmnist))
    settings = EvalSettings(dataset="fashion-mnist-c", model="resnet18", width=4, checkpoint=str(checkpoint),
                            on_the_fly=True, corruptions=("fog",), severities=(2,), limit=50, device="cpu",
                            batch_size=16, num_workers=0, bootstrap_resamples=200)
    out = tmp_path / "run.jsonl"
    run = run_evaluation(settings, out=out)
    records = results.read_records(out)
    assert [r.cell for r in records] == [("clean", 0), ("fog", 2)] == [r.cell for r in run.written]
    clean = records[0]
    assert clean.n_total == 50 and clean.provenance["num_images"] == 50
    assert clean.provenance["settings"]["subset"] == {"limit": 50, "seed": 0}
    assert clean.provenance["data_mode"] == "on-the-fly"
    assert clean.provenance["checkpoint_sha256"] == results_sha(checkpoint)
    low, high = clean.ci95
    assert low <= clean.top1_error <= high
    assert clean.correct_mask().sum() == clean.n_correct
    # The subset is class-balanced: 5 images of each of the 10 classes.
    with pytest.raises(EvaluationError, match="already exists"):
        run_evaluation(settings, out=out)


def results_sha(path):
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_input_size_audit(fmnist, checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_MNIST_ROOT", str(fmnist))
    settings = EvalSettings(dataset="fashion-mnist-c", model="resnet18", width=4, stem="imagenet", on_the_fly=True,
                            corruptions=("fog",), severities=(1,), limit=20, device="cpu", num_workers=0,
                            num_classes=10)
    with pytest.raises(EvaluationError, match=r"32×32 px but resnet18 expects 224×224.*`allow_mismatch`"):
        run_evaluation(settings, out=None)
    relaxed = EvalSettings(**{**settings.__dict__, "allow_mismatch": True})
    with pytest.warns(UserWarning, match="resizing on the device"):
        run = run_evaluation(relaxed, out=None)
    assert run.written[0].provenance["settings"]["resize_to"] == 224
    wrong_classes = EvalSettings(**{**settings.__dict__, "stem": "cifar", "num_classes": 7})
    with pytest.raises(EvaluationError, match="7 outputs but fashion-mnist-c has 10 classes"):
        run_evaluation(wrong_classes, out=None)


def test_cli_names_its_flags_in_library_messages(fmnist, tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_MNIST_ROOT", str(fmnist))
    runner = CliRunner()
    args = ["evaluate", "--model", "resnet18", "--width", "4", "--stem", "imagenet", "--num-classes", "10",
            "--dataset", "fashion-mnist-c", "--on-the-fly", "--corruptions", "fog", "--severities", "1",
            "--limit", "20", "--device", "cpu", "--workers", "0", "--quiet"]
    mismatch = runner.invoke(main, [*args, "--out", str(tmp_path / "a.jsonl")])
    assert mismatch.exit_code == 1 and "pass --allow-mismatch to resize" in mismatch.output, mismatch.output
    assert "`" not in mismatch.output.replace("`rbpp", "")
    existing = tmp_path / "b.jsonl"
    existing.write_text("x\n")
    refused = runner.invoke(main, [*args, "--out", str(existing)])
    assert refused.exit_code == 1 and "pass --resume to continue it, or choose another --out" in refused.output


def test_cli_bad_inputs_exit_non_zero_with_clear_messages(fmnist, checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_MNIST_ROOT", str(fmnist))
    runner = CliRunner()
    out = tmp_path / "a.jsonl"
    bad_model = runner.invoke(main, ["evaluate", "--model", "resnet19", "--dataset", "fashion-mnist-c", "--on-the-fly",
                                     "--device", "cpu", "--out", str(out)])
    assert bad_model.exit_code != 0 and "resnet19" in bad_model.output and "resnet18" in bad_model.output
    arch = runner.invoke(main, _base_args(checkpoint, out)[:2] + ["resnet18_pp3"] + _base_args(checkpoint, out)[3:])
    assert arch.exit_code != 0 and "conv1" in arch.output, arch.output
    missing = runner.invoke(main, ["evaluate", "--model", "resnet18", "--width", "4", "--checkpoint", str(checkpoint),
                                   "--dataset", "fashion-mnist-c", "--data-root", str(tmp_path / "nowhere"),
                                   "--device", "cpu", "--out", str(out)])
    assert missing.exit_code != 0 and "nowhere" in missing.output
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    alone = runner.invoke(main, _base_args(checkpoint, out, "--distributed"))
    assert alone.exit_code == 1 and "torchrun --nproc-per-node" in alone.output, alone.output
    assert not out.exists()
    # A results file of another model passed to --resume is refused and left untouched.
    other = tmp_path / "other.jsonl"
    from _records import record

    results.append_records(other, [record(model="alexnet")])
    before = other.read_bytes()
    resumed = runner.invoke(main, _base_args(checkpoint, other, "--resume"))
    assert resumed.exit_code != 0 and "cannot resume" in resumed.output and "alexnet" in resumed.output
    assert other.read_bytes() == before


@pytest.mark.slow
def test_sigkill_then_resume_gives_every_cell_once(fmnist, checkpoint, tmp_path):
    out = tmp_path / "killed.jsonl"
    args = [sys.executable, "-m", "robustbench_pp.cli"] + _base_args(checkpoint, out)
    child = subprocess.Popen(args, env=_env(fmnist), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:
        if out.exists() and out.read_bytes().count(b"\n") >= 2:
            break
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    partial = results.read_records(out)
    assert 2 <= len(partial) < 5, "the kill should land mid-run"
    resumed = subprocess.run(args + ["--resume"], env=_env(fmnist), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "already done" in resumed.stdout
    cells = [r.cell for r in results.read_records(out)]
    assert sorted(cells) == sorted(set(cells)) and len(cells) == 5
    fresh = tmp_path / "fresh.jsonl"
    subprocess.run(args[:-1] + [str(fresh)], env=_env(fmnist), check=True, capture_output=True, timeout=300)
    assert _counts(out) == _counts(fresh)


def test_shards_merge_to_the_single_run(fmnist, checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_MNIST_ROOT", str(fmnist))
    runner = CliRunner()
    single = tmp_path / "single.jsonl"
    assert runner.invoke(main, _base_args(checkpoint, single)).exit_code == 0
    shards = []
    for i in range(3):
        path = tmp_path / f"shard{i}.jsonl"
        result = runner.invoke(main, _base_args(checkpoint, path, "--shard", f"{i}/3"))
        assert result.exit_code == 0, result.output
        shards.append(str(path))
    merged = tmp_path / "merged.jsonl"
    incomplete = runner.invoke(main, ["merge", *shards[:2], "--out", str(merged)])
    assert incomplete.exit_code != 0 and "missing shard(s) 2/3" in incomplete.output and not merged.exists()
    result = runner.invoke(main, ["merge", *shards, "--out", str(merged)])
    assert result.exit_code == 0, result.output
    assert _counts(merged) == _counts(single)
    a, b = results.read_records(merged), results.read_records(single)
    assert [r.ci95 for r in a] == [r.ci95 for r in b]
    # Shards of another checkpoint are refused.
    other = tmp_path / "other.pt"
    other.write_bytes(Path(checkpoint).read_bytes())
    foreign = tmp_path / "foreign.jsonl"
    runner.invoke(main, _base_args(other, foreign, "--shard", "2/3"))
    # Same weights, different file name: the sha256 matches, so change the settings instead.
    foreign2 = tmp_path / "foreign2.jsonl"
    runner.invoke(main, _base_args(checkpoint, foreign2, "--shard", "2/3", "--precision", "bf16"))
    refused = runner.invoke(main, ["merge", *shards[:2], str(foreign2), "--out", str(tmp_path / "m2.jsonl")])
    assert refused.exit_code != 0 and "precision" in refused.output


@pytest.mark.slow
def test_two_process_gloo_run_equals_one_process(fmnist, checkpoint, tmp_path):
    single = tmp_path / "single.jsonl"
    subprocess.run([sys.executable, "-m", "robustbench_pp.cli"] + _base_args(checkpoint, single),
                   env=_env(fmnist), check=True, capture_output=True, timeout=300)
    double = tmp_path / "double.jsonl"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29531",
                "-m", "robustbench_pp.cli"] + _base_args(checkpoint, double)
    done = subprocess.run(torchrun, env=_env(fmnist), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = results.read_records(single), results.read_records(double)
    assert [r.cell for r in one] == [r.cell for r in two]
    assert _counts(single) == _counts(double)  # 121 images over 2 ranks: none dropped or doubled
    for a, b in zip(one, two):
        assert a.n_total == 121
        assert np.allclose(a.calibration, b.calibration, atol=1e-6)
        assert b.provenance["world_size"] == 2
