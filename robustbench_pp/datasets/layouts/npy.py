"""The CIFAR-10-C layout: ``<corruption>.npy`` of K severity blocks plus ``labels.npy``.

``<corruption>.npy`` is uint8 (K·N)×S×S×3, K blocks of N images (lowest severity first);
``labels.npy`` holds the K·N labels. Files are memory-mapped: a cell is a view of one block
and a batch reads only its own rows.

Generation writes a corruption into ``.partial/<corruption>.npy`` (a memory-mapped file of
every block) with ``.partial/<corruption>.progress.json`` listing the finished blocks; the file
is renamed into place and recorded in the manifest once every block is written, so a kill
loses at most the block being written and a rerun resumes at the next one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Iterator

import numpy as np

from robustbench_pp.datasets.layouts.base import (
    CellTable,
    CleanAccess,
    Layout,
    LayoutError,
    Piece,
    Selection,
    SetContents,
)
from robustbench_pp.datasets.manifest import cached_sha256, record_file
from robustbench_pp.datasets.released import verify_release_checksums
from robustbench_pp.fileio import atomic_write, preallocate
from robustbench_pp.names import ALL_CORRUPTIONS, SEVERITIES

LABELS_FILE = "labels.npy"


@dataclass(frozen=True)
class NpyHeader:
    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int  # bytes before the array data


def read_npy_header(path: Path) -> NpyHeader:
    """Parse an ``.npy`` header and check that the file holds all the data it announces.

    Raises:
        LayoutError: missing file, not an npy file, Fortran order, or truncated data.
    """
    if not path.is_file():
        raise LayoutError(f"{path} not found")
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = reader(handle)
            offset = handle.tell()
    except (ValueError, OSError) as exc:
        raise LayoutError(f"{path} is not a valid .npy file ({exc})") from exc
    if fortran:
        raise LayoutError(f"{path} is stored in Fortran order; expected C order as released")
    expected = offset + int(np.prod(shape)) * dtype.itemsize
    actual = path.stat().st_size
    if actual != expected:
        raise LayoutError(
            f"{path} is truncated or padded: its header announces shape {shape} ({expected} bytes), "
            f"the file has {actual} bytes; re-download it or rerun `rbpp generate` to rebuild it"
        )
    return NpyHeader(tuple(shape), dtype, offset)


def open_npy_cells(path: Path, image_size: int, num_images: int, num_blocks: int) -> np.memmap:
    """Memory-map a corruption file after checking its shape: (num_blocks·N)×S×S×3 uint8.

    Raises:
        LayoutError: naming the file, for a wrong dtype, image size or image count.
    """
    header = read_npy_header(path)
    expected = (num_blocks * num_images, image_size, image_size, 3)
    if header.dtype != np.uint8:
        raise LayoutError(f"{path} holds {header.dtype}, expected uint8 images")
    if header.shape[1:] != expected[1:]:
        raise LayoutError(
            f"{path} holds images of shape {header.shape[1:]}, expected {expected[1:]} (wrong image size "
            "for this dataset?)"
        )
    if header.shape[0] != expected[0]:
        raise LayoutError(
            f"{path} holds {header.shape[0]} images, expected {num_blocks} severity blocks of {num_images}"
        )
    return np.memmap(path, dtype=np.uint8, mode="r", offset=header.offset, shape=expected)


def read_npy_labels(path: Path, num_images: int, num_blocks: int, reference: np.ndarray | None) -> np.ndarray:
    """Read ``labels.npy`` and check its blocks against each other and the clean labels.

    Returns:
        int64 labels of one block (N).

    Raises:
        LayoutError: naming the file and the first disagreeing image.
    """
    header = read_npy_header(path)
    if header.shape != (num_blocks * num_images,):
        raise LayoutError(f"{path} has shape {header.shape}, expected ({num_blocks * num_images},)")
    labels = np.load(path, mmap_mode="r").astype(np.int64).reshape(num_blocks, num_images)
    for block in range(1, num_blocks):
        bad = np.flatnonzero(labels[block] != labels[0])
        if bad.size:
            raise LayoutError(f"{path}: label block {block + 1} differs from block 1 at image {bad[0]}")
    if reference is not None:
        bad = np.flatnonzero(labels[0] != reference)
        if bad.size:
            raise LayoutError(
                f"label mismatch: {path} disagrees with the clean test labels at {bad.size} images "
                f"(first: image {bad[0]}, {labels[0][bad[0]]} vs {reference[bad[0]]}); the corrupted set "
                "was not made from this clean source or is in another order"
            )
    return np.ascontiguousarray(labels[0])


@dataclass
class NpyCellReader:
    """Positions -> uint8 N×S×S×3 images of one severity block (picklable for loader workers)."""

    path: Path
    num_blocks: int
    block: int
    num_images: int
    image_size: int
    _cells: np.memmap | None = field(default=None, repr=False)

    cheap_to_read: ClassVar[bool] = True  # memory-mapped: faster than starting worker processes

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


class NpyLayout(Layout):
    """CIFAR-10-C files: one ``.npy`` per corruption holding every severity block."""

    kind = "npy"
    released_fingerprint_method = "sha256 of each .npy file"

    def cell_key(self, corruption: str, severity: int) -> str:
        return f"{corruption}.npy"

    def corruption_path(self, corruption: str) -> Path:
        return self.root / f"{corruption}.npy"

    def corruptions_present(self) -> list[str]:
        return [name for name in ALL_CORRUPTIONS if self.corruption_path(name).is_file()]

    # -- opening ------------------------------------------------------------------------------

    def open_cells(self, manifest: dict | None, clean: CleanAccess, selection: Selection) -> CellTable:
        source_indices, stored = self._stored_images(manifest, clean.source)
        source = clean.source
        reference = source.labels[source_indices] if source is not None else None
        if source is not None and manifest is None and source.num_images != self.spec.num_images:
            raise LayoutError(f"clean source {source.root} has {source.num_images} test images, {self.spec.name} "
                              f"expects {self.spec.num_images}")
        labels = read_npy_labels(self.root / LABELS_FILE, len(source_indices), len(stored), reference)
        readers = {}
        for corruption in self.selected_corruptions(manifest, selection.corruptions):
            readers.update(self._corruption_readers(corruption, stored, selection.severities, len(source_indices)))
        if manifest is not None:
            self.check_opened_files(manifest, readers)
        return CellTable(labels, source_indices, readers)

    def _stored_images(self, manifest: dict | None, source) -> tuple[np.ndarray, tuple[int, ...]]:
        """Source indices and stored severities; a generated set's files must match its manifest."""
        if manifest is None:
            count = self.spec.num_images if source is None else source.num_images
            return np.arange(count, dtype=np.int64), SEVERITIES
        return self.generated_indices(manifest), tuple(manifest["parameters"]["severities"])

    def _corruption_readers(self, corruption: str, stored, severities, num_images: int) -> dict:
        path = self.corruption_path(corruption)
        open_npy_cells(path, self.spec.image_size, num_images, len(stored))  # structural check now
        readers = {}
        for severity in severities:
            if severity not in stored:
                raise LayoutError(f"{path} holds severities {stored}, not {severity}")
            readers[(corruption, severity)] = NpyCellReader(path, len(stored), stored.index(severity), num_images,
                                                            self.spec.image_size)
        return readers

    # -- identity and verification --------------------------------------------------------------

    def _file_names(self, cells) -> list[str]:
        return sorted({self.cell_key(c, s) for c, s in cells} | {LABELS_FILE})

    def fingerprint_keys(self, cells) -> set[str]:
        return set(self._file_names(cells))

    def released_hashes(self, table: CellTable) -> list[tuple[str, str]]:
        return [(name, cached_sha256(self.root / name)) for name in self._file_names(table.readers)]

    def verify_release(self, table: CellTable) -> list[str]:
        return verify_release_checksums(self.spec, self.root, self._file_names(table.readers))

    # -- generation -----------------------------------------------------------------------------

    def begin(self, manifest: dict, contents: SetContents, labels: np.ndarray) -> None:
        """Write ``labels.npy`` (the labels of every block) unless the manifest has it."""
        if LABELS_FILE in manifest["files"]:
            return
        blocks = np.tile(labels, len(contents.severities))
        tmp = self.partial_root / LABELS_FILE
        np.save(tmp, blocks)
        os.replace(tmp, self.root / LABELS_FILE)
        record_file(self.root, manifest, LABELS_FILE, count=int(len(blocks)))

    def pending(self, manifest: dict, corruption: str, contents: SetContents) -> tuple[list[Piece], int]:
        done = self._progress(corruption, contents)
        if set(done) == set(contents.severities):  # every block written, but the run ended before the move
            self._finalise(manifest, corruption, contents)
            return [], len(done)
        pieces = [Piece(corruption, s, b) for b, s in enumerate(contents.severities) if s not in done]
        return pieces, len(done)

    def write_piece(self, piece: Piece, contents: SetContents, batches: Iterator[tuple[np.ndarray, np.ndarray]]):
        cells = np.lib.format.open_memmap(self._partial(piece.corruption), mode="r+")
        offset = piece.block * contents.num_images
        for positions, images in batches:  # consecutive positions
            cells[offset + positions[0] : offset + positions[-1] + 1] = images
        cells.flush()
        del cells

    def finish_piece(self, manifest: dict, piece: Piece, contents: SetContents) -> None:
        progress = self._progress_file(piece.corruption)
        done = sorted(set(json.loads(progress.read_text())["done"] if progress.is_file() else []) | {piece.severity})
        atomic_write(progress, json.dumps({"done": done}))
        if set(done) == set(contents.severities):
            self._finalise(manifest, piece.corruption, contents)

    def _partial(self, corruption: str) -> Path:
        return self.partial_root / f"{corruption}.npy"

    def _progress_file(self, corruption: str) -> Path:
        return self.partial_root / f"{corruption}.progress.json"

    def _progress(self, corruption: str, contents: SetContents) -> list[int]:
        """Severities already written into the partial file (creating the file when absent)."""
        partial, progress = self._partial(corruption), self._progress_file(corruption)
        shape = (len(contents.severities) * contents.num_images, self.spec.image_size, self.spec.image_size, 3)
        done: list[int] = []
        if partial.is_file() and self._partial_fits(partial, shape):
            if progress.is_file():
                done = list(json.loads(progress.read_text())["done"])
        else:
            progress.unlink(missing_ok=True)
            cells = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=shape)
            del cells
        # Reserve the disk now: pages of a memory map that a full disk cannot back kill the
        # writer with SIGBUS, where a failed reservation is an OSError naming the file.
        fd = os.open(partial, os.O_RDWR)
        try:
            preallocate(fd, os.fstat(fd).st_size, partial)
        finally:
            os.close(fd)
        return done

    @staticmethod
    def _partial_fits(partial: Path, shape: tuple[int, ...]) -> bool:
        try:
            existing = np.lib.format.open_memmap(partial, mode="r")
            ok = existing.shape == shape and existing.dtype == np.uint8
            del existing
        except (ValueError, OSError):
            ok = False
        return ok

    def _finalise(self, manifest: dict, corruption: str, contents: SetContents) -> None:
        partial = self._partial(corruption)
        with open(partial, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, self.corruption_path(corruption))
        self._progress_file(corruption).unlink(missing_ok=True)
        details = {"corruption": corruption, "severities": list(contents.severities),
                   "count": len(contents.severities) * contents.num_images}
        self.finalised(manifest, self.cell_key(corruption, contents.severities[0]), corruption, contents.severities,
                       details)
