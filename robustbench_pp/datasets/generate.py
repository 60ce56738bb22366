"""Generate a corrupted set in exactly the released layout, resumably.

``npy`` sets (32 px, and cifar10-c-224) get one ``<corruption>.npy`` of K severity blocks
plus ``labels.npy``; ``jpeg-folders`` sets get ``<corruption>/<severity>/<wnid>/<file>.JPEG``
at quality 85 with a ``SHA256SUMS`` per cell. ``manifest.json`` records the parameters, the
per-file sha256 and the counts.

Crash safety: work in progress lives under ``<out>/.partial/`` (a memory-mapped npy file
with a progress list of finished severity blocks, or a folder of finished JPEGs); a file
reaches its final name by ``os.replace`` only when complete, and counts as complete only
once the manifest lists it. A kill at any point therefore loses at most the block or image
being written, and a rerun with the same parameters resumes.

Image ``i`` of the clean test set is corrupted with ``index_offset=i`` (its index in the
full test set, also under ``--limit``), so generated cells equal on-the-fly cells exactly
(before the JPEG encoding of ImageNet-style sets).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robustbench_pp.datasets.clean import CleanSource, open_clean_source
from robustbench_pp.datasets.manifest import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    MANIFEST_VERSION,
    ManifestError,
    entry_is_complete,
    read_manifest,
    write_manifest,
)
from robustbench_pp.datasets.released import LABELS_FILE
from robustbench_pp.datasets.specs import DatasetSpec, get_dataset
from robustbench_pp.datasets.subsets import balanced_subset
from robustbench_pp.code_identity import git_commit
from robustbench_pp.fileio import atomic_write, file_digest
from robustbench_pp.names import ALL_CORRUPTIONS

PARTIAL_DIR = ".partial"
# The --limit subset is drawn with this fixed seed, not the corruption seed, so that sets
# generated with different corruption seeds hold the same images and stay comparable.
SUBSET_SEED = 0
# Cache the clean set in memory below this size (every 32 px set; not cifar10-c-224 or ImageNet).
_CACHE_LIMIT_BYTES = 512 << 20
# Parameters that must be identical to resume into an existing folder.
_RESUME_KEYS = ("preset", "severities", "indices_sha256", "image_size", "layout", "jpeg_quality", "geometry")


@dataclass(frozen=True)
class GenerationReport:
    """What :func:`generate` did."""

    folder: Path
    cells_written: int
    cells_skipped: int
    images_written: int
    seconds: float
    bytes_on_disk: int


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _corrupt_images(images: np.ndarray, source_indices: np.ndarray, corruption: str, severity: int,
                    preset: str, seed: int, device: str) -> np.ndarray:
    """Corrupt a batch whose images have the given source indices (any order)."""
    from robustbench_pp.corruptions import corrupt
    from robustbench_pp.datasets.benchmark import _contiguous_runs

    out = np.empty_like(images)
    for start, stop in _contiguous_runs(source_indices):
        chunk = images[start:stop]
        if device != "cpu":
            import torch

            tensor = torch.from_numpy(np.ascontiguousarray(chunk)).to(device).permute(0, 3, 1, 2)
            result = corrupt(tensor, corruption, severity, preset=preset, seed=seed,
                             index_offset=int(source_indices[start]))
            out[start:stop] = result.permute(0, 2, 3, 1).cpu().numpy()
        else:
            out[start:stop] = corrupt(chunk, corruption, severity, preset=preset, seed=seed,
                                      index_offset=int(source_indices[start]))
    return out


# --------------------------------------------------------------------------------------------
# Work units. They run in the main process or in worker processes (fork), so they take plain
# arguments and the clean source object.

_WORKER_SOURCE: CleanSource | None = None
_WORKER_CACHE: np.ndarray | None = None


def _clean_batch(source: CleanSource, cache: np.ndarray | None, positions: np.ndarray,
                 source_indices: np.ndarray) -> np.ndarray:
    if cache is not None:
        return cache[positions]
    return source.images(source_indices[positions])


def _npy_block_task(partial: str, block: int, corruption: str, severity: int, source_indices: np.ndarray,
                    batch_size: int, seed: int, device: str, source=None, cache=None, on_batch=None) -> int:
    """Corrupt every image into severity block ``block`` of the partial memmap file."""
    source = source if source is not None else _WORKER_SOURCE
    cache = cache if cache is not None else _WORKER_CACHE
    cells = np.lib.format.open_memmap(partial, mode="r+")
    num_images = len(source_indices)
    for start in range(0, num_images, batch_size):
        positions = np.arange(start, min(start + batch_size, num_images))
        images = _clean_batch(source, cache, positions, source_indices)
        cells[block * num_images + start : block * num_images + positions[-1] + 1] = _corrupt_images(
            images, source_indices[positions], corruption, severity, source.spec.preset, seed, device)
        if on_batch is not None:
            on_batch(len(positions))
    cells.flush()
    del cells
    return num_images


def _jpeg_cell_task(partial: str, keys: list[str], corruption: str, severity: int, source_indices: np.ndarray,
                    batch_size: int, seed: int, device: str, source=None, cache=None, on_batch=None) -> int:
    """Corrupt every image of one cell into ``partial/<wnid>/<file>.JPEG``; finished files are skipped."""
    from PIL import Image

    source = source if source is not None else _WORKER_SOURCE
    cache = cache if cache is not None else _WORKER_CACHE
    folder = Path(partial)
    todo = np.array([i for i, key in enumerate(keys) if not (folder / key).is_file()], dtype=np.int64)
    if on_batch is not None and len(keys) - len(todo):
        on_batch(len(keys) - len(todo))
    for start in range(0, len(todo), batch_size):
        positions = todo[start : start + batch_size]
        images = _clean_batch(source, cache, positions, source_indices)
        corrupted = _corrupt_images(images, source_indices[positions], corruption, severity,
                                    source.spec.preset, seed, device)
        for position, image in zip(positions, corrupted):
            target = folder / keys[position]
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp")
            Image.fromarray(image).save(tmp, format="JPEG", quality=source.spec.jpeg_quality, optimize=True)
            os.replace(tmp, target)
        if on_batch is not None:
            on_batch(len(positions))
    return len(keys)


def _init_worker(source: CleanSource, cache: np.ndarray | None, threads: int) -> None:
    global _WORKER_SOURCE, _WORKER_CACHE
    import torch

    torch.set_num_threads(threads)
    _WORKER_SOURCE, _WORKER_CACHE = source, cache


# --------------------------------------------------------------------------------------------


def _code_identity() -> dict:
    """Package version, git commit and torch version of the code generating the set."""
    import torch

    from robustbench_pp._version import __version__

    return {"package_version": __version__, "git_commit": git_commit(), "torch": torch.__version__}


def _new_manifest(spec: DatasetSpec, source: CleanSource, seed: int, severities, source_indices, limit) -> dict:
    from robustbench_pp._version import __version__

    indices_blob = np.ascontiguousarray(source_indices, dtype=np.int64).tobytes()
    return {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_VERSION,
        "dataset": spec.name,
        "preset": spec.preset,
        "seed": seed,
        "package_version": __version__,
        "code": _code_identity(),
        "created": _now(),
        "updated": _now(),
        "parameters": {
            "preset": spec.preset,
            "severities": list(severities),
            "limit": limit,
            "subset_seed": SUBSET_SEED if limit is not None else None,
            "indices_sha256": hashlib.sha256(indices_blob).hexdigest(),
            "image_size": spec.image_size,
            "layout": spec.layout,
            "geometry": spec.geometry,
            "jpeg_quality": spec.jpeg_quality if spec.layout == "jpeg-folders" else None,
            "index_offset": "source index of each image in the full clean test set",
        },
        "source": {"kind": spec.source, "root": str(source.root), "fingerprint": source.fingerprint(),
                   "num_images": source.num_images},
        "num_images": int(len(source_indices)),
        "num_classes": spec.num_classes,
        "indices": None if limit is None else [int(i) for i in source_indices],
        "class_counts": {str(k): int(v) for k, v in zip(*np.unique(source.labels[source_indices], return_counts=True))},
        "corruptions_complete": [],
        "files": {},
    }


def _check_resume(folder: Path, old: dict, new: dict) -> None:
    differing = [key for key in _RESUME_KEYS if old["parameters"].get(key) != new["parameters"].get(key)]
    if old.get("seed") != new["seed"]:
        differing.append("seed")
    if old.get("dataset") != new["dataset"]:
        differing.append("dataset")
    if old["source"].get("fingerprint") != new["source"]["fingerprint"]:
        differing.append("source (clean data differs)")
    if differing:
        raise ManifestError(
            f"{folder / MANIFEST_NAME} was generated with other parameters ({', '.join(differing)}); "
            "resume with the same ones, or choose another --out / delete the folder to start over"
        )


def _record(folder: Path, manifest: dict, relpath: str, **extra) -> None:
    path = folder / relpath
    manifest["files"][relpath] = {"sha256": file_digest(path), "bytes": path.stat().st_size,
                                  "git_commit": git_commit(), **extra}
    manifest["updated"] = _now()
    write_manifest(folder, manifest)


def generate(name, *, out, source_root=None, corruptions=None, severities=None, seed: int = 0, device: str = "cpu",
             batch_size: int | None = None, limit: int | None = None, workers: int = 1, threads: int = 1,
             progress: bool = True) -> GenerationReport:
    """Generate (or resume) the corrupted set of ``name`` into ``<out>/<name>/``.

    Args:
        name: dataset name or spec.
        out: parent folder (the project's ``corruptions/``); the set goes to ``out/name``.
        source_root: clean source folder (default: the spec's).
        corruptions: names to generate (default: all 19, the 15 benchmark ones plus the 4
            extras, as in the released sets).
        severities: default 1..5.
        seed: corruption seed (recorded; same seed -> bit-identical files).
        device: where the corruption kernels run ("cpu" or "cuda").
        batch_size: images per corruption call (default 1000 at 32 px, 64 at 224 px).
        limit: keep a class-balanced subset of this many images, drawn with ``SUBSET_SEED``
            (recorded in the manifest).
        workers: processes corrupting cells in parallel (1 = in this process).
        threads: torch threads per process.
        progress: show a tqdm bar with images/s.

    Returns:
        A :class:`GenerationReport`.

    Raises:
        SourceError: the clean source is missing.
        ManifestError: the folder holds a set generated with other parameters.
        ValueError: bad names, severities or limit.
    """
    import torch

    from robustbench_pp.datasets.benchmark import validate_selection

    spec = get_dataset(name)
    if workers > 1 and device != "cpu":
        raise ValueError(f"--workers {workers} forks processes, which cannot share {device}; use one worker on a GPU")
    corruptions, severities = validate_selection(corruptions, severities)
    corruptions = corruptions or ALL_CORRUPTIONS
    severities = tuple(sorted(set(severities)))
    caller_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _generate(spec, out, source_root, corruptions, severities, seed, device, batch_size, limit, workers,
                         threads, progress)
    finally:
        torch.set_num_threads(caller_threads)  # the caller's (e.g. an evaluation's) threads are its own


def _generate(spec, out, source_root, corruptions, severities, seed, device, batch_size, limit, workers, threads,
              progress) -> GenerationReport:
    from tqdm import tqdm

    from robustbench_pp.datasets.benchmark import _jpeg_key

    source = open_clean_source(spec, source_root)
    if limit is not None and limit < source.num_images:
        source_indices = balanced_subset(source.labels, limit, SUBSET_SEED)
    else:
        source_indices, limit = np.arange(source.num_images, dtype=np.int64), None
    folder = Path(out) / spec.name
    manifest = _start_or_resume(folder, _new_manifest(spec, source, seed, severities, source_indices, limit))
    num_images = len(source_indices)
    cache = None
    if num_images * spec.image_size**2 * 3 <= _CACHE_LIMIT_BYTES and source.array is not None:
        cache = source.images(source_indices)
    job = _Job(spec, folder, manifest, source, cache, source_indices, severities, seed, device,
               batch_size or (1000 if spec.image_size <= 64 else 64),
               None if spec.layout == "npy" else [_jpeg_key(source.keys[i]) for i in source_indices])
    if spec.layout == "npy" and LABELS_FILE not in manifest["files"]:
        job.write_labels()
    tasks, skipped_cells = job.plan(corruptions)

    started = time.perf_counter()
    bar = tqdm(total=len(tasks) * num_images, unit="img", unit_scale=True, desc=f"generate {spec.name}",
               disable=not progress, smoothing=0.1)
    try:
        if workers <= 1:
            for corruption, severity, block in tasks:
                job.task(corruption, severity, block)(source=source, cache=cache, on_batch=bar.update)
                job.finish(corruption, severity)
        else:
            job.run_pool(tasks, workers, threads, bar.update)
    finally:
        bar.close()
    if job.partial_root.is_dir() and not any(job.partial_root.iterdir()):
        job.partial_root.rmdir()
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    return GenerationReport(folder, len(tasks), skipped_cells, len(tasks) * num_images,
                            time.perf_counter() - started, size)


def _start_or_resume(folder: Path, manifest: dict) -> dict:
    """Write the manifest of a new set, or check and return the one of the set to resume.

    Without a manifest, leftovers under ``.partial/`` cannot be matched to their parameters
    and are discarded.
    """
    folder.mkdir(parents=True, exist_ok=True)
    partial_root = folder / PARTIAL_DIR
    old = read_manifest(folder)
    if old is None:
        shutil.rmtree(partial_root, ignore_errors=True)
    else:
        _check_resume(folder, old, manifest)
        severities = manifest["parameters"]["severities"]
        spec = get_dataset(old["dataset"])
        old["files"] = {rel: e for rel, e in old["files"].items() if entry_is_complete(folder, rel, e)}
        old["corruptions_complete"] = [c for c in old.get("corruptions_complete", [])
                                       if all(rel in old["files"] for rel in _corruption_files(spec, c, severities))]
        manifest = old
    partial_root.mkdir(exist_ok=True)
    write_manifest(folder, manifest)
    return manifest


@dataclass
class _Job:
    """One generation run: what to write where, and how a finished piece is recorded."""

    spec: DatasetSpec
    folder: Path
    manifest: dict
    source: CleanSource
    cache: np.ndarray | None
    source_indices: np.ndarray
    severities: tuple[int, ...]
    seed: int
    device: str
    batch_size: int
    keys: list[str] | None  # jpeg layout: "<wnid>/<file>.JPEG" per image

    @property
    def partial_root(self) -> Path:
        return self.folder / PARTIAL_DIR

    def write_labels(self) -> None:
        labels = np.tile(self.source.labels[self.source_indices], len(self.severities))
        tmp = self.partial_root / LABELS_FILE
        np.save(tmp, labels)
        os.replace(tmp, self.folder / LABELS_FILE)
        _record(self.folder, self.manifest, LABELS_FILE, count=int(len(labels)))

    def plan(self, corruptions) -> tuple[list[tuple[str, int, int]], int]:
        """The (corruption, severity, block) pieces still to write, and the count already complete."""
        todo = [c for c in corruptions if c not in self.manifest["corruptions_complete"]]
        skipped = (len(corruptions) - len(todo)) * len(self.severities)
        tasks = []
        for corruption in todo:
            if self.spec.layout == "npy":
                done = _npy_progress(self.partial_root, corruption, self.spec, len(self.source_indices),
                                     self.severities)
                tasks += [(corruption, s, b) for b, s in enumerate(self.severities) if s not in done]
                skipped += len(done)
                continue
            for block, severity in enumerate(self.severities):
                if f"{corruption}/{severity}/SHA256SUMS" in self.manifest["files"]:
                    skipped += 1
                else:
                    tasks.append((corruption, severity, block))
        return tasks, skipped

    def task(self, corruption: str, severity: int, block: int):
        """The work function of one piece (a picklable partial for worker processes)."""
        from functools import partial

        common = dict(corruption=corruption, severity=severity, source_indices=self.source_indices,
                      batch_size=self.batch_size, seed=self.seed, device=self.device)
        if self.spec.layout == "npy":
            return partial(_npy_block_task, str(self.partial_root / f"{corruption}.npy"), block, **common)
        return partial(_jpeg_cell_task, str(self.partial_root / f"{corruption}-{severity}"), self.keys, **common)

    def finish(self, corruption: str, severity: int) -> None:
        """Record a finished piece; a corruption's file is renamed into place when all are done."""
        num_images = len(self.source_indices)
        if self.spec.layout == "npy":
            _npy_mark_done(self.partial_root, corruption, severity)
            done = _npy_progress(self.partial_root, corruption, self.spec, num_images, self.severities)
            if set(done) == set(self.severities):
                _npy_finalize(self.folder, self.partial_root, self.manifest, corruption, self.severities, num_images)
        else:
            _jpeg_finalize(self.folder, self.partial_root, self.manifest, corruption, severity, self.keys,
                           self.severities)

    def run_pool(self, tasks, workers: int, threads: int, on_done) -> None:
        """Run the pieces in forked worker processes; only this process records progress."""
        import multiprocessing

        from robustbench_pp.corruptions import corrupt

        # Warm the engine here (imports, texture caches) so that forked workers inherit it
        # instead of each paying for it.
        probe = self.cache[:1] if self.cache is not None else self.source.images(self.source_indices[:1])
        for corruption in {task[0] for task in tasks}:
            corrupt(probe, corruption, self.severities[0], preset=self.spec.preset, seed=self.seed)
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                 initargs=(self.source, self.cache, threads)) as pool:
            futures = {pool.submit(self.task(c, s, b)): (c, s) for c, s, b in tasks}
            try:
                for future in as_completed(futures):
                    on_done(future.result())
                    self.finish(*futures[future])
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise


def _corruption_files(spec: DatasetSpec, corruption: str, severities) -> list[str]:
    if spec.layout == "npy":
        return [f"{corruption}.npy"]
    return [f"{corruption}/{s}/SHA256SUMS" for s in severities]


def _npy_progress(partial_root: Path, corruption: str, spec: DatasetSpec, num_images: int, severities) -> list[int]:
    """Severities already written into the partial file (creating the file when absent)."""
    partial = partial_root / f"{corruption}.npy"
    progress = partial_root / f"{corruption}.progress.json"
    shape = (len(severities) * num_images, spec.image_size, spec.image_size, 3)
    if partial.is_file():
        try:
            existing = np.lib.format.open_memmap(partial, mode="r")
            ok = existing.shape == shape and existing.dtype == np.uint8
            del existing
        except (ValueError, OSError):
            ok = False
        if ok and progress.is_file():
            return list(json.loads(progress.read_text())["done"])
        if ok:
            return []
    progress.unlink(missing_ok=True)
    cells = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=shape)
    del cells
    return []


def _npy_mark_done(partial_root: Path, corruption: str, severity: int) -> None:
    progress = partial_root / f"{corruption}.progress.json"
    done = json.loads(progress.read_text())["done"] if progress.is_file() else []
    atomic_write(progress, json.dumps({"done": sorted(set(done) | {severity})}))


def _npy_finalize(folder: Path, partial_root: Path, manifest: dict, corruption: str, severities, num_images: int):
    partial = partial_root / f"{corruption}.npy"
    with open(partial, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, folder / f"{corruption}.npy")
    (partial_root / f"{corruption}.progress.json").unlink(missing_ok=True)
    _record(folder, manifest, f"{corruption}.npy", corruption=corruption, severities=list(severities),
            count=len(severities) * num_images)
    manifest["corruptions_complete"] = [c for c in ALL_CORRUPTIONS if c in set(manifest["corruptions_complete"])
                                        | {corruption}]
    write_manifest(folder, manifest)


def _jpeg_finalize(folder: Path, partial_root: Path, manifest: dict, corruption: str, severity: int, keys, severities):
    partial = partial_root / f"{corruption}-{severity}"
    lines = [f"{file_digest(partial / key)}  {key}\n" for key in keys]
    atomic_write(partial / "SHA256SUMS", "".join(lines))
    target = folder / corruption / str(severity)
    if target.exists():  # renamed before an interruption, never recorded: not trusted
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(partial, target)
    _record(folder, manifest, f"{corruption}/{severity}/SHA256SUMS", corruption=corruption, severity=severity,
            count=len(keys))
    if all(f"{corruption}/{s}/SHA256SUMS" in manifest["files"] for s in severities):
        manifest["corruptions_complete"] = [c for c in ALL_CORRUPTIONS
                                            if c in set(manifest["corruptions_complete"]) | {corruption}]
        write_manifest(folder, manifest)
