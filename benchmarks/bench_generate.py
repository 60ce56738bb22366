"""Whole-job speed of making ImageNet-C: `rbpp generate imagenet-c` against imagecorruptions.

Builds a folder of 224 px photographs (crops of scikit-image's sample photographs, JPEG, in
wnid sub-folders as an ImageNet validation folder), then times two jobs over the same images
with the same number of processes:

1. ours: ``rbpp generate imagenet-c --source <folder> --limit N`` with the CLI's default worker
   count, as a user runs it (a subprocess: start-up, reading, corrupting, JPEG q85 files,
   checksums, manifest);
2. the reference: a pool of the same number of processes, one (corruption, severity) cell at a
   time, each image read with Pillow, Resize(256) + CenterCrop(224), corrupted by the
   imagecorruptions package and written as JPEG quality 85 -- what making ImageNet-C with the
   reference code does.

Both jobs first run once on a few images (untimed: numba's compile cache, file caches). Prints
images/s of both, their ratio and the load average, and writes JSON.

    python benchmarks/bench_generate.py                      # 200 images, 19 corruptions x 5
    python benchmarks/bench_generate.py --limit 40 --corruptions fog,contrast --out gen.json
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
from _output import write_json  # noqa: E402  (benchmarks/_output.py)

# Ten real wnids (the photographs' classes do not matter: only the folder layout does).
_WNIDS = ("n01440764", "n01443537", "n01484850", "n01491361", "n01494475",
          "n01496331", "n01498041", "n01514668", "n01514859", "n01518878")
_SAMPLES = ("astronaut", "chelsea", "coffee", "rocket", "cat", "immunohistochemistry", "retina", "hubble_deep_field",
            "camera", "coins", "moon", "brick", "grass", "gravel")


def photographs(count: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` different 224 px RGB photographs: random square crops of scikit-image's samples,
    flipped at random (smooth random fields if scikit-image is missing)."""
    rng = np.random.default_rng(seed)
    try:
        from skimage import data, transform
    except ImportError:
        fields = [np.cumsum(np.cumsum(rng.random((224, 224, 3)), 0), 1) for _ in range(count)]
        return [np.uint8(f / f.max() * 255) for f in fields]
    sources = []
    for name in _SAMPLES:
        try:
            image = getattr(data, name)()
        except Exception:  # pragma: no cover - a sample that needs a download
            continue
        sources.append(np.stack([image] * 3, axis=-1) if image.ndim == 2 else image[..., :3])
    out = []
    for i in range(count):
        image = sources[i % len(sources)]
        side = int(min(image.shape[:2]) * rng.uniform(0.5, 1.0))
        top, left = (int(rng.integers(0, s - side + 1)) for s in image.shape[:2])
        crop = image[top : top + side, left : left + side]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        out.append((transform.resize(crop, (224, 224), anti_aliasing=True) * 255).astype(np.uint8))
    return out


def write_source(folder: Path, count: int) -> None:
    """An ImageNet-validation-style folder: <wnid>/<name>.JPEG (quality 95)."""
    from PIL import Image

    for i, image in enumerate(photographs(count)):
        wnid = _WNIDS[i % len(_WNIDS)]
        (folder / wnid).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / wnid / f"photo_{i:05d}.JPEG", quality=95)


def run_ours(source: Path, out: Path, limit: int, corruptions: str, workers: int | None) -> tuple[float, str]:
    """Wall seconds of ``rbpp generate imagenet-c`` (a subprocess) and its last output line."""
    command = [sys.executable, "-m", "robustbench_pp.cli", "generate", "imagenet-c", "--source", str(source),
               "--out", str(out), "--limit", str(limit), "--corruptions", corruptions, "--quiet"]
    if workers is not None:
        command += ["--workers", str(workers)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"rbpp generate failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return seconds, done.stdout.strip().splitlines()[-1]


def _single_threaded() -> None:
    import cv2

    cv2.setNumThreads(1)
    os.environ["OMP_NUM_THREADS"] = "1"


def _reference_cell(job: tuple) -> int:
    """One (corruption, severity) cell with the reference tooling; returns the images written."""
    import warnings

    from imagecorruptions import corrupt
    from PIL import Image

    paths, out, name, severity = job
    folder = Path(out) / name / str(severity)
    folder.mkdir(parents=True, exist_ok=True)
    for path in paths:
        with Image.open(path) as image:
            image = image.convert("RGB")
            scale = 256 / min(image.size)  # Resize(256): the shorter side to 256, bilinear
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
            left, top = (image.width - 224) // 2, (image.height - 224) // 2
            image = np.asarray(image.crop((left, top, left + 224, top + 224)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            corrupted = corrupt(image, corruption_name=name, severity=severity)
        Image.fromarray(np.uint8(corrupted)).save(folder / (Path(path).stem + ".JPEG"), quality=85)
    return len(paths)


def run_reference(source: Path, out: Path, limit: int, names: list[str], workers: int) -> float:
    paths = sorted(str(p) for p in source.rglob("*.JPEG"))[:limit]
    jobs = [(paths, str(out), name, severity) for name in names for severity in range(1, 6)]
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers, initializer=_single_threaded) as pool:
        written = sum(pool.map(_reference_cell, jobs))
    seconds = time.perf_counter() - start
    assert written == limit * len(jobs)
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=200, help="images (the --limit of rbpp generate)")
    parser.add_argument("--corruptions", default="all", help="all (15 + 4 extras), benchmark, or comma-separated names")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes on both sides (default: rbpp generate's default, one per CPU up to 4)")
    parser.add_argument("--out", default="bench_generate.json")
    args = parser.parse_args(argv)
    from robustbench_pp.names import ALL_CORRUPTIONS, CORRUPTIONS

    names = {"all": list(ALL_CORRUPTIONS), "benchmark": list(CORRUPTIONS)}.get(args.corruptions, args.corruptions.split(","))
    workers = args.workers or max(1, min(4, os.cpu_count() or 1))  # the CLI's default
    images = args.limit * len(names) * 5
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        write_source(scratch / "val", args.limit)
        # Warm-up, untimed: numba's cache, the reference's JIT and imports, file caches.
        run_ours(scratch / "val", scratch / "warm", min(args.limit, 10), ",".join(names), args.workers)
        run_reference(scratch / "val", scratch / "warm-ref", min(args.limit, 4), names[:2], workers)
        load_before = os.getloadavg()
        ours, line = run_ours(scratch / "val", scratch / "ours", args.limit, ",".join(names), args.workers)
        reference = run_reference(scratch / "val", scratch / "reference", args.limit, names, workers)
        load_after = os.getloadavg()
    result = {
        "images": images, "limit": args.limit, "corruptions": names, "workers": workers,
        "ours_seconds": ours, "ours_images_per_s": images / ours, "rbpp_output": line,
        "reference_seconds": reference, "reference_images_per_s": images / reference, "ratio": reference / ours,
        "load_average_before": load_before, "load_average_after": load_after,
        "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
    }
    print(f"{images} images ({args.limit} x {len(names)} corruptions x 5 severities), {workers} processes each side, "
          f"load average {load_before[0]:.2f} -> {load_after[0]:.2f}")
    print(f"rbpp generate imagenet-c: {ours:7.1f} s  {images / ours:7.0f} images/s   ({line})")
    print(f"imagecorruptions:         {reference:7.1f} s  {images / reference:7.0f} images/s")
    print(f"ratio: {reference / ours:.1f}x")
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
