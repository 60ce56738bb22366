"""The ImageNet-C layout: ``<corruption>/<severity>/<wnid>/<file>.JPEG``, one folder per cell.

Corrupted images are stored at the dataset's size (224 px) and never resized when read; a
generated cell also holds ``SHA256SUMS`` (one line per image), the file its manifest entry
records. Image files keep the validation set's names with the ``.JPEG`` suffix.

A class subset (ImageNet-100-C, ImageNet-200-C: a spec with a wnid list) also reads a full
ImageNet-C folder: class folders outside the subset are ignored, and labels are the wnid's
position in the subset's sorted list, as the PushPull-Net code evaluated them.

Generation writes a cell's images into ``.partial/<corruption>-<severity>/`` (each image
under a temporary name, then renamed), so a rerun skips the images already there; the
folder is renamed into place and recorded in the manifest once every image is written.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterator, Sequence

import numpy as np

from robustbench_pp.datasets.layouts.base import (
    CellTable,
    CleanAccess,
    DataNotFoundError,
    Layout,
    LayoutError,
    Piece,
    Selection,
    SetContents,
)
from robustbench_pp.datasets.manifest import ManifestError, cached_value, verify_entry
from robustbench_pp.datasets.released import verify_release_checksums
from robustbench_pp.fileio import atomic_write, file_digest
from robustbench_pp.names import ALL_CORRUPTIONS

#: The per-cell checksum file of a generated cell (``sha256sum`` format).
SUMS_FILE = "SHA256SUMS"
#: Images of a generated cell whose sha256 every run checks against ``SHA256SUMS``.
SAMPLED_IMAGES = 16


def list_jpeg_cell(cell: Path, wnids: Sequence[str] | None = None) -> list[str]:
    """Sorted ``<wnid>/<file>`` keys of one ImageNet-C cell folder.

    Args:
        cell: the ``<corruption>/<severity>`` folder.
        wnids: keep only these class folders (a class subset read from a full folder).

    Raises:
        LayoutError: the folder is missing.
    """
    if not cell.is_dir():
        raise LayoutError(f"severity folder {cell} not found (incomplete download or generation)")
    wanted = None if wnids is None else set(wnids)
    keys = []
    for wnid in sorted(entry.name for entry in os.scandir(cell) if entry.is_dir()
                       and (wanted is None or entry.name in wanted)):
        keys.extend(f"{wnid}/{entry.name}" for entry in os.scandir(cell / wnid) if entry.is_file()
                    and not entry.name.startswith("."))
    keys.sort()
    return keys


def check_jpeg_cell(cell: Path, expected_keys: Sequence[str], image_size: int,
                    wnids: Sequence[str] | None = None) -> None:
    """Check one cell's listing (restricted to ``wnids`` when given) against the expected keys
    and the size of its first image.

    Raises:
        LayoutError: naming the cell and the first missing or unexpected file, or the first
            image when it is not image_size×image_size.
    """
    keys = list_jpeg_cell(cell, wnids)
    if keys != list(expected_keys):
        have, want = set(keys), set(expected_keys)
        missing, extra = sorted(want - have), sorted(have - want)
        detail = f"missing {len(missing)} (first {missing[0]})" if missing else ""
        if extra:
            detail += f"{', ' if detail else ''}unexpected {len(extra)} (first {extra[0]})"
        raise LayoutError(
            f"{cell} has {len(keys)} images, expected {len(expected_keys)}: {detail}. A file under another wnid "
            "means a label mismatch with the clean source"
        )
    if keys:
        check_image_size(cell / keys[0], image_size)


def check_image_size(path: Path, image_size: int) -> None:
    """Read an image header and check it is image_size×image_size (corrupted data is never resized).

    Raises:
        LayoutError: naming the file.
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            size = image.size
    except OSError as exc:
        raise LayoutError(f"cannot read image {path}: {exc}") from exc
    if size != (image_size, image_size):
        raise LayoutError(f"{path} is {size[0]}x{size[1]}, expected {image_size}x{image_size}: corrupted images "
                          "must already be at the dataset's size (the loader never resizes them)")


@dataclass
class JpegCellReader:
    """Positions -> uint8 N×3×S×S tensor decoded from one cell folder (picklable for workers)."""

    cell: Path
    keys: Sequence[str]  # "<wnid>/<file>" per position
    image_size: int

    cheap_to_read: ClassVar[bool] = False  # JPEG decoding: worth worker processes

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


def read_sums(path: Path) -> dict[str, str]:
    """``<wnid>/<file>`` -> sha256 from a cell's ``SHA256SUMS``.

    Raises:
        ManifestError: a line that is not ``<64 hex>  <key>``, or a key listed twice.
    """
    sums: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        digest, sep, key = line.partition("  ")
        if not sep or len(digest) != 64 or not key or key in sums:
            raise ManifestError(f"{path}:{number}: not a '<sha256>  <file>' line of a generated cell")
        sums[key] = digest
    return sums


def listing_sha256(cell: Path, keys: Sequence[str]) -> str:
    """sha256 of each image's name, size and mtime_ns: what every run compares cheaply."""
    digest = hashlib.sha256()
    for key in keys:
        stat = os.stat(cell / key)
        digest.update(f"{key}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def verify_images(cell: Path, sums: dict[str, str], keys: Sequence[str] | None = None) -> None:
    """Hash images of a cell (all of them by default) and compare with their ``SHA256SUMS`` lines.

    Raises:
        ManifestError: naming the first image that differs.
    """
    for key in sums if keys is None else keys:
        actual = file_digest(cell / key)
        if actual != sums[key]:
            raise ManifestError(f"{cell / key} was altered after generation: its sha256 differs from "
                                f"{cell / SUMS_FILE}")


class JpegFolderLayout(Layout):
    """ImageNet-C files: a folder of JPEGs per cell."""

    kind = "jpeg-folders"
    released_fingerprint_method = "file listing with sizes (ImageNet-C JPEG folders)"

    @property
    def jpeg_quality(self) -> int:
        return self.spec.jpeg_quality

    @staticmethod
    def image_key(source_key: str) -> str:
        """ImageNet-C keeps the validation file names, always with the ``.JPEG`` suffix."""
        wnid, name = source_key.split("/", 1)
        return f"{wnid}/{os.path.splitext(name)[0]}.JPEG"

    def image_keys(self, source, source_indices: np.ndarray) -> tuple[str, ...]:
        return tuple(self.image_key(source.keys[i]) for i in source_indices)

    @staticmethod
    def _cell_relpath(corruption: str, severity: int) -> str:
        return f"{corruption}/{severity}"

    def cell_key(self, corruption: str, severity: int) -> str:
        return f"{self._cell_relpath(corruption, severity)}/{SUMS_FILE}"

    def cell_dir(self, corruption: str, severity: int) -> Path:
        return self.root / self._cell_relpath(corruption, severity)

    def corruption_path(self, corruption: str) -> Path:
        return self.root / corruption

    def corruptions_present(self) -> list[str]:
        return [name for name in ALL_CORRUPTIONS if self.corruption_path(name).is_dir()]

    # -- opening ------------------------------------------------------------------------------

    def open_cells(self, manifest: dict | None, clean: CleanAccess, selection: Selection) -> CellTable:
        selected = self.selected_corruptions(manifest, selection.corruptions)
        generated = None
        if manifest is not None:
            generated = self.generated_indices(manifest)
            stored = manifest["parameters"]["severities"]
            for severity in selection.severities:
                if severity not in stored:
                    raise LayoutError(f"{self.root} was generated with severities {stored}, not {severity}")
        keys, labels, source_indices = self._positions(clean, selected, selection.severities, generated)
        class_count = len({key.split("/")[0] for key in keys})
        if manifest is None and class_count != self.spec.num_classes:
            raise LayoutError(f"{self.root}: the images cover {class_count} classes, {self.spec.name} has "
                              f"{self.spec.num_classes}")
        readers = {}
        for corruption in selected:
            for severity in selection.severities:
                cell = self.cell_dir(corruption, severity)
                check_jpeg_cell(cell, keys, self.spec.image_size, self.spec.wnids())
                readers[(corruption, severity)] = JpegCellReader(cell, keys, self.spec.image_size)
        if manifest is not None:
            self.check_opened_files(manifest, readers)
        return CellTable(labels, source_indices, readers)

    def _positions(self, clean: CleanAccess, selected, severities, source_indices) -> tuple[list, np.ndarray, np.ndarray]:
        """Image keys, labels and source indices: from the clean source, else from a cell's listing."""
        source = clean.source
        if source is not None:
            if source_indices is None:
                source_indices = np.arange(source.num_images, dtype=np.int64)
            return [self.image_key(source.keys[i]) for i in source_indices], source.labels[source_indices], source_indices
        if not selected:
            raise DataNotFoundError(f"{self.root} holds no corruption folder and the clean source is missing: "
                                    f"{clean.error}")
        # A class subset keeps only its own class folders (a full ImageNet-C folder holds all
        # 1000) and labels each image by its wnid's position in the subset's sorted list.
        keys = list_jpeg_cell(self.cell_dir(selected[0], severities[0]), self.spec.wnids())
        class_names = self.spec.wnids() or tuple(sorted({key.split("/")[0] for key in keys}))
        index_of = {wnid: i for i, wnid in enumerate(class_names)}
        labels = np.array([index_of[key.split("/")[0]] for key in keys], dtype=np.int64)
        if source_indices is None:
            source_indices = np.arange(len(keys), dtype=np.int64)
        return keys, labels, source_indices

    def check_recorded(self, manifest: dict, relpath: str) -> None:
        """The cell's ``SHA256SUMS`` as any recorded file; then its images: names as listed,
        sizes and mtimes as recorded (else every image is hashed, once per listing), and a
        sample of them hashed."""
        super().check_recorded(manifest, relpath)
        cell = (self.root / relpath).parent
        sums = self._listed_sums(cell)
        keys = sorted(sums)
        stamp = listing_sha256(cell, keys)
        if stamp == manifest["files"][relpath].get("listing_sha256"):
            step = max(1, len(keys) // SAMPLED_IMAGES)
            verify_images(cell, sums, keys[::step][:SAMPLED_IMAGES])
        else:  # images rewritten, or the folder copied without its times
            cached_value(f"{cell.resolve()}#images", {"listing": stamp}, lambda: _verified(cell, sums))

    # -- identity and verification --------------------------------------------------------------

    def released_hashes(self, table: CellTable) -> list[tuple[str, str]]:
        # Hashing ~3.75 M files is impractical per run; the listing with sizes identifies the
        # data (see released_fingerprint_method).
        out = []
        for corruption, severity in sorted(table.readers):
            reader = table.readers[(corruption, severity)]
            listing = hashlib.sha256()
            for key in reader.keys:
                listing.update(f"{key}:{os.path.getsize(reader.cell / key)}\n".encode())
            out.append((self._cell_relpath(corruption, severity), listing.hexdigest()))
        return out

    def verify_recorded(self, manifest: dict, relpath: str) -> None:
        """The ``SHA256SUMS`` file against the manifest, every image against its line."""
        verify_entry(self.root, relpath, manifest["files"][relpath])
        cell = (self.root / relpath).parent
        verify_images(cell, self._listed_sums(cell))

    def _listed_sums(self, cell: Path) -> dict[str, str]:
        """A generated cell's ``SHA256SUMS``, once its images are checked to be exactly those listed."""
        sums = read_sums(cell / SUMS_FILE)
        if list_jpeg_cell(cell) != sorted(sums):
            raise ManifestError(f"{cell}: its images are not those listed in its {SUMS_FILE} (files added, removed "
                                f"or renamed); {self.regenerate_hint()} after deleting it")
        return sums

    def verify_release(self, table: CellTable) -> list[str]:
        return verify_release_checksums(self.spec, self.root, None)

    # -- generation -----------------------------------------------------------------------------

    def pending(self, manifest: dict, corruption: str, contents: SetContents) -> tuple[list[Piece], int]:
        pieces, written = [], 0
        for block, severity in enumerate(contents.severities):
            if self.cell_key(corruption, severity) in manifest["files"]:
                written += 1
            else:
                pieces.append(Piece(corruption, severity, block))
        return pieces, written

    def todo_positions(self, piece: Piece, contents: SetContents) -> np.ndarray:
        folder = self._partial(piece)
        return np.array([i for i, key in enumerate(contents.keys) if not (folder / key).is_file()], dtype=np.int64)

    def write_piece(self, piece: Piece, contents: SetContents, batches: Iterator[tuple[np.ndarray, np.ndarray]]):
        from PIL import Image

        folder = self._partial(piece)
        for positions, images in batches:
            for position, image in zip(positions, images):
                target = folder / contents.keys[position]
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.tmp")
                Image.fromarray(image).save(tmp, format="JPEG", quality=self.jpeg_quality, optimize=True)
                os.replace(tmp, target)

    def finish_piece(self, manifest: dict, piece: Piece, contents: SetContents) -> None:
        partial = self._partial(piece)
        lines = [f"{file_digest(partial / key)}  {key}\n" for key in contents.keys]
        atomic_write(partial / SUMS_FILE, "".join(lines))
        target = self.cell_dir(piece.corruption, piece.severity)
        if target.exists():  # renamed before an interruption, never recorded: not trusted
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial, target)
        details = {"corruption": piece.corruption, "severity": piece.severity, "count": len(contents.keys),
                   "listing_sha256": listing_sha256(target, sorted(contents.keys))}
        self.finalised(manifest, self.cell_key(piece.corruption, piece.severity), piece.corruption,
                       contents.severities, details)

    def _partial(self, piece: Piece) -> Path:
        return self.partial_root / f"{piece.corruption}-{piece.severity}"


def _verified(cell: Path, sums: dict[str, str]) -> str:
    verify_images(cell, sums)
    return "verified"
