"""One corrupted dataset ready to evaluate: released files, a generated set, or on the fly.

:func:`open_corrupted` checks the structure (always) and returns a :class:`CorruptedDataset`
whose :meth:`CorruptedDataset.batches` yields ``(uint8 B×3×H×W, int64 B)`` tensors for any
cell. The files' layout (:mod:`robustbench_pp.datasets.layouts`) opens and checks them and
makes their cell readers; :mod:`robustbench_pp.datasets.loader` turns a reader into batches
(memory-mapped blocks, per-batch decoding: memory stays bounded by a few batches).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from robustbench_pp.datasets.clean import clean_geometry, open_clean_source
from robustbench_pp.datasets.layouts import (
    CellTable,
    CleanAccess,
    DataNotFoundError,
    Layout,
    Selection,
    layout_for,
)
from robustbench_pp.datasets.loader import CleanReader, LoadOptions, OnTheFlyReader, load_batches, to_nchw
from robustbench_pp.datasets.manifest import MANIFEST_NAME, ManifestError, read_manifest
from robustbench_pp.datasets.sources import SourceError
from robustbench_pp.datasets.specs import DatasetSpec, get_dataset
from robustbench_pp.names import ALL_CORRUPTIONS, CLEAN, CLEAN_SEVERITY, DEFAULT_PROTOCOL

MODES = ("released", "generated", "on-the-fly")


@dataclass(frozen=True)
class DataOrigin:
    """Where the corrupted images come from."""

    mode: str  # one of MODES
    seed: int | None  # corruption seed; None for released files
    jpeg_roundtrip: bool = False  # on the fly: the released sets' JPEG step simulated
    layout: Layout | None = None  # the files (None on the fly)
    manifest: dict | None = None  # a generated set's manifest


@dataclass
class CorruptedDataset:
    """A dataset opened for evaluation. Build it with :func:`open_corrupted`."""

    spec: DatasetSpec
    origin: DataOrigin
    clean: CleanAccess
    table: CellTable
    protocol: str = DEFAULT_PROTOCOL  # how the clean cell is framed (see datasets.clean.clean_geometry)
    _fingerprint: str | None = field(default=None, repr=False)

    @property
    def mode(self) -> str:
        return self.origin.mode

    @property
    def seed(self) -> int | None:
        return self.origin.seed

    @property
    def labels(self) -> np.ndarray:
        """int64, one per image of a cell."""
        return self.table.labels

    @property
    def source_indices(self) -> np.ndarray:
        """Position in a cell -> index in the full clean test set."""
        return self.table.source_indices

    @property
    def cells(self) -> dict[tuple[str, int], Callable]:
        """The corrupted cells (excluding clean): (corruption, severity) -> reader."""
        return self.table.readers

    @property
    def num_images(self) -> int:
        return len(self.table.labels)

    def available_cells(self) -> list[tuple[str, int]]:
        """The cells that can be read: ``("clean", 0)`` first when the clean source exists."""
        clean = [(CLEAN, CLEAN_SEVERITY)] if self.clean.source is not None else []
        return clean + list(self.cells)

    def _reader(self, corruption: str, severity: int) -> Callable:
        if (corruption, severity) == (CLEAN, CLEAN_SEVERITY):
            if self.clean.source is None:
                raise DataNotFoundError(f"the clean cell of {self.spec.name} needs its clean source: {self.clean.error}")
            return CleanReader(self.clean.source.for_protocol(self.protocol), self.source_indices)
        try:
            return self.cells[(corruption, severity)]
        except KeyError:
            raise ValueError(
                f"cell ({corruption!r}, {severity}) is not available in {self.spec.name} ({self.mode}); "
                f"available: {len(self.cells)} corrupted cells, e.g. {list(self.cells)[:3]}"
            ) from None

    def _positions(self, indices) -> np.ndarray:
        if indices is None:
            return np.arange(self.num_images, dtype=np.int64)
        positions = np.asarray(indices, dtype=np.int64).reshape(-1)
        if positions.size and (positions.min() < 0 or positions.max() >= self.num_images):
            raise ValueError(f"indices must lie in [0, {self.num_images}), got {positions.min()}..{positions.max()}")
        return positions

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
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be positive, got {batch_size}")
        reader = self._reader(corruption, severity)
        positions = self._positions(indices)
        chunks = [positions[i : i + batch_size] for i in range(0, len(positions), batch_size)]
        in_memory = self.clean.source is None or self.clean.source.array is not None
        options = LoadOptions(device, pin_memory, num_workers, corrupt_on, clean_in_memory=in_memory)
        yield from load_batches(reader, self.labels, chunks, options)

    def fingerprint(self) -> str:
        """sha256 hex identifying exactly the data evaluated (see :meth:`describe` for the method)."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            digest.update(f"{self.spec.name}|{self.mode}|{self.num_images}\n".encode())
            digest.update(np.ascontiguousarray(self.source_indices).tobytes())
            if self.clean.source is not None:
                digest.update(f"clean:{self.clean.source.for_protocol(self.protocol).fingerprint()}\n".encode())
            if self.origin.layout is None:
                from robustbench_pp._version import __version__

                from robustbench_pp.corruptions import ENGINE_VERSION

                payload = {"spec": self.spec.to_dict(), "seed": self.seed, "jpeg_roundtrip": self.origin.jpeg_roundtrip,
                           "package_version": __version__, "corruption_engine": ENGINE_VERSION, "cells": sorted(self.cells)}
                digest.update(json.dumps(payload, sort_keys=True).encode())
            else:
                for relpath, sha in self.origin.layout.file_hashes(self.origin.manifest, self.table):
                    digest.update(f"{relpath}:{sha}\n".encode())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def describe(self) -> dict:
        """json-able provenance of the data (goes into every result record)."""
        layout, manifest = self.origin.layout, self.origin.manifest
        if layout is None:
            method = "spec + seed + clean-source fingerprint + jpeg flag + package and corruption-engine versions"
        elif manifest is not None:
            method = "manifest sha256 of each file"
        else:
            method = layout.released_fingerprint_method
        out = {
            "dataset": self.spec.name,
            "mode": self.mode,
            "preset": self.spec.preset,
            "seed": self.seed,
            "jpeg_roundtrip": self.origin.jpeg_roundtrip,
            "data_root": str(layout.root) if layout is not None else None,
            "source_root": str(self.clean.root),
            "image_size": self.spec.image_size,
            "geometry": self.spec.geometry,
            "protocol": self.protocol,
            "clean_geometry": clean_geometry(self.spec, self.protocol),
            "layout": self.spec.layout,
            "num_images": self.num_images,
            "fingerprint_method": method,
        }
        if manifest is not None:
            out["generator_version"] = manifest.get("package_version")
            out["limit"] = manifest["parameters"].get("limit")
        return out

    def verify(self) -> list[str]:
        """Read every byte of the selected files and check them against the manifest's
        sha256 (generated sets; a JPEG cell's images against its ``SHA256SUMS``) or the
        published MD5s (released sets). For a generated set whose clean source is here, a
        few images of each cell are also corrupted again with the manifest's seed and preset
        and compared with the stored ones, which ties the recorded parameters to the bytes.

        Returns:
            The relative paths verified (none on the fly).

        Raises:
            ManifestError: naming the first file that differs, or the first cell that the
                recorded parameters do not reproduce.
        """
        if self.origin.layout is None:
            return []
        checked = self.origin.layout.verify(self.origin.manifest, self.table)
        if self.origin.manifest is not None and self.clean.source is not None:
            self._check_reproduced()
        return checked

    def _check_reproduced(self) -> None:
        layout = self.origin.layout
        lossy = layout.jpeg_quality is not None
        # Mean absolute pixel difference allowed: rounding of another device's kernels (npy),
        # plus the JPEG encoder, whose round trip is simulated (jpeg-folders).
        tolerance = 2.0 if lossy else 0.5
        positions = np.unique(np.array([0, self.num_images // 2, self.num_images - 1], dtype=np.int64))
        for (corruption, severity), reader in self.cells.items():
            again = OnTheFlyReader(self.clean.source, self.source_indices, corruption, severity, self.seed, lossy,
                                   self.spec.jpeg_quality)
            gap = float((to_nchw(reader(positions)).float() - to_nchw(again(positions)).float()).abs().mean())
            if gap > tolerance:
                raise ManifestError(
                    f"{layout.root}: the stored {corruption} severity {severity} images are not what seed "
                    f"{self.seed} and preset {self.spec.preset} produce (mean pixel difference {gap:.1f}); the "
                    f"manifest's parameters do not describe these files"
                )


def open_corrupted(name, *, data_root=None, source_root=None, on_the_fly: bool = False, seed: int = 0,
                   jpeg_roundtrip: bool = False, corruptions=None, severities=None,
                   protocol: str = DEFAULT_PROTOCOL) -> CorruptedDataset:
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
        severities: restrict to these (default 1..5; a generated set's own by default).
        protocol: "imagenet-c" (default: the clean cell framed as the corrupted images) or
            "pushpull-net" (ImageNet's clean cell Resize(224) → CenterCrop(224)).

    Returns:
        A :class:`CorruptedDataset`.

    Raises:
        DataNotFoundError: the folder or clean source is missing (the message says how to get it).
        LayoutError, ManifestError: files with the wrong structure, naming the file.
        ValueError: unknown dataset, corruption or severity.

    Example:
        >>> data = open_corrupted("fashion-mnist-c", on_the_fly=True, corruptions=["fog"], severities=[3])
        >>> images, labels = next(data.batches("fog", 3, batch_size=256))
    """
    spec = get_dataset(name)
    clean_geometry(spec, protocol)  # validates the protocol
    selection = Selection.checked(corruptions, severities)
    clean = _find_clean(spec, source_root)
    if on_the_fly:
        return _on_the_fly(spec, clean, selection, seed, jpeg_roundtrip, protocol)
    if jpeg_roundtrip:
        raise ValueError("`jpeg_roundtrip` simulates the released JPEG files on the fly; it needs on_the_fly=True")
    layout = layout_for(spec, spec.resolve_data_root(data_root))
    if not layout.root.is_dir():
        raise DataNotFoundError(_missing_data_message(spec, layout.root, clean))
    manifest = _read_own_manifest(spec, layout.root)
    if manifest is not None and severities is None:  # default: what was generated
        selection = Selection(selection.corruptions, tuple(manifest["parameters"]["severities"]))
    if manifest is None:
        origin = DataOrigin("released", seed=None, layout=layout)
    else:
        origin = DataOrigin("generated", seed=manifest["seed"], layout=layout, manifest=manifest)
    return CorruptedDataset(spec, origin, clean, layout.open_cells(manifest, clean, selection), protocol)


def _find_clean(spec: DatasetSpec, source_root) -> CleanAccess:
    """The clean source if it is there; its absence only costs the clean cell and the label check."""
    root = spec.resolve_source_root(source_root)
    try:
        return CleanAccess(root, open_clean_source(spec, root))
    except SourceError as exc:
        return CleanAccess(root, error=str(exc))


def _on_the_fly(spec: DatasetSpec, clean: CleanAccess, selection: Selection, seed: int,
                jpeg_roundtrip: bool, protocol: str) -> CorruptedDataset:
    source = clean.source
    if source is None:
        raise DataNotFoundError(f"on-the-fly corruption of {spec.name} needs its clean source: {clean.error}")
    indices = np.arange(source.num_images, dtype=np.int64)
    readers = {(corruption, severity): OnTheFlyReader(source, indices, corruption, severity, seed, jpeg_roundtrip,
                                                      spec.jpeg_quality)
               for corruption in selection.corruptions or ALL_CORRUPTIONS for severity in selection.severities}
    origin = DataOrigin("on-the-fly", seed, jpeg_roundtrip)
    return CorruptedDataset(spec, origin, clean, CellTable(source.labels, indices, readers), protocol)


def _read_own_manifest(spec: DatasetSpec, root: Path) -> dict | None:
    manifest = read_manifest(root)
    if manifest is not None and manifest.get("dataset") != spec.name:
        raise ManifestError(f"{root / MANIFEST_NAME} describes {manifest.get('dataset')!r}, not {spec.name!r}")
    return manifest


def _missing_data_message(spec: DatasetSpec, root: Path, clean: CleanAccess) -> str:
    # The remedies are commands: their options are written as backticked parameters, which the
    # command line shows as its flags.
    out = root.parent
    if clean.source is not None:
        return (f'corrupted data folder {root} not found for {spec.name}: generate it with '
                f'"rbpp generate {spec.name} `out` {out}/", or pass `on_the_fly`')
    release = f" download the public release into {root}, or" if spec.release else ""
    return (f"corrupted data folder {root} not found for {spec.name}, and its clean source {clean.root} is "
            f"missing too:{release} get the clean source (set {spec.source_env} or pass `source_root`) and run "
            f'"rbpp generate {spec.name} `out` {out}/" with it')
