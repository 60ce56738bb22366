"""Evaluation pipeline throughput vs the bare forward pass, measured in one run.

For one model and batch size it times, on the same images:
  1. bare forward: the model on a pre-made, pre-normalised batch of the same images (the ceiling);
  2. released format: ``run_evaluation`` reading a generated npy set (memory-mapped uint8,
     normalisation inside the engine, records kept in memory);
  3. on the fly: ``run_evaluation`` corrupting the clean images in memory.
and prints images/s and the ratios pipeline / bare. Targets (issue 6): released ≥ 90 % of
bare, on the fly ≥ 50 %.

Usage (CPU, this machine):
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_eval.py --width 16 --images 2000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from robustbench_pp.datasets import balanced_subset, generate, open_corrupted
from robustbench_pp.preprocessing import normalize
from robustbench_pp.evaluate import EvalSettings, run_evaluation
from robustbench_pp.evaluate.engine import resolve_device
from robustbench_pp.models import create_model


def bare_forward(model, batches: list[torch.Tensor], device, repeats: int) -> float:
    """Forward passes over pre-made, pre-normalised batches of the same images (no data work).

    Speed depends on the pixels a little (measured: ±15 % between cells), so the batches
    are those of the cells the pipeline evaluates, in the layout the engine feeds.
    """
    batches = [b.to(device).contiguous(memory_format=torch.channels_last) for b in batches]
    with torch.inference_mode():
        model(batches[0])  # warm-up
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            for batch in batches:
                model(batch)
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
    return sum(len(b) for b in batches) / best


def pipeline(settings: EvalSettings, repeats: int) -> float:
    best = 0.0
    for _ in range(repeats):
        run = run_evaluation(settings, out=None)
        corrupted = [r for r in run.written if r.corruption != "clean"]
        images = sum(r.n_total for r in corrupted)
        seconds = sum(r.seconds for r in corrupted)
        best = max(best, images / seconds)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--dataset", default="fashion-mnist-c")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--images", type=int, default=2000, help="images per cell (a class-balanced subset)")
    parser.add_argument("--corruptions", default="gaussian_noise,fog,contrast")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--data-root", default=None, help="a generated set (default: generate one in a temp dir)")
    parser.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = parser.parse_args()

    torch.manual_seed(0)
    device = resolve_device(args.device)
    corruptions = tuple(args.corruptions.split(","))
    with tempfile.TemporaryDirectory() as scratch:
        data_root = args.data_root
        if data_root is None:
            report = generate(args.dataset, out=scratch, corruptions=corruptions, severities=(3,), limit=args.images,
                              progress=False)
            data_root = str(report.folder)
        common = dict(dataset=args.dataset, model=args.model, width=args.width, corruptions=corruptions,
                      severities=(3,), limit=args.images, device=args.device, batch_size=args.batch_size,
                      num_workers=0, bootstrap_resamples=100)
        model = create_model(args.model, num_classes=10, width=args.width).eval().to(device)
        data = open_corrupted(args.dataset, data_root=data_root, corruptions=corruptions, severities=(3,))
        subset = balanced_subset(data.labels, args.images, 0)
        premade = [normalize(images, model.card.mean, model.card.std)
                   for corruption in corruptions
                   for images, _ in data.batches(corruption, 3, batch_size=args.batch_size, indices=subset)]
        bare = bare_forward(model, premade, device, args.repeats)
        released = pipeline(EvalSettings(data_root=data_root, **common), args.repeats)
        on_the_fly = pipeline(EvalSettings(on_the_fly=True, **{**common, "num_workers": None}), args.repeats)
    rows = {"bare forward": bare, "released format": released, "on the fly": on_the_fly}
    print(f"{args.model} width {args.width}, batch {args.batch_size}, {args.images} images/cell, "
          f"{len(corruptions)} cells, device {device}, torch threads {torch.get_num_threads()}")
    print(f"{'path':<18}{'images/s':>10}{'vs bare':>9}")
    for name, value in rows.items():
        print(f"{name:<18}{value:>10.0f}{value / bare:>9.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({k: round(v, 1) for k, v in rows.items()}, indent=2))


if __name__ == "__main__":
    main()
