"""One benchmark dataset ready to evaluate: released files, a generated set, or on the fly.

:func:`open_benchmark` checks the structure (always) and returns a :class:`BenchmarkData`
whose :meth:`BenchmarkData.batches` yields ``(uint8 B×3×H×W, int64 B)`` tensors for any
cell. Pixels stay uint8 until :func:`robustbench_pp.preprocessing.normalize` runs on the evaluation device, so a GPU is
fed a quarter of the bytes of float input, and memory stays bounded by a few batches
whatever the dataset size (memory-mapped blocks, per-batch decoding).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from robustbench_pp.datasets.clean import CleanSource, open_clean_source
from robustbench_pp.datasets.manifest import (
    MANIFEST_NAME,
    ManifestError,
    cached_sha256,
    entry_is_complete,
    read_manifest,
    verify_entry,
)
from robustbench_pp.datasets.released import (
    LABELS_FILE,
    LayoutError,
    check_jpeg_cell,
    jpeg_corruptions_present,
    list_jpeg_cell,
    npy_corruptions_present,
    open_npy_cells,
    read_npy_labels,
    verify_release_checksums,
)
from robustbench_pp.datasets.sources import SourceError
from robustbench_pp.datasets.specs import DatasetSpec, get_dataset
from robustbench_pp.names import ALL_CORRUPTIONS, CLEAN, CLEAN_SEVERITY, SEVERITIES

MODES = ("released", "generated", "on-the-fly")


class DataNotFoundError(FileNotFoundError):
    """A corrupted-data folder or clean source is missing; the message says how to get it."""


def validate_selection(corruptions, severities) -> tuple[tuple[str, ...] | None, tuple[int, ...]]:
    """Check corruption names and severities.

    Raises:
        ValueError: naming the unknown corruption or bad severity.
    """
    from robustbench_pp.corruptions.parameters import check_name, check_severity

    if corruptions is not None:
        corruptions = tuple(corruptions)
        for name in corruptions:
            check_name(name)
    severities = tuple(check_severity(s) for s in (SEVERITIES if severities is None else severities))
    return corruptions, severities


def _contiguous_runs(values: np.ndarray) -> list[tuple[int, int]]:
    """Split an index array into maximal runs of consecutive values: [(start_slot, stop_slot)]."""
    if len(values) == 0:
        return []
    breaks = np.flatnonzero(np.diff(values) != 1) + 1
    edges = np.concatenate([[0], breaks, [len(values)]])
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def _to_nchw(images):
    """uint8 N×H×W×3 numpy -> N×3×H×W tensor view (channels_last strides, no copy)."""
    import torch

    if isinstance(images, torch.Tensor):
        return images
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)


# ---------------------------------------------------------------------------------------------
# Cell readers: picklable callables positions -> uint8 images (numpy NHWC or torch NCHW), so
# that DataLoader worker processes can run them.


@dataclass
class _NpyCellReader:
    path: Path
    num_blocks: int
    block: int
    num_images: int
    image_size: int
    _cells: np.memmap | None = field(default=None, repr=False)

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        if self._cells is None:  # opened lazily so that workers map the file themselves
            self._cells = open_npy_cells(self.path, self.image_size, self.num_images, self.num_blocks)
        block = self._cells[self.block * self.num_images : (self.block + 1) * self.num_images]
        if len(positions) and positions[-1] - positions[0] == len(positions) - 1 and np.all(np.diff(positions) == 1):
            return np.array(block[positions[0] : positions[-1] + 1])
        return block[positions]

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_cells"] = None
        return state


@dataclass
class _JpegCellReader:
    cell: Path
    keys: list[str]
    image_size: int

    def __call__(self, positions: np.ndarray):
        import warnings

        import torch
        from torchvision.io import ImageReadMode, decode_jpeg, read_file

        out = torch.empty((len(positions), 3, self.image_size, self.image_size), dtype=torch.uint8)
        with warnings.catch_warnings():
            # torchvision 0.29 flags its JPEG codec as deprecated in favour of TorchCodec; it works.
            warnings.simplefilter("ignore", DeprecationWarning)
            for slot, position in enumerate(positions):
                out[slot] = self._decode(self.cell / self.keys[position], decode_jpeg, read_file, ImageReadMode.RGB)
        return out

    def _decode(self, path: Path, decode_jpeg, read_file, mode):
        try:
            image = decode_jpeg(read_file(str(path)), mode=mode)
        except RuntimeError as exc:
            raise LayoutError(f"cannot decode {path}: {exc}") from exc
        if image.shape[1:] != (self.image_size, self.image_size):
            raise LayoutError(f"{path} is {image.shape[2]}x{image.shape[1]}, expected "
                              f"{self.image_size}x{self.image_size} (corrupted images are never resized)")
        return image


@dataclass
class _CleanReader:
    source: CleanSource
    source_indices: np.ndarray

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        return self.source.images(self.source_indices[positions])


@dataclass
class _OnTheFlyReader:
    source: CleanSource
    source_indices: np.ndarray
    corruption: str
    severity: int
    seed: int
    jpeg_roundtrip: bool
    jpeg_quality: int

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        return self.apply(self.source.images(self.source_indices[positions]), positions)

    def apply(self, images, positions: np.ndarray):
        """Corrupt clean images (numpy N×H×W×3, or a torch N×3×H×W batch on any device)."""
        from robustbench_pp.corruptions import corrupt, jpeg_roundtrip

        source_indices = self.source_indices[positions]
        pieces = []
        # The randomness of image i depends on its source index only: corrupt each run of
        # consecutive source indices with the matching offset, so any subset or order
        # reproduces the images of one full pass (and of the generated files).
        for start, stop in _contiguous_runs(source_indices):
            pieces.append(corrupt(images[start:stop], self.corruption, self.severity, preset=self.source.spec.preset,
                                  seed=self.seed, index_offset=int(source_indices[start])))
        if isinstance(images, np.ndarray):
            out = np.concatenate(pieces) if len(pieces) != 1 else pieces[0]
        else:
            import torch

            out = torch.cat(pieces) if len(pieces) != 1 else pieces[0]
        if self.jpeg_roundtrip:
            out = jpeg_roundtrip(out, quality=self.jpeg_quality)
        return out


class _BatchDataset:
    """Item k is the whole k-th batch, so worker processes build batches end to end."""

    def __init__(self, chunks: list[np.ndarray], reader: Callable, labels: np.ndarray):
        self.chunks, self.reader, self.labels = chunks, reader, labels

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, k: int):
        import torch

        positions = self.chunks[k]
        return _to_nchw(self.reader(positions)), torch.from_numpy(self.labels[positions])


def _init_worker(_worker_id: int) -> None:
    import torch

    torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------


@dataclass
class BenchmarkData:
    """A dataset opened for evaluation. Build it with :func:`open_benchmark`."""

    spec: DatasetSpec
    mode: str  # "released" | "generated" | "on-the-fly"
    labels: np.ndarray  # int64, one per image of a cell
    data_root: Path | None
    source_root: Path
    seed: int | None
    jpeg_roundtrip: bool
    clean: CleanSource | None  # None when the clean source is absent (clean cell unavailable)
    source_indices: np.ndarray  # position in a cell -> index in the clean test set
    cells: dict[tuple[str, int], Callable]  # (corruption, severity) -> reader (excluding clean)
    manifest: dict | None = None
    keys: list[str] | None = None  # "<wnid>/<file>" per position (jpeg layout)
    clean_error: str | None = None
    _fingerprint: str | None = field(default=None, repr=False)

    @property
    def num_images(self) -> int:
        return len(self.labels)

    def available_cells(self) -> list[tuple[str, int]]:
        """The cells that can be read: ``("clean", 0)`` first when the clean source exists."""
        clean = [(CLEAN, CLEAN_SEVERITY)] if self.clean is not None else []
        return clean + list(self.cells)

    def _reader(self, corruption: str, severity: int) -> Callable:
        if (corruption, severity) == (CLEAN, CLEAN_SEVERITY):
            if self.clean is None:
                raise DataNotFoundError(f"the clean cell of {self.spec.name} needs its clean source: {self.clean_error}")
            return _CleanReader(self.clean, self.source_indices)
        try:
            return self.cells[(corruption, severity)]
        except KeyError:
            raise ValueError(
                f"cell ({corruption!r}, {severity}) is not available in {self.spec.name} ({self.mode}); "
                f"available: {len(self.cells)} corrupted cells, e.g. {list(self.cells)[:3]}"
            ) from None

    def batches(self, corruption: str, severity: int, *, batch_size: int, indices=None, device="cpu",
                pin_memory: bool = False, num_workers: int | None = None, corrupt_on: str = "auto") -> Iterator:
        """Yield ``(images uint8 B×3×H×W, labels int64 B)`` for one cell.

        Args:
            corruption, severity: the cell (``("clean", 0)`` for clean images).
            batch_size: images per batch (the last one may be smaller).
            indices: positions to read, in the given order (default: all, in order).
            device: where the tensors go (``non_blocking`` when pinned).
            pin_memory: pin host batches (when CUDA is available) so that the copy to the
                GPU, here or by the caller, is asynchronous.
            num_workers: worker processes building batches (JPEG decoding, on-the-fly
                corruption); default 0 for memory-mapped npy cells and single batches, else
                min(4, CPUs - 1).
            corrupt_on: on-the-fly only: "host" corrupts in the loader (worker processes),
                "device" moves clean uint8 images to ``device`` and corrupts them there;
                "auto" picks "device" for a non-CPU device.

        Raises:
            ValueError: unknown cell, bad indices or batch size.
        """
        import torch

        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        reader = self._reader(corruption, severity)
        if indices is None:
            positions = np.arange(self.num_images, dtype=np.int64)
        else:
            positions = np.asarray(indices, dtype=np.int64).reshape(-1)
            if positions.size and (positions.min() < 0 or positions.max() >= self.num_images):
                raise ValueError(f"indices must lie in [0, {self.num_images}), got {positions.min()}..{positions.max()}")
        chunks = [positions[i : i + batch_size] for i in range(0, len(positions), batch_size)]
        if num_workers is None:
            # Memory-mapped npy cells and in-memory clean sets are read faster than workers
            # start; a single batch gains nothing from them either.
            cheap = isinstance(reader, (_NpyCellReader, _CleanReader)) and self.clean_is_array()
            # Leave one core to the main process (model, transfers): on 2 cores, one worker.
            num_workers = 0 if cheap or len(chunks) <= 1 else min(4, (os.cpu_count() or 1) - 1)
        device = torch.device(device)
        if corrupt_on not in ("auto", "host", "device"):
            raise ValueError(f"corrupt_on must be 'auto', 'host' or 'device', got {corrupt_on!r}")
        on_device = None
        if isinstance(reader, _OnTheFlyReader) and (corrupt_on == "device" or (corrupt_on == "auto"
                                                                                and device.type != "cpu")):
            on_device, reader = reader, _CleanReader(reader.source, reader.source_indices)
        # Pinned host batches serve a later copy too (callers that move batches themselves).
        pin = pin_memory and torch.cuda.is_available()
        dataset = _BatchDataset(chunks, reader, self.labels)
        if num_workers == 0:
            source = (dataset[k] for k in range(len(dataset)))
        else:
            source = torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=False, num_workers=num_workers,
                                                 worker_init_fn=_init_worker, prefetch_factor=2, pin_memory=pin)
        for positions, (images, labels) in zip(chunks, source):
            if pin and not images.is_pinned():
                images, labels = images.pin_memory(), labels.pin_memory()
            if device.type != "cpu":
                images = images.to(device, non_blocking=pin)
                labels = labels.to(device, non_blocking=pin)
            if on_device is not None:
                images = on_device.apply(images, positions)
            yield images, labels

    def clean_is_array(self) -> bool:
        return self.clean is None or self.clean.array is not None

    def fingerprint(self) -> str:
        """sha256 hex identifying exactly the data evaluated (see :meth:`describe` for the method)."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            digest.update(f"{self.spec.name}|{self.mode}|{self.num_images}\n".encode())
            digest.update(np.ascontiguousarray(self.source_indices).tobytes())
            if self.clean is not None:
                digest.update(f"clean:{self.clean.fingerprint()}\n".encode())
            if self.mode == "on-the-fly":
                from robustbench_pp._version import __version__

                payload = {"spec": self.spec.to_dict(), "seed": self.seed, "jpeg_roundtrip": self.jpeg_roundtrip,
                           "package_version": __version__, "cells": sorted(self.cells)}
                digest.update(json.dumps(payload, sort_keys=True).encode())
            else:
                for relpath, sha in self._file_hashes():
                    digest.update(f"{relpath}:{sha}\n".encode())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def cell_fingerprint(self, corruption: str, severity: int) -> str:
        """sha256 hex identifying one cell's data: unchanged when other cells are added to or
        left out of the opened set (a finer identity than :meth:`fingerprint`).

        Raises:
            ValueError: the cell is not available.
        """
        self._reader(corruption, severity)  # raises for an unknown cell
        digest = hashlib.sha256(f"{self.spec.name}|{self.mode}|{corruption}|{severity}\n".encode())
        digest.update(np.ascontiguousarray(self.source_indices).tobytes())
        if (corruption, severity) == (CLEAN, CLEAN_SEVERITY):
            digest.update(self.clean.fingerprint().encode())
        elif self.mode == "on-the-fly":
            from robustbench_pp._version import __version__

            payload = {"spec": self.spec.to_dict(), "seed": self.seed, "jpeg_roundtrip": self.jpeg_roundtrip,
                       "package_version": __version__, "clean": self.clean.fingerprint()}
            digest.update(json.dumps(payload, sort_keys=True).encode())
        else:
            relpath = _cell_relpath(self.spec, corruption, severity)
            hashes = dict(self._file_hashes(cells=[(corruption, severity)]))
            digest.update(f"{relpath}:{hashes.get(relpath) or hashes[f'{corruption}/{severity}']}".encode())
        return digest.hexdigest()

    def _file_hashes(self, cells=None) -> list[tuple[str, str]]:
        cells = self.cells if cells is None else cells
        if self.manifest is not None:
            wanted = {LABELS_FILE} | {_cell_relpath(self.spec, c, s) for c, s in cells}
            return sorted((rel, entry["sha256"]) for rel, entry in self.manifest["files"].items() if rel in wanted)
        if self.spec.layout == "npy":
            names = sorted({f"{c}.npy" for c, _ in cells} | {LABELS_FILE})
            return [(name, cached_sha256(self.data_root / name)) for name in names]
        # Released JPEG folders: hashing ~3.75 M files is impractical per run; the listing
        # with sizes identifies the data (see describe()["fingerprint_method"]).
        out = []
        for corruption, severity in sorted(cells):
            cell = self.data_root / corruption / str(severity)
            listing = hashlib.sha256()
            for key in self.keys:
                listing.update(f"{key}:{os.path.getsize(cell / key)}\n".encode())
            out.append((f"{corruption}/{severity}", listing.hexdigest()))
        return out

    def describe(self) -> dict:
        """json-able provenance of the data (goes into every result record)."""
        if self.mode == "on-the-fly":
            method = "spec + seed + clean-source fingerprint + jpeg flag + package version"
        elif self.manifest is not None:
            method = "manifest sha256 of each file"
        elif self.spec.layout == "npy":
            method = "sha256 of each .npy file"
        else:
            method = "file listing with sizes (ImageNet-C JPEG folders)"
        out = {
            "dataset": self.spec.name,
            "mode": self.mode,
            "preset": self.spec.preset,
            "seed": self.seed,
            "jpeg_roundtrip": self.jpeg_roundtrip,
            "data_root": str(self.data_root) if self.data_root is not None else None,
            "source_root": str(self.source_root),
            "image_size": self.spec.image_size,
            "geometry": self.spec.geometry,
            "layout": self.spec.layout,
            "num_images": self.num_images,
            "fingerprint_method": method,
        }
        if self.manifest is not None:
            out["generator_version"] = self.manifest.get("package_version")
            out["limit"] = self.manifest["parameters"].get("limit")
        return out

    def verify(self) -> list[str]:
        """Read every byte of the selected files and check them against the manifest's
        sha256 (generated sets) or the published MD5s (released sets).

        Returns:
            The relative paths verified.

        Raises:
            ManifestError: naming the first file that differs.
        """
        if self.mode == "on-the-fly":
            return []
        if self.manifest is not None:
            checked = []
            for relpath, _sha in self._file_hashes():
                verify_entry(self.data_root, relpath, self.manifest["files"][relpath])
                checked.append(relpath)
            return checked
        files = sorted({f"{c}.npy" for c, _ in self.cells} | {LABELS_FILE}) if self.spec.layout == "npy" else None
        return verify_release_checksums(self.spec, self.data_root, files)


def _cell_relpath(spec: DatasetSpec, corruption: str, severity: int) -> str:
    """Manifest key of the file holding a cell: the npy file, or the cell's SHA256SUMS."""
    if spec.layout == "npy":
        return f"{corruption}.npy"
    return f"{corruption}/{severity}/SHA256SUMS"


def _missing_data_message(spec: DatasetSpec, root: Path, source_root: Path, clean_ok: bool) -> str:
    out = root.parent if root.name == spec.name else root.parent
    if clean_ok:
        return (f"corrupted data folder {root} not found for {spec.name}: generate it with "
                f"`rbpp generate {spec.name} --out {out}/` or pass --on-the-fly")
    release = f" download the public release into {root}, or" if spec.release else ""
    return (f"corrupted data folder {root} not found for {spec.name}, and its clean source {source_root} is "
            f"missing too:{release} get the clean source (set {spec.source_env} or pass --source DIR) and run "
            f"`rbpp generate {spec.name} --source DIR --out {out}/`")


def open_benchmark(name, *, data_root=None, source_root=None, on_the_fly: bool = False, seed: int = 0,
                   jpeg_roundtrip: bool = False, corruptions=None, severities=None) -> BenchmarkData:
    """Open a dataset for evaluation after a structural check of its files.

    Args:
        name: a registered dataset name (or a :class:`DatasetSpec`).
        data_root: folder of the corrupted files (default ``spec.resolve_data_root()``).
        source_root: folder of the clean source (default ``spec.resolve_source_root()``).
        on_the_fly: corrupt the clean images in memory instead of reading files.
        seed: corruption seed (on-the-fly; generated sets use the manifest's seed).
        jpeg_roundtrip: on-the-fly only: JPEG-encode each corrupted image at the spec's
            quality, as the released ImageNet-C files were.
        corruptions: restrict to these (default: every corruption present; all 19 on the fly).
        severities: restrict to these (default 1..5).

    Returns:
        A :class:`BenchmarkData`.

    Raises:
        DataNotFoundError: the folder or clean source is missing (the message says how to get it).
        LayoutError, ManifestError: files with the wrong structure, naming the file.
        ValueError: unknown dataset, corruption or severity.
    """
    spec = get_dataset(name)
    requested_severities = severities
    corruptions, severities = validate_selection(corruptions, severities)
    source_root = spec.resolve_source_root(source_root)
    clean, clean_error = None, None
    try:
        clean = open_clean_source(spec, source_root)
    except SourceError as exc:
        clean_error = str(exc)

    if on_the_fly:
        if clean is None:
            raise DataNotFoundError(f"on-the-fly corruption of {spec.name} needs its clean source: {clean_error}")
        cells = {}
        indices = np.arange(clean.num_images, dtype=np.int64)
        for corruption in corruptions or ALL_CORRUPTIONS:
            for severity in severities:
                cells[(corruption, severity)] = _OnTheFlyReader(clean, indices, corruption, severity, seed,
                                                                jpeg_roundtrip, spec.jpeg_quality)
        return BenchmarkData(spec, "on-the-fly", clean.labels, None, source_root, seed, jpeg_roundtrip, clean,
                             indices, cells)

    if jpeg_roundtrip:
        raise ValueError("jpeg_roundtrip simulates the released JPEG files on the fly; it needs on_the_fly=True")
    root = spec.resolve_data_root(data_root)
    if not root.is_dir():
        raise DataNotFoundError(_missing_data_message(spec, root, source_root, clean is not None))
    manifest = read_manifest(root)
    if manifest is not None and manifest.get("dataset") != spec.name:
        raise ManifestError(f"{root / MANIFEST_NAME} describes {manifest.get('dataset')!r}, not {spec.name!r}")
    if spec.layout == "npy":
        if manifest is not None and requested_severities is None:  # default: what was generated
            severities = tuple(manifest["parameters"]["severities"])
        return _open_npy(spec, root, source_root, manifest, clean, clean_error, corruptions, severities)
    if manifest is not None and requested_severities is None:
        severities = tuple(manifest["parameters"]["severities"])
    return _open_jpeg(spec, root, source_root, manifest, clean, clean_error, corruptions, severities)


def _generated_indices(manifest: dict, root: Path) -> np.ndarray:
    indices = manifest.get("indices")
    if indices is None:
        return np.arange(manifest["num_images"], dtype=np.int64)
    indices = np.asarray(indices, dtype=np.int64)
    if len(indices) != manifest["num_images"]:
        raise ManifestError(f"{root / MANIFEST_NAME}: {len(indices)} indices for {manifest['num_images']} images")
    return indices


def _complete_corruptions(spec, root, manifest, corruptions, present) -> list[str]:
    """Corruptions to open; in a generated set only those its manifest records as complete."""
    if manifest is None:
        selected = corruptions or present
        for name in selected:
            if name not in present:
                raise LayoutError(f"{root} has no data for {name} (expected "
                                  f"{root / (name + '.npy') if spec.layout == 'npy' else root / name})")
        return list(selected)
    done = manifest.get("corruptions_complete", [])
    selected = corruptions or [c for c in ALL_CORRUPTIONS if c in done]
    for name in selected:
        if name not in done:
            raise LayoutError(
                f"{name} is not recorded as complete in {root / MANIFEST_NAME} (interrupted or not generated); "
                f"rerun `rbpp generate {spec.name} --out {root.parent}/` to finish it"
            )
    return list(selected)


def _open_npy(spec, root, source_root, manifest, clean, clean_error, corruptions, severities) -> BenchmarkData:
    if manifest is not None:
        source_indices = _generated_indices(manifest, root)
        stored_severities = tuple(manifest["parameters"]["severities"])
        for relpath, entry in manifest["files"].items():
            if not entry_is_complete(root, relpath, entry):
                raise ManifestError(f"{root / relpath} does not match {root / MANIFEST_NAME} (missing or truncated); "
                                    f"rerun `rbpp generate {spec.name} --out {root.parent}/` to rebuild it")
    else:
        source_indices = np.arange(spec.num_images if clean is None else clean.num_images, dtype=np.int64)
        stored_severities = SEVERITIES
    num_images = len(source_indices)
    num_blocks = len(stored_severities)
    reference = clean.labels[source_indices] if clean is not None else None
    if clean is not None and manifest is None and clean.num_images != spec.num_images:
        raise LayoutError(f"clean source {clean.root} has {clean.num_images} test images, {spec.name} expects "
                          f"{spec.num_images}")
    labels = read_npy_labels(root / LABELS_FILE, num_images, num_blocks, reference)
    present = npy_corruptions_present(root)
    cells = {}
    for corruption in _complete_corruptions(spec, root, manifest, corruptions, present):
        path = root / f"{corruption}.npy"
        open_npy_cells(path, spec.image_size, num_images, num_blocks)  # structural check now
        for severity in severities:
            if severity not in stored_severities:
                raise LayoutError(f"{path} holds severities {stored_severities}, not {severity}")
            cells[(corruption, severity)] = _NpyCellReader(path, num_blocks, stored_severities.index(severity),
                                                           num_images, spec.image_size)
    mode = "released" if manifest is None else "generated"
    seed = None if manifest is None else manifest["seed"]
    return BenchmarkData(spec, mode, labels, root, source_root, seed, False, clean, source_indices, cells,
                         manifest=manifest, clean_error=clean_error)


def _open_jpeg(spec, root, source_root, manifest, clean, clean_error, corruptions, severities) -> BenchmarkData:
    present = jpeg_corruptions_present(root)
    selected = _complete_corruptions(spec, root, manifest, corruptions, present)
    if manifest is not None:
        source_indices = _generated_indices(manifest, root)
        for severity in severities:
            if severity not in manifest["parameters"]["severities"]:
                raise LayoutError(f"{root} was generated with severities {manifest['parameters']['severities']}, "
                                  f"not {severity}")
    if clean is not None:
        if manifest is None:
            source_indices = np.arange(clean.num_images, dtype=np.int64)
        keys = [_jpeg_key(clean.keys[i]) for i in source_indices]
        labels = clean.labels[source_indices]
    else:
        if not selected:
            raise DataNotFoundError(f"{root} holds no corruption folder and the clean source is missing: {clean_error}")
        keys = list_jpeg_cell(root / selected[0] / str(severities[0]))
        class_names = spec.wnids() or tuple(sorted({key.split("/")[0] for key in keys}))
        index_of = {wnid: i for i, wnid in enumerate(class_names)}
        try:
            labels = np.array([index_of[key.split("/")[0]] for key in keys], dtype=np.int64)
        except KeyError as exc:
            raise LayoutError(f"{root / selected[0]} has a class folder {exc} outside {spec.name}'s classes") from None
        if manifest is None:
            source_indices = np.arange(len(keys), dtype=np.int64)
    class_count = len({key.split("/")[0] for key in keys})
    if manifest is None and class_count != spec.num_classes:
        raise LayoutError(f"{root}: the images cover {class_count} classes, {spec.name} has {spec.num_classes}")
    cells = {}
    for corruption in selected:
        for severity in severities:
            cell = root / corruption / str(severity)
            check_jpeg_cell(cell, keys, spec.image_size)
            cells[(corruption, severity)] = _JpegCellReader(cell, keys, spec.image_size)
    if manifest is not None:
        for corruption, severity in cells:
            relpath = _cell_relpath(spec, corruption, severity)
            entry = manifest["files"].get(relpath)
            if entry is None or not entry_is_complete(root, relpath, entry):
                raise ManifestError(f"{root / relpath} is not recorded as complete in {root / MANIFEST_NAME}; rerun "
                                    f"`rbpp generate {spec.name} --out {root.parent}/` to finish it")
    mode = "released" if manifest is None else "generated"
    seed = None if manifest is None else manifest["seed"]
    return BenchmarkData(spec, mode, labels, root, source_root, seed, False, clean, source_indices, cells,
                         manifest=manifest, keys=keys, clean_error=clean_error)


def _jpeg_key(source_key: str) -> str:
    """ImageNet-C keeps the validation file names, always with the ``.JPEG`` suffix."""
    wnid, name = source_key.split("/", 1)
    return f"{wnid}/{os.path.splitext(name)[0]}.JPEG"
