"""The project's own robustness regression gate, on real data (issue 7, item 4).

A tiny PushPull model (``results/reference/ci-model``: ResNet-18-PP3 at width 8, made by
``rbpp train``; the command is in its card) is evaluated on a fixed, class-balanced subset
of ``fashion-mnist-c`` generated here from the real Fashion-MNIST test set, and
``rbpp check --two-sided`` compares the result with the committed reference. Everything
runs on the CPU with fixed seeds, so the tolerances are tight: any change in the
corruption engine, the data pipeline, the model code or the evaluation shows up.

When a change is meant to move the numbers, regenerate the reference and commit it:
    RBPP_UPDATE_REFERENCE=1 .venv/bin/python -m pytest tests/test_ci_regression.py
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from robustbench_pp.cli import main
from robustbench_pp.datasets.sources import SourceError, load_fashion_mnist
from robustbench_pp.names import CORRUPTIONS

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "results/reference/ci-model/model.json"
REFERENCE = ROOT / "results/reference/ci-resnet18_pp3-w8__fashion-mnist-c-500.jsonl"
LIMIT = 500


def _fashion_mnist_available() -> bool:
    try:
        load_fashion_mnist(split="test")
    except SourceError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _fashion_mnist_available(),
                    reason="real Fashion-MNIST not found (install Debian's dataset-fashion-mnist or set FASHION_MNIST_ROOT)")
def test_ci_model_matches_the_committed_reference(tmp_path):
    runner = CliRunner()
    generated = runner.invoke(main, ["generate", "fashion-mnist-c", "--out", str(tmp_path), "--corruptions",
                                     ",".join(CORRUPTIONS), "--limit", str(LIMIT), "--seed", "0", "--quiet"])
    assert generated.exit_code == 0, generated.output
    out = tmp_path / "ci.jsonl"
    evaluated = runner.invoke(main, ["evaluate", "--checkpoint", str(CHECKPOINT), "--dataset", "fashion-mnist-c",
                                     "--data-root", str(tmp_path / "fashion-mnist-c"), "--device", "cpu",
                                     "--out", str(out), "--quiet"])
    assert evaluated.exit_code == 0, evaluated.output
    if os.environ.get("RBPP_UPDATE_REFERENCE") == "1":
        shutil.copyfile(out, REFERENCE)
        pytest.skip(f"reference rewritten: {REFERENCE}")
    from robustbench_pp.results import read_records

    new, old = read_records(out)[0].provenance, read_records(REFERENCE)[0].provenance
    # Generation is bit-reproducible: the data evaluated here is byte for byte the reference's.
    assert new["dataset_fingerprint"] == old["dataset_fingerprint"]
    assert new["checkpoint_sha256"] == old["checkpoint_sha256"]
    checked = runner.invoke(main, ["check", str(out), "--against", str(REFERENCE), "--tolerance-cell", "0.002",
                                   "--tolerance-mce", "0.001", "--two-sided"])
    assert checked.exit_code == 0, checked.output
    # The gate is live: the same run checked against a doctored reference fails with exit 1.
    doctored = tmp_path / "doctored.jsonl"
    lines = REFERENCE.read_text().splitlines()
    first = json.loads(lines[1])
    first["n_correct"] = max(0, first["n_correct"] - 25)
    # A hand edit that keeps the record consistent: what would contradict the new count goes.
    first.update(calibration=None, ci95=None, extra={}, top1_error=1 - first["n_correct"] / first["n_total"], ece=None)
    first.pop("record_sha256", None)
    doctored.write_text("\n".join([lines[0], json.dumps(first), *lines[2:]]) + "\n")
    failed = runner.invoke(main, ["check", str(out), "--against", str(doctored), "--tolerance-cell", "0.002",
                                  "--tolerance-mce", "0.001", "--two-sided"])
    assert failed.exit_code == 1, failed.output
