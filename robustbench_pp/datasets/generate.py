"""Generate a corrupted set in exactly the released layout, resumably.

``npy`` sets (32 px, and cifar10-c-224) get one ``<corruption>.npy`` of K severity blocks
plus ``labels.npy``; ``jpeg-folders`` sets get ``<corruption>/<severity>/<wnid>/<file>.JPEG``
at quality 85 with a ``SHA256SUMS`` per cell. ``manifest.json`` records the parameters, the
per-file sha256 and the counts. The layout classes (:mod:`robustbench_pp.datasets.layouts`)
own the files; this module plans the pieces, corrupts the images and runs the workers.

Crash safety: work in progress lives under ``<out>/.partial/`` (a memory-mapped npy file,
its disk space reserved up front so that a full disk is an error and not a SIGBUS, with a
progress list of finished severity blocks; or a folder of finished JPEGs); a file reaches
its final name by ``os.replace`` only when complete, and counts as complete only once the
manifest lists it. A kill at any point therefore loses at most the block or image being
written, and a rerun with the same parameters resumes. Worker processes die with the
generating process (:mod:`robustbench_pp.datasets.workers`).

One writer per set: a run holds an OS lock on ``<out>/.<name>.lock``
(:func:`robustbench_pp.fileio.exclusive_lock`) from its first write to its last; a second
run on the same folder fails at once, naming the first one's pid. Every argument is checked
before anything is written, so a bad one leaves nothing behind.

Image ``i`` of the clean test set is corrupted as image ``i`` of the full test set (also
with a ``limit``), by :func:`robustbench_pp.corruptions.corrupt_by_index`, so generated cells
equal on-the-fly cells exactly (before the JPEG encoding of ImageNet-style sets).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from robustbench_pp import arguments
from robustbench_pp.code_identity import git_commit
from robustbench_pp.datasets import workers as worker_processes
from robustbench_pp.datasets.clean import CleanSource, open_clean_source
from robustbench_pp.datasets.layouts import Layout, Piece, Selection, SetContents, layout_for
from robustbench_pp.datasets.manifest import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    MANIFEST_VERSION,
    ManifestError,
    indices_sha256,
    read_manifest,
    utc_now,
    write_manifest,
)
from robustbench_pp.datasets.specs import DatasetSpec, get_dataset
from robustbench_pp.datasets.subsets import balanced_subset
from robustbench_pp.fileio import exclusive_lock, writable_folder
from robustbench_pp.names import ALL_CORRUPTIONS

# The `limit` subset is drawn with this fixed seed, not the corruption seed, so that sets
# generated with different corruption seeds hold the same images and stay comparable.
SUBSET_SEED = 0
# Cache the clean set in memory below this size (every 32 px set; not cifar10-c-224 or ImageNet).
_CACHE_LIMIT_BYTES = 512 << 20
# Parameters that must be identical to resume into an existing folder.
_RESUME_KEYS = ("preset", "severities", "indices_sha256", "image_size", "layout", "jpeg_quality", "geometry",
                "corruption_engine")


@dataclass(frozen=True)
class GenerationReport:
    """What :func:`generate` did."""

    folder: Path
    cells_written: int
    cells_skipped: int
    images_written: int
    seconds: float
    bytes_on_disk: int


@dataclass(frozen=True)
class GenerationOptions:
    """What to generate and how (the parameters of :func:`generate`, checked)."""

    corruptions: tuple[str, ...]  # canonical names, in the caller's order
    severities: tuple[int, ...]  # ascending, without repeats
    seed: int = 0  # corruption seed: same seed, bit-identical files
    device: str = "cpu"  # where the corruption kernels run
    batch_size: int | None = None  # images per corruption call (None: by image size)
    limit: int | None = None  # class-balanced subset size (None: every image)
    workers: int = 1  # forked processes corrupting pieces in parallel
    threads: int = 1  # torch threads per process
    progress: bool = True  # tqdm bar


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
        ManifestError: the folder holds a set generated with other parameters, or a manifest
            that is not self-consistent.
        LockedError: another process is generating into the same folder.
        ValueError: bad names, severities, counts, seed or device (before anything is written).
        OSError: the output folder cannot be written (a file in the way, a read-only or full
            filesystem); files already complete stay complete.

    Example:
        >>> generate("fashion-mnist-c", out="corruptions", corruptions=["fog"], limit=1000)
    """
    spec = get_dataset(name)
    batch_size = arguments.whole_number("batch_size", batch_size, optional=True)
    limit = arguments.whole_number("limit", limit, optional=True)
    workers = arguments.whole_number("workers", workers)
    threads = arguments.whole_number("threads", threads)
    seed = arguments.whole_number("seed", seed, minimum=0)
    _check_forking(workers, device)
    device = str(arguments.resolve_device(device))
    _check_forking(workers, device)  # "auto" may have chosen a GPU
    selection = Selection.checked(corruptions, severities)
    options = GenerationOptions(corruptions=selection.corruptions or ALL_CORRUPTIONS,
                                severities=tuple(sorted(set(selection.severities))), seed=seed, device=device,
                                batch_size=batch_size, limit=limit, workers=workers, threads=threads,
                                progress=progress)
    with _torch_threads(threads):
        return _generate(spec, Path(out) / spec.name, source_root, options)


def _check_forking(workers: int, device: str) -> None:
    if workers > 1 and device not in ("cpu", "auto"):
        raise ValueError(f"`workers` = {workers} forks processes, which cannot share {device}; use one worker on a GPU")


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """Run with ``threads`` torch threads; the caller's (e.g. an evaluation's) are restored after."""
    import torch

    caller_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(caller_threads)


def _generate(spec: DatasetSpec, folder: Path, source_root, options: GenerationOptions) -> GenerationReport:
    source = open_clean_source(spec, source_root)
    source_indices, limit = _subset(source, options.limit)
    writable_folder(folder.parent)
    with exclusive_lock(folder):
        return _generate_locked(spec, folder, source, source_indices, limit, options)


def _generate_locked(spec: DatasetSpec, folder: Path, source: CleanSource, source_indices: np.ndarray,
                     limit: int | None, options: GenerationOptions) -> GenerationReport:
    layout = layout_for(spec, folder)
    contents = SetContents(source_indices, options.severities, layout.image_keys(source, source_indices))
    manifest = _start_or_resume(layout, _new_manifest(layout, source, contents, options.seed, limit))
    batch_size = options.batch_size if options.batch_size is not None else _default_batch(spec)
    job = _Job(layout, manifest, contents, _CleanImages.of(source, source_indices),
               _Corruptor(spec.preset, options.seed, options.device, batch_size))
    layout.begin(manifest, contents, source.labels[source_indices])
    pieces, skipped = job.plan(options.corruptions)
    started = time.perf_counter()
    job.run(pieces, options)
    if layout.partial_root.is_dir() and not any(layout.partial_root.iterdir()):
        layout.partial_root.rmdir()
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    return GenerationReport(folder, len(pieces), skipped, len(pieces) * contents.num_images,
                            time.perf_counter() - started, size)


def _subset(source: CleanSource, limit: int | None) -> tuple[np.ndarray, int | None]:
    """Source indices of the set, and the limit as recorded (None when it keeps every image)."""
    if limit is not None and limit < source.num_images:
        return balanced_subset(source.labels, limit, SUBSET_SEED), limit
    return np.arange(source.num_images, dtype=np.int64), None


def _default_batch(spec: DatasetSpec) -> int:
    return 1000 if spec.image_size <= 64 else 64


# --------------------------------------------------------------------------------------------
# The manifest of a new set, and resuming an existing one.


def _code_identity() -> dict:
    """Package version, git commit and torch version of the code generating the set."""
    import torch

    from robustbench_pp._version import __version__

    return {"package_version": __version__, "git_commit": git_commit(), "torch": torch.__version__}


def _new_manifest(layout: Layout, source: CleanSource, contents: SetContents, seed: int, limit: int | None) -> dict:
    from robustbench_pp._version import __version__
    from robustbench_pp.corruptions import ENGINE_VERSION

    spec, source_indices = layout.spec, contents.source_indices
    return {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_VERSION,
        "dataset": spec.name,
        "preset": spec.preset,
        "seed": seed,
        "package_version": __version__,
        "code": _code_identity(),
        "created": utc_now(),
        "updated": utc_now(),
        "parameters": {
            "preset": spec.preset,
            "severities": list(contents.severities),
            "limit": limit,
            "subset_seed": SUBSET_SEED if limit is not None else None,
            "indices_sha256": indices_sha256(source_indices),
            "image_size": spec.image_size,
            "layout": spec.layout,
            "geometry": spec.geometry,
            "jpeg_quality": layout.jpeg_quality,
            "corruption_engine": ENGINE_VERSION,  # the corrupted bytes of a seed change when it does
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
            "resume with the same ones, or choose another `out` or delete the folder to start over"
        )


def _start_or_resume(layout: Layout, manifest: dict) -> dict:
    """Write the manifest of a new set, or check and return the one of the set to resume.

    Without a manifest, leftovers under ``.partial/`` cannot be matched to their parameters
    and are discarded. A resumed manifest forgets files that are missing or changed since
    they were recorded (they are generated again), and corruptions whose files are not all
    recorded.
    """
    layout.root.mkdir(parents=True, exist_ok=True)
    old = read_manifest(layout.root)
    if old is None:
        shutil.rmtree(layout.partial_root, ignore_errors=True)
    else:
        _check_resume(layout.root, old, manifest)
        severities = manifest["parameters"]["severities"]
        old["files"] = {rel: e for rel, e in old["files"].items() if layout.recorded_intact(old, rel)}
        old["corruptions_complete"] = [c for c in old.get("corruptions_complete", [])
                                       if all(rel in old["files"] for rel in layout.corruption_keys(c, severities))]
        manifest = old
    layout.partial_root.mkdir(exist_ok=True)
    write_manifest(layout.root, manifest)
    return manifest


# --------------------------------------------------------------------------------------------
# Work units. They run in this process or in forked worker processes, which get the clean
# images once, at start-up (_init_worker), and a picklable piece of work per task.


@dataclass(frozen=True)
class _CleanImages:
    """The set's clean images by position: an in-memory cache when small, else the source."""

    source: CleanSource
    source_indices: np.ndarray
    cache: np.ndarray | None = None

    @classmethod
    def of(cls, source: CleanSource, source_indices: np.ndarray) -> _CleanImages:
        small = len(source_indices) * source.spec.image_size**2 * 3 <= _CACHE_LIMIT_BYTES
        cache = source.images(source_indices) if small and source.array is not None else None
        return cls(source, source_indices, cache)

    def at(self, positions: np.ndarray) -> np.ndarray:
        if self.cache is not None:
            return self.cache[positions]
        return self.source.images(self.source_indices[positions])


_WORKER_CLEAN: _CleanImages | None = None


def _init_worker(parent_pid: int, clean: _CleanImages, threads: int) -> None:
    global _WORKER_CLEAN
    worker_processes.die_with_parent(parent_pid)
    import torch

    torch.set_num_threads(threads)
    _WORKER_CLEAN = clean


@dataclass(frozen=True)
class _Corruptor:
    """Corrupts a piece's clean images batch by batch, each image by its source index."""

    preset: str
    seed: int
    device: str
    batch_size: int

    def corrupt(self, images: np.ndarray, source_indices: np.ndarray, piece: Piece) -> np.ndarray:
        from robustbench_pp.corruptions import corrupt_by_index

        if self.device == "cpu":
            return corrupt_by_index(images, source_indices, piece.corruption, piece.severity, preset=self.preset,
                                    seed=self.seed)
        import torch

        batch = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).permute(0, 3, 1, 2)
        out = corrupt_by_index(batch, source_indices, piece.corruption, piece.severity, preset=self.preset,
                               seed=self.seed)
        return out.permute(0, 2, 3, 1).cpu().numpy()

    def batches(self, piece: Piece, positions: np.ndarray, clean: _CleanImages,
                on_batch: Callable[[int], object] | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(positions, corrupted images)`` per batch; ``on_batch`` runs once the consumer has written one."""
        for start in range(0, len(positions), self.batch_size):
            worker_processes.exit_if_orphaned()
            chunk = positions[start : start + self.batch_size]
            yield chunk, self.corrupt(clean.at(chunk), clean.source_indices[chunk], piece)
            if on_batch is not None:
                on_batch(len(chunk))


def _write_piece(layout: Layout, piece: Piece, contents: SetContents, corruptor: _Corruptor,
                 clean: _CleanImages | None = None, on_batch=None) -> int:
    """Corrupt and write one piece under ``.partial/`` (a task of a worker process or of this one)."""
    clean = clean if clean is not None else _WORKER_CLEAN
    todo = layout.todo_positions(piece, contents)
    if on_batch is not None and contents.num_images - len(todo):
        on_batch(contents.num_images - len(todo))  # written before an interruption
    written = np.zeros(len(todo), dtype=bool)

    def counted():
        for positions, images in corruptor.batches(piece, todo, clean, on_batch):
            written[np.searchsorted(todo, positions)] = True
            yield positions, images

    layout.write_piece(piece, contents, counted())
    # A piece counts as written only when every image was: a batch loop that yields nothing
    # must never leave a block of zeros to be recorded as complete.
    if not written.all():
        raise RuntimeError(f"{piece.corruption} severity {piece.severity}: {int(written.sum())} of {len(todo)} "
                           "images were written; the piece is not recorded")
    return contents.num_images


@dataclass
class _Job:
    """One generation run: the set's layout and manifest, what it holds, and how images are made."""

    layout: Layout
    manifest: dict
    contents: SetContents
    clean: _CleanImages
    corruptor: _Corruptor

    def plan(self, corruptions) -> tuple[list[Piece], int]:
        """The pieces still to write, and the count of cells already complete."""
        done = self.manifest["corruptions_complete"]
        todo = [c for c in corruptions if c not in done]
        skipped = (len(corruptions) - len(todo)) * len(self.contents.severities)
        pieces = []
        for corruption in todo:
            pending, written = self.layout.pending(self.manifest, corruption, self.contents)
            pieces += pending
            skipped += written
        return pieces, skipped

    def run(self, pieces: list[Piece], options: GenerationOptions) -> None:
        from tqdm import tqdm

        bar = tqdm(total=len(pieces) * self.contents.num_images, unit="img", unit_scale=True,
                   desc=f"generate {self.layout.spec.name}", disable=not options.progress, smoothing=0.1)
        try:
            if options.workers <= 1:
                for piece in pieces:
                    _write_piece(self.layout, piece, self.contents, self.corruptor, self.clean, bar.update)
                    self.layout.finish_piece(self.manifest, piece, self.contents)
            else:
                self.run_pool(pieces, options, bar.update)
        finally:
            bar.close()

    def run_pool(self, pieces: list[Piece], options: GenerationOptions, on_done) -> None:
        """Run the pieces in forked worker processes; only this process records progress."""
        import multiprocessing

        from robustbench_pp.corruptions import corrupt

        # Warm the engine here (imports, texture caches) so that forked workers inherit it
        # instead of each paying for it.
        probe = self.clean.at(np.arange(1))
        for corruption in {piece.corruption for piece in pieces}:
            corrupt(probe, corruption, self.contents.severities[0], preset=self.corruptor.preset,
                    seed=self.corruptor.seed)
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(options.workers, mp_context=context, initializer=_init_worker,
                                 initargs=(os.getpid(), self.clean, options.threads)) as pool:
            futures = {pool.submit(_write_piece, self.layout, piece, self.contents, self.corruptor): piece
                       for piece in pieces}
            try:
                for future in as_completed(futures):
                    on_done(future.result())
                    self.layout.finish_piece(self.manifest, futures[future], self.contents)
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
