"""Evaluation pipeline throughput vs the bare forward pass, both timed the same way (wall time).

For one model and batch size, on the same images (the clean cell and the corrupted cells of a
class-balanced subset), it times:

  1. bare forward: a loop of the model over pre-made, pre-normalised batches of exactly the
     images the pipeline evaluates (the ceiling: no reading, no normalising, no bookkeeping);
  2. released format: the whole ``run_evaluation`` call on a generated npy set -- building the
     model, opening and fingerprinting the files, planning, reading, normalising, the forward
     passes, bootstrap intervals and appending the records to a JSON Lines file;
  3. on the fly: the same call corrupting the clean images in memory.

Each rate is images / wall seconds of the whole timed call (best of ``--repeats``). The gap to
the bare loop is split into the time inside cells (the records' ``seconds``: data and forward)
and the fixed cost around them (model, data opening and fingerprint, planning, writing), which
does not grow with the number of images. Targets (issues 6 and 14): released >= 0.9 of bare,
on the fly >= 0.5.

Usage (CPU, this machine):
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_eval.py --width 16 --images 2000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from _output import write_json  # noqa: E402  (benchmarks/_output.py)

from robustbench_pp.datasets import balanced_subset, generate, open_corrupted  # noqa: E402
from robustbench_pp.evaluate import EvalSettings, run_evaluation  # noqa: E402
from robustbench_pp.evaluate.engine import resolve_device  # noqa: E402
from robustbench_pp.models import create_model  # noqa: E402
from robustbench_pp.names import CLEAN, CLEAN_SEVERITY  # noqa: E402
from robustbench_pp.preprocessing import normalize  # noqa: E402


def bare_forward(model, batches: list[torch.Tensor], device) -> float:
    """Wall seconds of one loop of the model over pre-made batches (already on the device)."""
    with torch.inference_mode():
        start = time.perf_counter()
        for batch in batches:
            model(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start


def pipeline(settings: EvalSettings, out: Path) -> dict:
    """Wall seconds of one whole ``run_evaluation`` call (records written to ``out``), the images
    it evaluated and the seconds its records account for (inside cells)."""
    start = time.perf_counter()
    run = run_evaluation(settings, out=out)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "images": sum(r.n_total for r in run.written), "in_cells": sum(r.seconds for r in run.written)}


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
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        data_root = args.data_root
        if data_root is None:
            report = generate(args.dataset, out=scratch, corruptions=corruptions, severities=(3,), limit=args.images,
                              progress=False)
            data_root = str(report.folder)
        common = dict(dataset=args.dataset, model=args.model, width=args.width, corruptions=corruptions,
                      severities=(3,), limit=args.images, device=args.device, batch_size=args.batch_size,
                      num_workers=0, bootstrap_resamples=1000)
        model = create_model(args.model, num_classes=10, width=args.width).eval().to(device)
        data = open_corrupted(args.dataset, data_root=data_root, corruptions=corruptions, severities=(3,))
        subset = balanced_subset(data.labels, args.images, 0)
        cells = [(CLEAN, CLEAN_SEVERITY)] + [(corruption, 3) for corruption in corruptions]
        premade = [normalize(images, model.card.mean, model.card.std)
                   for corruption, severity in cells
                   for images, _ in data.batches(corruption, severity, batch_size=args.batch_size, indices=subset)]
        bare_images = sum(len(b) for b in premade)
        premade = [b.to(device).contiguous(memory_format=torch.channels_last) for b in premade]
        with torch.inference_mode():
            model(premade[0])  # warm-up
        files = EvalSettings(data_root=data_root, **common)
        fly = EvalSettings(on_the_fly=True, **{**common, "num_workers": None})
        # The three paths in turn, best of the repeats each: a change of machine load hits all alike.
        bare, released, on_the_fly = float("inf"), None, None
        for repeat in range(args.repeats):
            bare = min(bare, bare_forward(model, premade, device))
            runs = pipeline(files, scratch / f"files-{repeat}.jsonl"), pipeline(fly, scratch / f"fly-{repeat}.jsonl")
            released = min(released or runs[0], runs[0], key=lambda r: r["seconds"])
            on_the_fly = min(on_the_fly or runs[1], runs[1], key=lambda r: r["seconds"])
    assert released["images"] == bare_images == on_the_fly["images"], "both paths must evaluate the same images"
    load_after = os.getloadavg()
    bare_rate = bare_images / bare
    print(f"{args.model} width {args.width}, batch {args.batch_size}, {args.images} images/cell, {len(cells)} cells "
          f"(clean + {len(corruptions)}), device {device}, torch threads {torch.get_num_threads()}, "
          f"load average {load_before[0]:.2f} -> {load_after[0]:.2f}")
    print(f"{'path':<18}{'wall s':>8}{'images/s':>10}{'vs bare':>9}{'in cells s':>12}{'around s':>10}")
    print(f"{'bare forward':<18}{bare:>8.2f}{bare_rate:>10.0f}{1.0:>9.2f}{bare:>12.2f}{0.0:>10.2f}")
    rows = {"bare forward": {"seconds": bare, "images": bare_images, "images_per_s": bare_rate, "vs_bare": 1.0}}
    for name, row in (("released format", released), ("on the fly", on_the_fly)):
        rate = row["images"] / row["seconds"]
        around = row["seconds"] - row["in_cells"]
        rows[name] = {**row, "images_per_s": rate, "vs_bare": rate / bare_rate, "around_cells": around}
        print(f"{name:<18}{row['seconds']:>8.2f}{rate:>10.0f}{rate / bare_rate:>9.2f}{row['in_cells']:>12.2f}{around:>10.2f}")
    print("'in cells': the records' seconds (reading or corrupting, normalising, forward); 'around': model and data "
          "opening, fingerprint, planning, bootstrap and writing -- a fixed cost, smaller in share as cells grow.")
    if args.json:
        write_json(args.json, {"rows": rows, "load_average": [load_before, load_after]})


if __name__ == "__main__":
    main()
