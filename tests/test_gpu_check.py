"""benchmarks/gpu_check.sh runs on the CPU too (--device cpu --quick), so that it cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_every_step_on_the_cpu(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    env.pop("CIFAR_ROOT", None)  # the synthetic CIFAR-10 path
    done = subprocess.run(["bash", str(ROOT / "benchmarks/gpu_check.sh"), str(tmp_path / "out"), "--device", "cpu", "--quick"],
                          env=env, capture_output=True, text=True, timeout=170)
    summary = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    failed = {name: step.get("error") for name, step in summary["steps"].items() if not step["ok"]}
    assert done.returncode == 0 and not failed, (failed, done.stdout[-2000:], done.stderr[-2000:])
    assert set(summary["steps"]) == {"kernels", "cifar10c_generate", "resnet18_files", "resnet18_on_the_fly",
                                     "resnet50_224", "torchrun_agreement"}
    assert len(summary["steps"]["kernels"]["rows"]) == 2 * 19  # every corruption at 224 and 32 px
    assert all(row["device_images_per_s"] > 0 for row in summary["steps"]["kernels"]["rows"].values())
    assert summary["steps"]["torchrun_agreement"]["agree"] and summary["steps"]["torchrun_agreement"]["world_size_recorded"] == 2
    assert summary["steps"]["resnet18_files"]["images"] == summary["steps"]["resnet18_on_the_fly"]["images"] > 0
    assert summary["steps"]["resnet18_on_the_fly"]["same_counts_as_files"]
    assert summary["cifar_source"].startswith("synthetic")


def test_gpu_check_refuses_a_missing_output_folder_argument():
    done = subprocess.run(["bash", str(ROOT / "benchmarks/gpu_check.sh")], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "usage" in done.stderr
