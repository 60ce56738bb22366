"""Generation: released layouts, manifest, determinism, resume after a real kill, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from robustbench_pp.datasets import ManifestError, balanced_subset, generate, open_corrupted
from robustbench_pp.datasets.layouts import PARTIAL_DIR
from robustbench_pp.datasets.manifest import read_manifest
from test_datasets_support import (  # noqa: F401  (fashion_root, private_hash_cache, synthetic_fashion_mnist: fixtures)
    WNIDS,
    fashion_root,
    private_hash_cache,
    synthetic_fashion_mnist,
    tiny_imagenet_spec,
    write_imagenet_folder,
)


def _cell(data, corruption, severity, indices=None):
    images = [b[0] for b in data.batches(corruption, severity, batch_size=4096, indices=indices, num_workers=0)]
    return torch.cat(images)


pytestmark = pytest.mark.usefixtures("private_hash_cache")


def test_balanced_subset_is_seeded_and_class_balanced():
    labels = np.repeat(np.arange(10), 100)
    subset = balanced_subset(labels, 95, seed=1)
    assert len(subset) == 95 and np.all(np.diff(subset) > 0)
    counts = np.bincount(labels[subset], minlength=10)
    assert counts.tolist() == [10] * 5 + [9] * 5
    assert np.array_equal(subset, balanced_subset(labels, 95, seed=1))
    assert not np.array_equal(subset, balanced_subset(labels, 95, seed=2))
    with pytest.raises(ValueError, match="needs 5 images of class 0; the source has 4"):
        balanced_subset(np.repeat(np.arange(10), 10)[6:], 50, seed=0)
    assert balanced_subset(labels, None, seed=0).tolist() == list(range(1000))


def test_npy_generation_round_trip_and_determinism(tmp_path):
    kwargs = dict(corruptions=["gaussian_noise", "pixelate"], severities=[1, 5], limit=120, progress=False)
    first = generate("fashion-mnist-c", out=tmp_path / "a", seed=7, **kwargs)
    generate("fashion-mnist-c", out=tmp_path / "b", seed=7, batch_size=50, workers=2, **kwargs)  # other split
    # Leftovers without a manifest (their parameters are unknown) must not be reused.
    stale = tmp_path / "c" / "fashion-mnist-c" / PARTIAL_DIR
    stale.mkdir(parents=True)
    np.save(stale / "pixelate.npy", np.zeros((240, 32, 32, 3), np.uint8))
    (stale / "pixelate.progress.json").write_text('{"done": [1, 5]}')
    generate("fashion-mnist-c", out=tmp_path / "c", seed=8, **kwargs)
    hashes = {run: {k: v["sha256"] for k, v in read_manifest(tmp_path / run / "fashion-mnist-c")["files"].items()}
              for run in "abc"}
    assert hashes["a"] == hashes["b"]
    assert hashes["a"]["gaussian_noise.npy"] != hashes["c"]["gaussian_noise.npy"]
    assert hashes["a"]["pixelate.npy"] == hashes["c"]["pixelate.npy"]  # deterministic corruption
    assert first.cells_written == 4 and first.images_written == 480

    folder = tmp_path / "a" / "fashion-mnist-c"
    assert sorted(p.name for p in folder.iterdir()) == ["gaussian_noise.npy", "labels.npy", "manifest.json",
                                                        "pixelate.npy"]
    assert np.load(folder / "gaussian_noise.npy", mmap_mode="r").shape == (240, 32, 32, 3)
    manifest = read_manifest(folder)
    assert manifest["seed"] == 7 and manifest["preset"] == "cifar" and manifest["parameters"]["limit"] == 120
    assert list(manifest["class_counts"].values()) == [12] * 10
    assert manifest["code"]["package_version"] == manifest["package_version"] and "git_commit" in manifest["code"]
    assert all("git_commit" in entry for entry in manifest["files"].values())
    data = open_corrupted("fashion-mnist-c", data_root=folder)
    assert data.mode == "generated" and data.num_images == 120 and data.seed == 7
    assert data.available_cells() == [("clean", 0), ("gaussian_noise", 1), ("gaussian_noise", 5),
                                      ("pixelate", 1), ("pixelate", 5)]
    # The files hold exactly what on-the-fly corruption serves for the same source images.
    fly = open_corrupted("fashion-mnist-c", on_the_fly=True, seed=7, corruptions=["gaussian_noise"], severities=[5])
    source_indices = np.asarray(manifest["indices"])
    assert torch.equal(_cell(data, "gaussian_noise", 5), _cell(fly, "gaussian_noise", 5, source_indices))
    assert torch.equal(_cell(data, "clean", 0), _cell(fly, "clean", 0, source_indices))
    np.testing.assert_array_equal(data.labels, fly.labels[source_indices])
    # Rerunning skips everything; other parameters in the same folder are refused.
    again = generate("fashion-mnist-c", out=tmp_path / "a", seed=7, **kwargs)
    assert again.cells_written == 0 and again.cells_skipped == 4
    with pytest.raises(ManifestError, match=r"other parameters \(.*seed"):
        generate("fashion-mnist-c", out=tmp_path / "a", seed=9, **kwargs)


_CHILD = """
import sys
from robustbench_pp.datasets import generate
generate("fashion-mnist-c", out=sys.argv[1], corruptions=sys.argv[2].split(","), limit=300, batch_size=30,
         seed=3, progress=False)
"""


@pytest.mark.slow  # a real child process that imports torch, then a resume
def test_resume_after_kill_leaves_nothing_that_looks_complete(tmp_path):
    corruptions = ["brightness", "contrast", "saturate", "gaussian_noise"]
    folder = tmp_path / "fashion-mnist-c"
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path), ",".join(corruptions)], env=env)
    progress = folder / PARTIAL_DIR / "saturate.progress.json"
    deadline = time.monotonic() + 120
    try:
        while not progress.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)  # mid-way through saturate, severity 2 or later
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL, "the generator finished before it could be killed"
    manifest = read_manifest(folder)
    assert manifest["corruptions_complete"] == ["brightness", "contrast"]
    for leftover in folder.glob("*.npy"):  # every final-named file is complete and recorded
        assert leftover.name in manifest["files"]
        assert leftover.stat().st_size == manifest["files"][leftover.name]["bytes"]
    data = open_corrupted("fashion-mnist-c", data_root=folder)
    assert {c for c, _ in data.cells} == {"brightness", "contrast"}
    with pytest.raises(ValueError, match="saturate is not recorded as complete.*rbpp generate"):
        open_corrupted("fashion-mnist-c", data_root=folder, corruptions=["saturate"])

    report = generate("fashion-mnist-c", out=tmp_path, corruptions=corruptions, limit=300, batch_size=30, seed=3,
                      progress=False)
    assert report.cells_skipped >= 11  # brightness, contrast and saturate's finished severity blocks
    assert not (folder / PARTIAL_DIR).exists()
    data = open_corrupted("fashion-mnist-c", data_root=folder)
    assert len(data.verify()) == len(corruptions) + 1
    # The resumed file equals an uninterrupted computation, block by block.
    fly = open_corrupted("fashion-mnist-c", on_the_fly=True, seed=3, corruptions=["saturate"])
    indices = np.asarray(read_manifest(folder)["indices"])
    for severity in (1, 3, 5):
        assert torch.equal(_cell(data, "saturate", severity), _cell(fly, "saturate", severity, indices))


def test_jpeg_folder_generation_matches_the_released_layout(tmp_path):
    source = write_imagenet_folder(tmp_path / "val")
    spec = tiny_imagenet_spec()
    generate(spec, out=tmp_path / "out", source_root=source, corruptions=["contrast"], severities=[1, 3],
             seed=0, progress=False)
    folder = tmp_path / "out" / "imagenet-c"
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    expected = sorted([f"contrast/{s}/{w}/ILSVRC2012_val_{n:08d}.JPEG" for s in (1, 3)
                       for n, w in zip(range(1, 7), np.repeat(WNIDS, 2))]
                      + ["contrast/1/SHA256SUMS", "contrast/3/SHA256SUMS", "manifest.json"])
    assert files == expected
    sums = (folder / "contrast" / "1" / "SHA256SUMS").read_text().splitlines()
    assert len(sums) == 6 and sums[0].endswith(f"{WNIDS[0]}/ILSVRC2012_val_00000001.JPEG")
    data = open_corrupted(spec, data_root=folder, source_root=source)
    assert data.mode == "generated" and data.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert len(data.verify()) == 2
    stored = _cell(data, "contrast", 3)
    fly = open_corrupted(spec, source_root=source, on_the_fly=True, jpeg_roundtrip=True, corruptions=["contrast"],
                         severities=[3])
    simulated = _cell(fly, "contrast", 3)
    assert stored.shape == simulated.shape == (6, 3, 224, 224)
    # The on-the-fly JPEG round trip simulates the stored quality-85 files (same quantisation).
    assert (stored.float() - simulated.float()).abs().mean() < 1.0


def test_cli_generate_then_datasets_finds_the_set(tmp_path, monkeypatch):
    from robustbench_pp.cli import main

    monkeypatch.setenv("RBPP_CORRUPTIONS", str(tmp_path))
    runner = CliRunner()
    result = runner.invoke(main, ["generate", "fashion-mnist-c", "--out", str(tmp_path), "--limit", "60",
                                  "--corruptions", "brightness,contrast", "--severities", "1,2", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "4 cells written" in result.output and "images/s" in result.output
    result = runner.invoke(main, ["datasets"])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("fashion-mnist-c"))
    assert "generated: 2 corruptions, 4 cells of 60" in line
    result = runner.invoke(main, ["datasets", "fashion-mnist-c", "--verify", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["verified"] == ["brightness.npy", "contrast.npy", "labels.npy"]
    result = runner.invoke(main, ["generate", "fashion-mnist-c", "--out", str(tmp_path), "--corruptions", "snowy"])
    assert result.exit_code != 0 and "Did you mean" in result.output
    result = runner.invoke(main, ["datasets", "imagenet-cc"])
    assert result.exit_code != 0 and "Did you mean imagenet-c" in result.output
    monkeypatch.setenv("RBPP_CORRUPTIONS", str(tmp_path / "empty"))
    result = runner.invoke(main, ["datasets", "fashion-mnist-c", "--json"])
    assert "rbpp generate fashion-mnist-c --out" in json.loads(result.output)["corrupted_hint"]


def test_cli_messages_name_the_commands_flags(tmp_path, monkeypatch):
    """The library names its parameters in backticks; `rbpp` shows them as its own flags."""
    from robustbench_pp.cli import main

    runner = CliRunner()
    result = runner.invoke(main, ["generate", "fashion-mnist-c", "--out", str(tmp_path), "--device", "cuda",
                                  "--workers", "2", "--quiet"])
    assert result.exit_code == 1 and "--workers = 2 forks processes" in result.output, result.output
    assert "`" not in result.output and "Traceback" not in result.output
    monkeypatch.setenv("RBPP_CORRUPTIONS", str(tmp_path / "empty"))
    result = runner.invoke(main, ["datasets", "cifar10-c", "--source", str(tmp_path / "none"), "--json"])
    row = json.loads(result.output)
    assert "pass --source, or fetch it with \"rbpp datasets cifar10-c --download\"" in row["clean_error"]
    assert f'"rbpp generate cifar10-c --out {tmp_path / "empty"}/"' in row["corrupted_hint"]
    assert "`" not in row["clean_error"] + row["corrupted_hint"]
