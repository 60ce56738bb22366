"""Images/s of the corruption engine against the reference package, measured in one run.

For each corruption: the cifar preset at 32 px (batch 256 by default) and the imagenet preset at
224 px (batch 64), each timed over severities 1..5 with our engine; the reference package
(imagecorruptions, imagenet parameters: it has no cifar preset) times the same images one by one
at the same size. Both sides first run every severity once untimed (tables, compilation, numba's
cache), and a full garbage collection precedes every timed loop. ``--threads N`` caps both
sides: torch, OpenCV (the reference's blurs and warps) and the BLAS/OpenMP pools. The whole pass is the time of all 15 benchmark corruptions (severities 1..5)
for one image: its ratio is what generating a data set costs. Prints a table with the load
average and writes JSON.

    python benchmarks/bench_corruptions.py --threads 1 --out bench.json
    python benchmarks/bench_corruptions.py --device cuda      # when a GPU exists
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
import warnings

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
if "--threads" in sys.argv[:-1]:  # thread pools read these when numpy/torch load
    for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[_variable] = sys.argv[sys.argv.index("--threads") + 1]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from _output import write_json  # noqa: E402  (benchmarks/_output.py)
from robustbench_pp.corruptions import corrupt  # noqa: E402
from robustbench_pp.names import ALL_CORRUPTIONS, CORRUPTIONS, SEVERITIES  # noqa: E402


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
    """Images per second over severities 1..5 (after one untimed image per severity)."""
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device)
    for severity in SEVERITIES:
        corrupt(tensor[:1], name, severity, preset=preset)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    gc.collect()  # a full collection (~0.2 s once numba is loaded) must not land in one side's timing
    start = time.perf_counter()
    for severity in SEVERITIES:
        for i in range(0, len(tensor), batch):
            corrupt(tensor[i : i + batch], name, severity, preset=preset, index_offset=i)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return len(tensor) * len(SEVERITIES) / (time.perf_counter() - start)


def time_reference(images: np.ndarray, name: str) -> float:
    for severity in SEVERITIES:  # warm-up (numba compiles glass blur)
        corrupt(images[:1], name, severity, backend="imagecorruptions")
    gc.collect()
    start = time.perf_counter()
    for severity in SEVERITIES:
        corrupt(images, name, severity, backend="imagecorruptions")
    return len(images) * len(SEVERITIES) / (time.perf_counter() - start)


def whole_pass(rows: list[dict], size: int) -> dict | None:
    """ms per image for the 15 benchmark corruptions × 5 severities, both sides, and their ratio."""
    benchmark = [r for r in rows if r["corruption"] in CORRUPTIONS]
    if len(benchmark) != len(CORRUPTIONS):
        return None
    ours = sum(1000 / r[f"ours_{size}px_images_per_s"] for r in benchmark)
    reference = sum(1000 / r[f"reference_{size}px_images_per_s"] for r in benchmark)
    return {"ours_ms_per_image": ours, "reference_ms_per_image": reference, "ratio": reference / ours}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images-224", type=int, default=64, help="images per severity at 224 px (ours)")
    parser.add_argument("--images-32", type=int, default=256, help="images per severity at 32 px (ours)")
    parser.add_argument("--reference-images", type=int, default=8, help="images per severity for the reference")
    parser.add_argument("--batch-224", type=int, default=64)
    parser.add_argument("--batch-32", type=int, default=256)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="threads of each side")
    parser.add_argument("--sizes", default="32,224", help="comma-separated: 32 (cifar preset) and/or 224 (imagenet)")
    parser.add_argument("--corruptions", default=",".join(ALL_CORRUPTIONS), help="comma-separated names")
    parser.add_argument("--out", default="bench_corruptions.json")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    try:
        import cv2

        cv2.setNumThreads(args.threads)
    except ImportError:  # pragma: no cover - the reference package needs OpenCV
        pass
    names = [n for n in args.corruptions.split(",") if n]
    sizes = [int(s) for s in args.sizes.split(",")]
    settings = {32: ("cifar", args.images_32, args.batch_32), 224: ("imagenet", args.images_224, args.batch_224)}
    load_before = os.getloadavg()
    print(f"threads {args.threads} each side, device {args.device}, load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    header = f"{'corruption':18s}" + "".join(f" | {'ours ' + str(s) + 'px':>10s} {'ref':>7s} {'x':>6s}" for s in sizes)
    print(header)
    print("-" * len(header))
    rows = []
    for name in names:
        row = {"corruption": name}
        line = f"{name:18s}"
        for size in sizes:
            preset, n, batch = settings[size]
            images = photographs(n, size)
            ours = time_ours(images, name, preset, batch, args.device)
            ref = time_reference(images[: args.reference_images], name)
            row.update({f"ours_{size}px_images_per_s": ours, f"reference_{size}px_images_per_s": ref, f"ratio_{size}px": ours / ref})
            line += f" | {ours:10.0f} {ref:7.0f} {ours / ref:6.1f}"
        rows.append(row)
        print(line, flush=True)
    load_after = os.getloadavg()
    summary = {"load_average_before": load_before, "load_average_after": load_after}
    print("-" * len(header))
    for size in sizes:
        ratios = {r["corruption"]: r[f"ratio_{size}px"] for r in rows}
        benchmark = {k: v for k, v in ratios.items() if k in CORRUPTIONS}
        passes = whole_pass(rows, size)
        summary[f"{size}px"] = {
            "whole_pass": passes,
            "median_ratio": statistics.median(ratios.values()),
            "min_ratio_benchmark": min(benchmark.values()) if benchmark else None,
            "below_2x_benchmark": sorted(k for k, v in benchmark.items() if v < 2),
        }
        if passes:
            print(f"{size} px whole pass (15 x 5 severities, one image): ours {passes['ours_ms_per_image']:.1f} ms, "
                  f"reference {passes['reference_ms_per_image']:.1f} ms: {passes['ratio']:.1f}x")
        print(f"{size} px median ratio {summary[f'{size}px']['median_ratio']:.1f}x; benchmark corruptions below 2x: "
              f"{', '.join(summary[f'{size}px']['below_2x_benchmark']) or 'none'}")
    if 32 in sizes and summary["32px"]["whole_pass"]:
        seconds = summary["32px"]["whole_pass"]["ours_ms_per_image"] * 10000 / 1000
        summary["cifar10c_15x5x10000_seconds_extrapolated"] = seconds
        print(f"CIFAR-10-C (15 x 5 x 10000 at 32 px), extrapolated from the 32 px rates: {seconds:.0f} s")
    print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
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
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
