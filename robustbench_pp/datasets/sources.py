"""Readers for clean image sources in their on-disk formats (no torchvision download code).

Each reader returns ``(images, labels)``: ``images`` a uint8 numpy array N×H×W×3 (RGB),
``labels`` an int64 numpy array N. Formats:

- Fashion-MNIST: the four idx files (``*-idx3-ubyte`` / ``*-idx1-ubyte``, optionally
  ``.gz``), as shipped by Debian's ``dataset-fashion-mnist`` in
  ``/usr/share/datasets/fashion-mnist``. Debian recompressed the files, so torchvision's MD5
  check fails; we parse the idx format directly. 28×28 grey images are zero-padded to 32×32
  and replicated to 3 channels (the usual way to feed them to CIFAR-style networks).
- CIFAR-10 / CIFAR-100: torchvision's python-pickle folder (``cifar-10-batches-py`` with
  ``data_batch_1..5`` and ``test_batch``; ``cifar-100-python`` with ``train`` and ``test``).
"""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np

DEFAULT_FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class SourceError(ValueError):
    """A clean source is missing or malformed; the message names the file."""


def fashion_mnist_root() -> Path:
    """The Fashion-MNIST folder: ``$FASHION_MNIST_ROOT`` if set, else Debian's location."""
    return Path(os.environ.get("FASHION_MNIST_ROOT", DEFAULT_FASHION_MNIST_ROOT))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one idx file (plain or gzip-compressed) into a numpy array.

    Raises:
        SourceError: when the file is missing, has a bad magic number or is truncated.
    """
    path = Path(path)
    if not path.exists():
        raise SourceError(f"idx file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as exc:
        raise SourceError(f"cannot read idx file {path}: {exc}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise SourceError(f"{path} is not an idx file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise SourceError(
            f"{path} is truncated or padded: header says shape {shape} ({expected} bytes), "
            f"file has {len(raw) - header} bytes of data"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find_idx(root: Path, stem: str) -> Path:
    for candidate in (root / f"{stem}.gz", root / stem):
        if candidate.exists():
            return candidate
    raise SourceError(
        f"Fashion-MNIST file {stem}[.gz] not found in {root}; install Debian's "
        "dataset-fashion-mnist or set FASHION_MNIST_ROOT to a folder with the idx files"
    )


def load_fashion_mnist(root: str | os.PathLike | None = None, split: str = "test", pad_to: int = 32):
    """Load Fashion-MNIST as RGB uint8 images padded to ``pad_to``×``pad_to``.

    Args:
        root: folder with the idx files (default: :func:`fashion_mnist_root`).
        split: ``"train"`` (60000 images) or ``"test"`` (10000 images).
        pad_to: output side; the 28×28 digits are centred and zero-padded.

    Returns:
        ``(images N×pad_to×pad_to×3 uint8, labels N int64)``.
    """
    root = Path(root) if root is not None else fashion_mnist_root()
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    images = read_idx(_find_idx(root, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find_idx(root, f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
    if images.ndim != 3 or len(images) != len(labels):
        raise SourceError(f"Fashion-MNIST {split} files in {root} disagree: images {images.shape}, labels {labels.shape}")
    pad = pad_to - images.shape[1]
    if pad < 0:
        raise ValueError(f"pad_to={pad_to} is smaller than the 28 px images")
    before = pad // 2
    padded = np.zeros((len(images), pad_to, pad_to, 3), dtype=np.uint8)
    padded[:, before : before + images.shape[1], before : before + images.shape[2], :] = images[..., None]
    return padded, labels


def _unpickle(path: Path) -> dict:
    if not path.exists():
        raise SourceError(f"CIFAR batch file not found: {path}")
    # The CIFAR batches are plain dicts of numpy arrays and lists; restrict unpickling to the
    # few numpy globals they need so that a crafted file cannot execute code.
    with open(path, "rb") as handle:
        return _RestrictedUnpickler(handle, encoding="latin1").load()


class _RestrictedUnpickler(pickle.Unpickler):
    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name} from a CIFAR batch file")


def load_cifar(root: str | os.PathLike, split: str = "test", num_classes: int = 10):
    """Load CIFAR-10 or CIFAR-100 from torchvision's python-pickle folder.

    Args:
        root: the folder holding ``cifar-10-batches-py`` / ``cifar-100-python``, or that
            folder itself.
        split: ``"train"`` or ``"test"``.
        num_classes: 10 or 100.

    Returns:
        ``(images N×32×32×3 uint8, labels N int64)``.
    """
    root = Path(root)
    if num_classes == 10:
        folder, label_key = "cifar-10-batches-py", "labels"
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    elif num_classes == 100:
        folder, label_key = "cifar-100-python", "fine_labels"
        files = ["train"] if split == "train" else ["test"]
    else:
        raise ValueError(f"num_classes must be 10 or 100, got {num_classes}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    base = root if root.name == folder else root / folder
    if not base.is_dir():
        raise SourceError(f"CIFAR-{num_classes} folder {base} not found (expected torchvision's python-pickle layout)")
    images, labels = [], []
    for name in files:
        entry = _unpickle(base / name)
        try:
            data = np.asarray(entry["data"], dtype=np.uint8)
            images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels.append(np.asarray(entry[label_key], dtype=np.int64))
        except (KeyError, ValueError) as exc:
            raise SourceError(f"malformed CIFAR batch {base / name}: {exc}") from exc
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels)


# --------------------------------------------------------------------------------------------
# ImageNet validation set: a folder per wnid, or the flat folder plus a ground-truth mapping.

_WNID_LENGTH = 9
_JPEG_SUFFIXES = {".jpeg", ".jpg", ".png"}


def is_wnid(name: str) -> bool:
    """True for an ImageNet synset id such as ``n01440764``."""
    return len(name) == _WNID_LENGTH and name[0] == "n" and name[1:].isdigit()


def _image_files(folder: Path) -> list[str]:
    return sorted(
        entry.name
        for entry in os.scandir(folder)
        if entry.is_file() and os.path.splitext(entry.name)[1].lower() in _JPEG_SUFFIXES
    )


def read_val_ground_truth(path: str | os.PathLike) -> dict[str, str]:
    """Read a flat-validation ground-truth file into ``{file name: wnid}``.

    Accepted formats:

    - Kaggle's ``LOC_val_solution.csv`` (``ImageId,PredictionString``; the first token of
      the prediction string is the wnid);
    - a text file of ``<file name> <wnid>`` lines;
    - the ILSVRC2012 devkit folder (``ILSVRC2012_devkit_t12``: ``data/meta.mat`` maps the
      1-based ILSVRC ids of ``data/ILSVRC2012_validation_ground_truth.txt`` to wnids).

    Raises:
        SourceError: when the file is missing or a line cannot be parsed.
    """
    path = Path(path)
    if path.is_dir():
        return _read_devkit_ground_truth(path)
    if not path.is_file():
        raise SourceError(f"ImageNet validation ground-truth file not found: {path}")
    mapping: dict[str, str] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.strip()
            if not line or line.startswith("ImageId"):
                continue
            parts = line.replace(",", " ").split()
            if len(parts) < 2 or not is_wnid(parts[1]):
                raise SourceError(f"{path}:{number}: expected '<file> <wnid>', got {line[:80]!r}")
            stem = parts[0]
            name = stem if os.path.splitext(stem)[1] else f"{stem}.JPEG"
            mapping[name] = parts[1]
    return mapping


def _read_devkit_ground_truth(devkit: Path) -> dict[str, str]:
    meta, truth = devkit / "data" / "meta.mat", devkit / "data" / "ILSVRC2012_validation_ground_truth.txt"
    for needed in (meta, truth):
        if not needed.is_file():
            raise SourceError(f"ILSVRC2012 devkit file not found: {needed}")
    import scipy.io  # imported here: only the devkit path needs it

    synsets = scipy.io.loadmat(str(meta), squeeze_me=True)["synsets"]
    id_to_wnid = {int(row["ILSVRC2012_ID"]): str(row["WNID"]) for row in synsets if int(row["num_children"]) == 0}
    mapping = {}
    with open(truth, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                mapping[f"ILSVRC2012_val_{number:08d}.JPEG"] = id_to_wnid[int(line)]
            except (KeyError, ValueError):
                raise SourceError(f"{truth}:{number}: bad ILSVRC2012 id {line.strip()!r}") from None
    return mapping


_GROUND_TRUTH_CANDIDATES = ("LOC_val_solution.csv", "val_ground_truth.txt", "ILSVRC2012_devkit_t12")


def list_imagenet_val(root: str | os.PathLike, wnids=None, ground_truth=None):
    """List the ImageNet validation images in canonical order, sorted by (wnid, file name).

    Args:
        root: a folder with one sub-folder per wnid, or the flat validation folder.
        wnids: keep only these classes (ImageNet-100/200); None keeps every wnid found.
        ground_truth: for a flat folder, a mapping file accepted by
            :func:`read_val_ground_truth`; by default one of ``LOC_val_solution.csv``,
            ``val_ground_truth.txt`` or ``ILSVRC2012_devkit_t12`` is looked up in ``root``
            and its parent.

    Returns:
        ``(paths, image_wnids)``: two lists of equal length.

    Raises:
        SourceError: missing folder, missing ground truth, or requested wnids absent.
    """
    root = Path(root)
    if not root.is_dir():
        raise SourceError(
            f"ImageNet validation folder {root} not found; pass `source_root` or set IMAGENET_VAL_ROOT "
            "(a folder per wnid, or the flat val folder with LOC_val_solution.csv / the devkit)"
        )
    class_dirs = sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and is_wnid(entry.name))
    wanted = None if wnids is None else set(wnids)
    paths: list[Path] = []
    image_wnids: list[str] = []
    if class_dirs:
        for wnid in class_dirs:
            if wanted is not None and wnid not in wanted:
                continue
            for name in _image_files(root / wnid):
                paths.append(root / wnid / name)
                image_wnids.append(wnid)
        found = set(image_wnids)
    else:
        if ground_truth is None:
            for folder in (root, root.parent):
                hits = [folder / c for c in _GROUND_TRUTH_CANDIDATES if (folder / c).exists()]
                if hits:
                    ground_truth = hits[0]
                    break
        if ground_truth is None:
            raise SourceError(
                f"{root} has no wnid sub-folders and no ground truth ({', '.join(_GROUND_TRUTH_CANDIDATES)}) "
                "next to it; pass the mapping file explicitly"
            )
        mapping = read_val_ground_truth(ground_truth)
        pairs = sorted((mapping[name], name) for name in _image_files(root) if name in mapping)
        if not pairs:
            raise SourceError(f"no image of {root} is listed in the ground truth {ground_truth}")
        for wnid, name in pairs:
            if wanted is None or wnid in wanted:
                paths.append(root / name)
                image_wnids.append(wnid)
        found = set(image_wnids)
    if wanted is not None and found != wanted:
        missing = sorted(wanted - found)
        raise SourceError(
            f"{root} lacks {len(missing)} of the {len(wanted)} requested classes (first: {', '.join(missing[:3])})"
        )
    if not paths:
        raise SourceError(f"no images found in {root}")
    return paths, image_wnids
