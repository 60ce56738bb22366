"""Images/s of the torch corruption engine against the reference package, measured in one run.

For each corruption: the cifar preset at 32 px (batch 256 by default) and the imagenet preset at
224 px (batch 64), each timed over severities 1..5 with our engine; the reference package
(imagecorruptions, imagenet parameters: it has no cifar preset) times the same images one by one
at the same size. Prints a table and writes JSON.

    python benchmarks/bench_corruptions.py --images-224 64 --images-32 256 --out bench.json
    python benchmarks/bench_corruptions.py --device cuda      # when a GPU exists
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch

from robustbench_pp.corruptions import corrupt
from robustbench_pp.names import ALL_CORRUPTIONS, CORRUPTIONS, SEVERITIES


def photographs(n: int, size: int) -> np.ndarray:
    """n uint8 images of side ``size``: scikit-image samples if installed, else smooth random fields."""
    try:
        from skimage import data, transform

        photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
        base = [(transform.resize(p[: min(p.shape[:2]), : min(p.shape[:2])], (size, size), anti_aliasing=True) * 255).astype(np.uint8) for p in photos]
    except ImportError:
        rng = np.random.default_rng(0)
        base = [np.uint8(np.cumsum(np.cumsum(rng.random((size, size, 3)), 0), 1) / (size * size) * 255) for _ in range(4)]
    return np.stack([base[i % len(base)] for i in range(n)])


def time_ours(images: np.ndarray, name: str, preset: str, batch: int, device: str) -> float:
    """Images per second over severities 1..5 (after one warm-up batch)."""
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device)
    corrupt(tensor[:batch], name, 1, preset=preset)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for severity in SEVERITIES:
        for i in range(0, len(tensor), batch):
            corrupt(tensor[i : i + batch], name, severity, preset=preset, index_offset=i)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return len(tensor) * len(SEVERITIES) / (time.perf_counter() - start)


def time_reference(images: np.ndarray, name: str) -> float:
    corrupt(images[:1], name, 1, backend="imagecorruptions")  # warm-up (numba compiles glass blur)
    start = time.perf_counter()
    for severity in SEVERITIES:
        corrupt(images, name, severity, backend="imagecorruptions")
    return len(images) * len(SEVERITIES) / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images-224", type=int, default=64, help="images per severity at 224 px (ours)")
    parser.add_argument("--images-32", type=int, default=256, help="images per severity at 32 px (ours)")
    parser.add_argument("--reference-images", type=int, default=8, help="images per severity for the reference")
    parser.add_argument("--batch-224", type=int, default=64)
    parser.add_argument("--batch-32", type=int, default=256)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--corruptions", default=",".join(ALL_CORRUPTIONS), help="comma-separated names")
    parser.add_argument("--out", default="bench_corruptions.json")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    names = [n for n in args.corruptions.split(",") if n]
    rows = []
    header = f"{'corruption':18s} {'ours 32px':>10s} {'ref 32px':>9s} {'x':>6s} | {'ours 224px':>10s} {'ref 224px':>9s} {'x':>6s}"
    print(header)
    print("-" * len(header))
    for name in names:
        row = {"corruption": name}
        for size, preset, n, batch in ((32, "cifar", args.images_32, args.batch_32), (224, "imagenet", args.images_224, args.batch_224)):
            images = photographs(n, size)
            ours = time_ours(images, name, preset, batch, args.device)
            ref = time_reference(images[: args.reference_images], name)
            row[f"ours_{size}px_images_per_s"] = ours
            row[f"reference_{size}px_images_per_s"] = ref
            row[f"ratio_{size}px"] = ours / ref
        rows.append(row)
        print(f"{name:18s} {row['ours_32px_images_per_s']:10.0f} {row['reference_32px_images_per_s']:9.0f} {row['ratio_32px']:6.1f} | "
              f"{row['ours_224px_images_per_s']:10.0f} {row['reference_224px_images_per_s']:9.0f} {row['ratio_224px']:6.1f}", flush=True)
    ratios = [r["ratio_224px"] for r in rows]
    benchmark = [r for r in rows if r["corruption"] in CORRUPTIONS]
    cifar_seconds = sum(5 * 10000 / r["ours_32px_images_per_s"] for r in benchmark)
    summary = {
        "median_ratio_224px": statistics.median(ratios),
        "min_ratio_224px": min(ratios),
        "below_5x_224px": [r["corruption"] for r in rows if r["ratio_224px"] < 5],
        "cifar10c_15x5x10000_seconds_extrapolated": cifar_seconds if len(benchmark) == len(CORRUPTIONS) else None,
    }
    print("-" * len(header))
    print(f"median ratio at 224 px: {summary['median_ratio_224px']:.1f}x; below 5x: {', '.join(summary['below_5x_224px']) or 'none'}")
    if summary["cifar10c_15x5x10000_seconds_extrapolated"] is not None:
        print(f"CIFAR-10-C (15 x 5 x 10000 at 32 px), extrapolated from the 32 px rates: {cifar_seconds:.0f} s")
    result = {
        "device": args.device,
        "threads": args.threads,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "images": {"224": args.images_224, "32": args.images_32, "reference": args.reference_images},
        "rows": rows,
        "summary": summary,
    }
    tmp = args.out + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(result, fh, indent=2)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
