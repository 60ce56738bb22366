"""The GPU check behind ``benchmarks/gpu_check.sh``: one run, one JSON summary (see that script).

Steps, each timed by wall clock and written to ``<out>/gpu_check.json`` as it finishes:

1. ``kernels``: every corruption at 224 px (imagenet preset) and 32 px (cifar preset) on the
   device, against our engine on the CPU and the imagecorruptions package (its ImageNet-C
   parameters; CPU, one process) on the same images;
2. ``cifar10c_generate``: a CIFAR-10-C-size set (15 corruptions × 5 severities × 10,000
   images; synthetic 32 px images when CIFAR-10 is absent) generated on the device;
3. ``resnet18_files`` / ``resnet18_on_the_fly``: a ResNet-18 (CIFAR stem, fixed random
   weights) over that set from the generated files, and corrupting on the device;
4. ``resnet50_224``: a ResNet-50 at 224 px (cifar10-c-224 on the fly) over 5,000 images per
   cell, bf16 autocast, channels_last, ``batch_size="auto"``;
5. ``torchrun_agreement``: a 2-process torchrun run (NCCL on two GPUs, else two gloo CPU
   processes: NCCL cannot put two ranks on one GPU) against one process: identical counts.

``--quick`` shrinks every step (a few images, severity 3) so that ``--device cpu --quick``
runs in the test suite in under a minute; the full check is sized for one GPU in under
8 minutes.
"""

from __future__ import annotations

import argparse
import os
import pickle
import platform
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
from _output import write_json  # noqa: E402  (benchmarks/_output.py)
import torch  # noqa: E402

FULL = {"kernel_images_224": 64, "kernel_images_32": 1000, "cpu_images_224": 16, "cpu_images_32": 256,
        "reference_images": 4, "severities": (1, 2, 3, 4, 5), "cifar_images": 10000, "cifar_severities": (1, 2, 3, 4, 5),
        "r18_width": 64, "r50_images": 5000, "r50_corruptions": ("gaussian_noise", "fog", "contrast"),
        "torchrun_images": 2000}
QUICK = {"kernel_images_224": 2, "kernel_images_32": 16, "cpu_images_224": 2, "cpu_images_32": 16,
         "reference_images": 1, "severities": (3,), "cifar_images": 48, "cifar_severities": (3,),
         "r18_width": 8, "r50_images": 4, "r50_corruptions": ("fog",), "torchrun_images": 48}


def synthetic_cifar(folder: Path, count: int, seed: int = 0) -> Path:
    """A torchvision-layout CIFAR-10 test batch of ``count`` smooth random 32 px images."""
    rng = np.random.default_rng(seed)
    fields = np.cumsum(np.cumsum(rng.standard_normal((count, 3, 40, 40)), axis=2), axis=3)[:, :, 4:36, 4:36]
    low, high = fields.min(axis=(1, 2, 3), keepdims=True), fields.max(axis=(1, 2, 3), keepdims=True)
    images = np.uint8((fields - low) / (high - low) * 255)
    base = folder / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    with open(base / "test_batch", "wb") as handle:
        pickle.dump({"data": images.reshape(count, -1), "labels": [int(i % 10) for i in range(count)]}, handle)
    return folder


def _timed(fn, device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    value = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, value


def kernels(device: str, sizes: dict) -> dict:
    """images/s of every corruption on the device, on the CPU, and of the reference package."""
    from robustbench_pp.corruptions import corrupt
    from robustbench_pp.names import ALL_CORRUPTIONS

    rng = np.random.default_rng(0)
    rows = {}
    for size, preset, n, n_cpu in ((224, "imagenet", sizes["kernel_images_224"], sizes["cpu_images_224"]),
                                   (32, "cifar", sizes["kernel_images_32"], sizes["cpu_images_32"])):
        fields = np.cumsum(np.cumsum(rng.random((n, size, size, 3)), axis=1), axis=2)
        images = np.uint8(fields / fields.max(axis=(1, 2, 3), keepdims=True) * 255)
        on_device = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device)
        on_cpu = torch.from_numpy(images[:n_cpu]).permute(0, 3, 1, 2).contiguous()
        for name in ALL_CORRUPTIONS:
            for severity in sizes["severities"]:  # warm-up: compilation, tables, cuDNN choices
                corrupt(on_device[:1], name, severity, preset=preset)
                if device != "cpu":
                    corrupt(on_cpu[:1], name, severity, preset=preset)
            dev, _ = _timed(lambda: [corrupt(on_device, name, s, preset=preset) for s in sizes["severities"]], device)
            if device == "cpu":  # the device is the CPU: the same measurement
                cpu, n_cpu = dev, n
            else:
                cpu, _ = _timed(lambda: [corrupt(on_cpu, name, s, preset=preset) for s in sizes["severities"]], "cpu")
            ref_images = images[: sizes["reference_images"]]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if name == "glass_blur":  # the package compiles its glass blur (numba) on first use
                    corrupt(ref_images[:1], name, sizes["severities"][0], backend="imagecorruptions")
                ref, _ = _timed(lambda: [corrupt(ref_images, name, s, backend="imagecorruptions")
                                         for s in sizes["severities"]], "cpu")
            count = len(sizes["severities"])
            rows[f"{name}@{size}px"] = {
                "device_images_per_s": n * count / dev,
                "cpu_engine_images_per_s": n_cpu * count / cpu,
                "reference_cpu_images_per_s": len(ref_images) * count / ref,
                "device_vs_reference": (n / dev) / (len(ref_images) / ref),
                "device_vs_cpu_engine": (n / dev) / (n_cpu / cpu),
            }
    return {"rows": rows, "cpu_threads": torch.get_num_threads(),
            "note": "reference: imagecorruptions (ImageNet-C parameters at both sizes), one CPU process"}


def cifar_generate(device: str, sizes: dict, source: Path, out: Path) -> dict:
    from robustbench_pp.datasets import generate
    from robustbench_pp.names import CORRUPTIONS

    seconds, report = _timed(lambda: generate("cifar10-c", out=out, source_root=str(source), corruptions=list(CORRUPTIONS),
                                              severities=sizes["cifar_severities"], device=device, progress=False,
                                              limit=None if sizes["cifar_images"] >= 10000 else sizes["cifar_images"]),
                             device)
    return {"images": report.images_written, "seconds": seconds, "images_per_s": report.images_written / seconds,
            "folder": str(report.folder)}


def evaluate(settings, device: str, out: Path) -> dict:
    from robustbench_pp.evaluate import run_evaluation

    seconds, run = _timed(lambda: run_evaluation(settings, out=out), device)
    images = sum(r.n_total for r in run.written)
    in_cells = sum(r.seconds for r in run.written)
    return {"images": images, "cells": len(run.written), "seconds": seconds, "images_per_s": images / seconds,
            "seconds_in_cells": in_cells, "batch_size": run.written[0].provenance["batch_size"],
            "mean_top1_error": float(np.mean([1 - r.n_correct / r.n_total for r in run.written])),
            "n_correct": {f"{r.corruption}/{r.severity}": r.n_correct for r in run.written}}


def torchrun_agreement(device: str, sizes: dict, source: Path, data_root: str, checkpoint: Path, scratch: Path) -> dict:
    """The same evaluation by one process and by a 2-process torchrun: the counts must agree."""
    from robustbench_pp.results import read_records

    two_gpus = device.startswith("cuda") and torch.cuda.device_count() >= 2
    run_device = "cuda" if two_gpus else "cpu"
    args = ["evaluate", "--model", "resnet18", "--width", str(sizes["r18_width"]), "--checkpoint", str(checkpoint),
            "--dataset", "cifar10-c", "--data-root", data_root, "--source-root", str(source),
            "--corruptions", "gaussian_noise,fog", "--severities", "3", "--limit", str(sizes["torchrun_images"]),
            "--device", run_device, "--batch-size", "64", "--workers", "0", "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    single, double = scratch / "single.jsonl", scratch / "double.jsonl"
    start = time.perf_counter()
    from click.testing import CliRunner

    from robustbench_pp.cli import main as rbpp

    alone = CliRunner().invoke(rbpp, [*args, "--out", str(single)])  # one process: this one
    if alone.exit_code != 0:
        raise RuntimeError(f"one-process run failed: {alone.output[-2000:]}")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                           str(29500 + os.getpid() % 1000), "-m", "robustbench_pp.cli", *args, "--out", str(double)],
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"torchrun failed: {done.stderr[-2000:]}")
    one, two = read_records(single), read_records(double)
    counts = lambda records: {f"{r.corruption}/{r.severity}": (r.n_correct, r.n_total) for r in records}  # noqa: E731
    agree = counts(one) == counts(two) and all(r.extra.get("correct_bits") == s.extra.get("correct_bits")
                                              for r, s in zip(one, two))
    return {"backend": "nccl" if two_gpus else "gloo (CPU: NCCL needs one GPU per rank)", "processes": 2,
            "cells": len(one), "agree": agree, "seconds": time.perf_counter() - start,
            "world_size_recorded": two[0].provenance["world_size"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for gpu_check.json")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="a few images per step (the CPU smoke test)")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run with --device cpu --quick for the CPU smoke test", file=sys.stderr)
        return 2
    sizes = QUICK if args.quick else FULL
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"device": args.device, "quick": args.quick, "torch": torch.__version__,
               "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None,
               "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
               "load_average_before": os.getloadavg(), "steps": {}}
    target = out / "gpu_check.json"

    def save() -> None:
        write_json(target, summary)

    def step(name, fn) -> None:
        start = time.perf_counter()
        try:
            summary["steps"][name] = {"ok": True, **fn()}
        except Exception as exc:  # recorded, and the remaining steps still run
            summary["steps"][name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-3000:]}
        summary["steps"][name]["step_seconds"] = time.perf_counter() - start
        print(f"gpu_check: {name} {'ok' if summary['steps'][name]['ok'] else 'FAILED'} "
              f"({summary['steps'][name]['step_seconds']:.1f} s)", flush=True)
        save()

    from robustbench_pp.datasets.sources import SourceError, load_cifar
    from robustbench_pp.evaluate import EvalSettings
    from robustbench_pp.models import create_model
    from robustbench_pp.names import CORRUPTIONS

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        source = Path(os.environ.get("CIFAR_ROOT", ""))
        try:
            load_cifar(source, "test")
            summary["cifar_source"] = str(source)
        except (SourceError, OSError):
            source = synthetic_cifar(scratch / "cifar", max(sizes["cifar_images"], 10))
            summary["cifar_source"] = "synthetic 32 px images (CIFAR-10 not found: set CIFAR_ROOT)"
        torch.manual_seed(0)
        checkpoint = scratch / "resnet18.pt"
        torch.save(create_model("resnet18", num_classes=10, width=sizes["r18_width"]).state_dict(), checkpoint)
        step("kernels", lambda: kernels(args.device, sizes))
        step("cifar10c_generate", lambda: cifar_generate(args.device, sizes, source, scratch / "sets"))
        data_root = str(scratch / "sets" / "cifar10-c")
        limit = None if sizes["cifar_images"] >= 10000 else sizes["cifar_images"]
        r18 = dict(dataset="cifar10-c", model="resnet18", width=sizes["r18_width"], checkpoint=str(checkpoint),
                   source_root=str(source), corruptions=tuple(CORRUPTIONS), severities=sizes["cifar_severities"],
                   limit=limit, device=args.device, batch_size="auto", num_workers=0 if args.quick else None)
        step("resnet18_files", lambda: evaluate(EvalSettings(data_root=data_root, **r18), args.device, scratch / "r18-files.jsonl"))
        step("resnet18_on_the_fly", lambda: evaluate(EvalSettings(on_the_fly=True, **r18), args.device,
                                                     scratch / "r18-fly.jsonl"))
        if summary["steps"]["resnet18_files"]["ok"] and summary["steps"]["resnet18_on_the_fly"]["ok"]:
            # Generated files and on-the-fly cells are the same images (same device, same seed).
            summary["steps"]["resnet18_on_the_fly"]["same_counts_as_files"] = (
                summary["steps"]["resnet18_on_the_fly"]["n_correct"] == summary["steps"]["resnet18_files"]["n_correct"])
        r50 = EvalSettings(dataset="cifar10-c-224", model="resnet50", num_classes=10, stem="imagenet", source_root=str(source),
                           on_the_fly=True, corruptions=sizes["r50_corruptions"], severities=(3,),
                           limit=sizes["r50_images"], device=args.device, precision="bf16", batch_size="auto",
                           num_workers=0 if args.quick else None)
        step("resnet50_224", lambda: {**evaluate(r50, args.device, scratch / "r50.jsonl"),
                                      "precision": "bf16", "channels_last": args.device.startswith("cuda")})
        step("torchrun_agreement", lambda: torchrun_agreement(args.device, sizes, source, data_root, checkpoint, scratch))
    summary["seconds_total"] = time.perf_counter() - start
    summary["load_average_after"] = os.getloadavg()
    summary["ok"] = all(s["ok"] for s in summary["steps"].values()) and summary["steps"]["torchrun_agreement"].get("agree", False)
    save()
    print(f"gpu_check: {'all steps ok' if summary['ok'] else 'FAILED'} in {summary['seconds_total']:.0f} s; wrote {target}")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
