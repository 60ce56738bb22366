"""Readers and checks for the released corrupted layouts.

- ``npy`` (CIFAR-10-C): ``<corruption>.npy`` uint8 (K·N)×S×S×3, K severity blocks of N
  images (severity 1 first) and ``labels.npy`` (K·N). Files are memory-mapped: a cell is a
  view of one block and a batch reads only its own rows.
- ``jpeg-folders`` (ImageNet-C): ``<corruption>/<severity>/<wnid>/<file>.JPEG``.

The structural checks (headers, sizes, counts, labels) are cheap and always run; the
checksum verification (published MD5s, or a manifest's sha256s) reads every byte and runs
on request.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robustbench_pp.datasets.manifest import ManifestError
from robustbench_pp.fileio import file_digest
from robustbench_pp.datasets.specs import DatasetSpec, load_release_checksums
from robustbench_pp.names import ALL_CORRUPTIONS

LABELS_FILE = "labels.npy"


class LayoutError(ValueError):
    """Corrupted files do not have the expected layout; the message names the file."""


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


def npy_corruptions_present(folder: Path) -> list[str]:
    """Corruptions with a ``<name>.npy`` file in ``folder``, canonical order."""
    return [name for name in ALL_CORRUPTIONS if (folder / f"{name}.npy").is_file()]


def jpeg_corruptions_present(folder: Path) -> list[str]:
    """Corruptions with a folder in ``folder``, canonical order."""
    return [name for name in ALL_CORRUPTIONS if (folder / name).is_dir()]


def list_jpeg_cell(cell: Path) -> list[str]:
    """Sorted ``<wnid>/<file>`` keys of one ImageNet-C cell folder.

    Raises:
        LayoutError: the folder is missing.
    """
    if not cell.is_dir():
        raise LayoutError(f"severity folder {cell} not found (incomplete download or generation)")
    keys = []
    for wnid in sorted(entry.name for entry in os.scandir(cell) if entry.is_dir()):
        keys.extend(f"{wnid}/{entry.name}" for entry in os.scandir(cell / wnid) if entry.is_file()
                    and not entry.name.startswith("."))
    keys.sort()
    return keys


def check_jpeg_cell(cell: Path, expected_keys: list[str], image_size: int) -> None:
    """Check one cell's listing against the expected keys and the size of its first image.

    Raises:
        LayoutError: naming the cell and the first missing or unexpected file, or the first
            image when it is not image_size×image_size.
    """
    keys = list_jpeg_cell(cell)
    if keys != expected_keys:
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


def verify_release_checksums(spec: DatasetSpec, folder: Path, files: list[str] | None = None) -> list[str]:
    """Verify files of a released set against the published MD5 checksums.

    Args:
        spec: the dataset (its ``release`` key selects the checksum table).
        folder: the corrupted-data folder.
        files: file names to check (default: every published file present).

    Returns:
        The names of the files verified.

    Raises:
        ManifestError: naming the first file whose MD5 differs.
        ValueError: the dataset has no published checksums for files in this folder.
    """
    table = load_release_checksums().get(spec.release or "")
    if not table:
        raise ValueError(f"{spec.name} has no published checksums; generated sets are verified by their manifest")
    published = dict(table.get("files_md5", {}))
    published.update({name: md5 for name, md5 in table.get("archives_md5", {}).items()})
    names = files if files is not None else [name for name in published if (folder / name).is_file()]
    if not names:
        raise ValueError(
            f"none of the published files of {spec.name} ({', '.join(sorted(published)[:4])}, ...) is in {folder}; "
            "ImageNet-C publishes archive checksums only, so keep the .tar files to verify it"
        )
    for name in names:
        if name not in published:
            raise ValueError(f"{name} is not a published file of {spec.name}")
        actual = file_digest(folder / name, "md5")
        if actual != published[name]:
            raise ManifestError(f"{folder / name}: MD5 {actual} differs from the published {published[name]}")
    return names
