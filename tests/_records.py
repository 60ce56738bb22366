"""Builders of valid cell records for tests (importable by test subprocesses too)."""

from __future__ import annotations

import numpy as np

from robustbench_pp.names import CORRUPTIONS, SEVERITIES
from robustbench_pp.results import CellRecord, encode_correct_mask


def provenance(**overrides) -> dict:
    base = {
        "package_version": "0.1.0",
        "torch_version": "2.14.1",
        "torchvision_version": "0.29.1",
        "cuda_version": None,
        "device": "cpu",
        "git_commit": None,
        "checkpoint_sha256": "ab" * 32,
        "dataset_fingerprint": "cd" * 32,
        "preset": "cifar",
        "seed": 0,
        "num_images": 100,
        "data_mode": "released",
        "created_utc": "2026-11-26T00:00:00+00:00",
        "command": "rbpp evaluate --model m",
        "settings": {"precision": "fp32"},
    }
    base.update(overrides)
    return base


def record(corruption="clean", severity=0, n_correct=80, n_total=100, model="resnet18", dataset="fashion-mnist-c", **prov) -> CellRecord:
    return CellRecord(
        model=model,
        dataset=dataset,
        corruption=corruption,
        severity=severity,
        n_correct=n_correct,
        n_total=n_total,
        seconds=0.5,
        provenance=provenance(**prov),
        recipe="none",
    )


def full_run(error_of=lambda c, s: 0.1 + 0.05 * s, clean_error=0.1, n_total=1000, **kwargs) -> list[CellRecord]:
    """Records of a complete run where cell (c, s) has the given top-1 error."""
    records = [record(n_correct=round((1 - clean_error) * n_total), n_total=n_total, **kwargs)]
    for c in CORRUPTIONS:
        for s in SEVERITIES:
            records.append(record(c, s, n_correct=round((1 - error_of(c, s)) * n_total), n_total=n_total, **kwargs))
    return records


def rich_record(corruption="fog", severity=1, n_total=40, n_correct=30, **prov) -> CellRecord:
    """A record with everything evaluate writes: per-image bits, calibration bins, interval."""
    correct = np.zeros(n_total, dtype=bool)
    correct[::2][:n_correct] = True
    correct[1::2][: max(0, n_correct - (n_total + 1) // 2)] = True
    calibration = [[0.0, 0.0, 0.0] for _ in range(15)]
    calibration[14] = [float(n_correct), 0.97 * n_correct, float(n_correct)]
    calibration[7] = [float(n_total - n_correct), 0.5 * (n_total - n_correct), 0.0]
    return CellRecord(
        model="resnet18_pp3", dataset="fashion-mnist-c", corruption=corruption, severity=severity,
        n_correct=n_correct, n_total=n_total, seconds=0.25,
        provenance=provenance(**{"num_images": n_total, "shard": None, "bootstrap_seed": 0, **prov}),
        recipe="none", n_correct_top5=n_total, calibration=calibration, ci95=(0.1, 0.4),
        extra={"correct_bits": encode_correct_mask(correct)},
    )
