"""Clean test sets at a spec's geometry: the images every corrupted cell is made from.

:func:`open_clean_source` returns a :class:`CleanSource` whose ``images(indices)`` gives
uint8 N×H×W×3 arrays already at the spec's ``image_size``. The one geometry function of a
spec is used for the clean cell, for on-the-fly corruption and for generation, so clean and
corrupted images of the same source image are always framed identically, under the default
protocol. The ``pushpull-net`` protocol frames the clean cell of ImageNet sets as the
PushPull-Net code evaluated it, Resize(224) → CenterCrop(224) (:func:`clean_geometry`,
:meth:`CleanSource.for_protocol`); the corrupted images keep ImageNet-C's Resize(256).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robustbench_pp.datasets.sources import (
    SourceError,
    list_imagenet_val,
    load_cifar,
    load_fashion_mnist,
)
from robustbench_pp.datasets.specs import DatasetSpec
from robustbench_pp.names import DEFAULT_PROTOCOL, PROTOCOLS

IMAGENET_RESIZE = 256  # shorter side before the centre crop, as ImageNet-C was made
# Shorter side of each "resize<S>-crop<C>" geometry.
_RESIZE_GEOMETRIES = {"resize256-crop224": IMAGENET_RESIZE, "resize224-crop224": 224}


def clean_geometry(spec: DatasetSpec, protocol: str = DEFAULT_PROTOCOL) -> str:
    """The geometry of a spec's clean cell under an evaluation protocol.

    ``imagenet-c`` keeps the spec's geometry (clean and corrupted framed alike);
    ``pushpull-net`` frames ImageNet's clean images Resize(224) → CenterCrop(224), as the
    PushPull-Net code did (its published clean errors E, and so R_net, were measured that way).
    Other geometries are the same under both protocols.

    Raises:
        ValueError: an unknown protocol (naming `protocol`).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"`protocol` must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if protocol == "pushpull-net" and spec.geometry == "resize256-crop224":
        return "resize224-crop224"
    return spec.geometry


def resize_shorter_center_crop(image, resize: int = IMAGENET_RESIZE, crop: int = 224) -> np.ndarray:
    """torchvision's ``Resize(resize)`` (bilinear, PIL) then ``CenterCrop(crop)``, on a PIL image.

    Returns:
        uint8 array crop×crop×3.
    """
    from PIL import Image

    image = image.convert("RGB")
    width, height = image.size
    if width <= height:
        new_size = (resize, int(resize * height / width))
    else:
        new_size = (int(resize * width / height), resize)
    if new_size != (width, height):
        image = image.resize(new_size, Image.BILINEAR)
    width, height = image.size
    top, left = int(round((height - crop) / 2.0)), int(round((width - crop) / 2.0))
    return np.asarray(image.crop((left, top, left + crop, top + crop)), dtype=np.uint8)


def upsample_bicubic(images: np.ndarray, size: int) -> np.ndarray:
    """Upsample N×h×w×3 uint8 images to size×size with PIL's bicubic filter (PushPull-Net recipe)."""
    from PIL import Image

    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        out[i] = np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC))
    return out


def decode_source_file(path: Path, spec: DatasetSpec, geometry: str | None = None) -> np.ndarray:
    """Decode one clean source file and bring it to a geometry (default: the spec's).

    Raises:
        SourceError: the file cannot be decoded.
    """
    from PIL import Image

    geometry = geometry or spec.geometry
    try:
        with Image.open(path) as image:
            if geometry in _RESIZE_GEOMETRIES:
                return resize_shorter_center_crop(image, _RESIZE_GEOMETRIES[geometry], spec.image_size)
            array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except OSError as exc:
        raise SourceError(f"cannot decode clean source image {path}: {exc}") from exc
    if array.shape[:2] != (spec.image_size, spec.image_size):
        raise SourceError(f"{path} is {array.shape[1]}x{array.shape[0]}, expected {spec.image_size} px")
    return array


@dataclass
class CleanSource:
    """A clean test set, lazily brought to the spec's geometry batch by batch.

    Exactly one of ``array`` (small in-memory sets: Fashion-MNIST, CIFAR) and ``paths``
    (ImageNet-style files) is set.
    """

    spec: DatasetSpec
    root: Path
    labels: np.ndarray  # int64, one per image, in canonical order
    array: np.ndarray | None = None  # N×h×w×3 uint8 before geometry
    paths: list[Path] | None = None
    keys: list[str] | None = None  # "<wnid>/<file name>" per image (file sources)
    class_names: tuple[str, ...] | None = None  # wnids in class-index order (file sources)
    geometry: str | None = None  # None: the spec's; see clean_geometry
    _fingerprint: str | None = field(default=None, repr=False)

    @property
    def num_images(self) -> int:
        return len(self.labels)

    def for_protocol(self, protocol: str) -> CleanSource:
        """This source as the clean cell of ``protocol`` sees it (itself when the framing is the same)."""
        geometry = clean_geometry(self.spec, protocol)
        if geometry == (self.geometry or self.spec.geometry):
            return self
        return dataclasses.replace(self, geometry=geometry, _fingerprint=None)

    def images(self, indices) -> np.ndarray:
        """The images at ``indices`` (canonical order), uint8 N×S×S×3 at the spec's geometry."""
        indices = np.asarray(indices, dtype=np.int64)
        if self.array is not None:
            raw = self.array[indices]
            if self.spec.geometry == "bicubic-224" or raw.shape[1] != self.spec.image_size:
                return upsample_bicubic(raw, self.spec.image_size)
            return raw
        out = np.empty((len(indices), self.spec.image_size, self.spec.image_size, 3), dtype=np.uint8)
        for slot, index in enumerate(indices):
            out[slot] = decode_source_file(self.paths[index], self.spec, self.geometry)
        return out

    def fingerprint(self) -> str:
        """sha256 of the clean data: the raw pixels and labels for in-memory sets, the file
        listing (relative path and size) for file sets, where hashing every byte of 50000
        JPEGs on each evaluation would cost minutes."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            digest.update(f"{self.spec.source}|{self.geometry or self.spec.geometry}|{self.spec.image_size}|".encode())
            if self.array is not None:
                digest.update(np.ascontiguousarray(self.array).tobytes())
            else:
                for key, path in zip(self.keys, self.paths):
                    digest.update(f"{key}:{os.path.getsize(path)}\n".encode())
            digest.update(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint


def download_source(spec: DatasetSpec, source_root=None) -> Path:
    """Download a spec's clean source with torchvision's downloader (explicit request only).

    Raises:
        ValueError: the source cannot be downloaded (ImageNet needs a licence; Fashion-MNIST
            comes from the Debian package).
    """
    root = spec.resolve_source_root(source_root)
    if spec.source in ("cifar10", "cifar100"):
        import torchvision

        cls = torchvision.datasets.CIFAR10 if spec.source == "cifar10" else torchvision.datasets.CIFAR100
        root.mkdir(parents=True, exist_ok=True)
        cls(str(root), train=False, download=True)
        return root
    if spec.source == "fashion-mnist":
        raise ValueError("Fashion-MNIST is read from Debian's dataset-fashion-mnist package (apt-get install "
                         "dataset-fashion-mnist) or FASHION_MNIST_ROOT; there is nothing to download")
    raise ValueError(f"{spec.source} cannot be downloaded automatically (licensed); place the validation "
                     f"folder at {root} or set {spec.source_env}")


def open_clean_source(spec: DatasetSpec, source_root=None) -> CleanSource:
    """Open the clean test set of ``spec`` (never downloads).

    Raises:
        SourceError: the source folder or files are missing/malformed; the message names the
            path and how to provide it.
    """
    root = spec.resolve_source_root(source_root)
    if spec.source == "fashion-mnist":
        images, labels = load_fashion_mnist(root, split="test", pad_to=32)
        return CleanSource(spec, root, labels, array=images)
    if spec.source in ("cifar10", "cifar100"):
        num_classes = 10 if spec.source == "cifar10" else 100
        try:
            images, labels = load_cifar(root, split="test", num_classes=num_classes)
        except SourceError as exc:
            raise SourceError(f"{exc}. Set {spec.source_env} or pass `source_root`, or fetch it with "
                              f'"rbpp datasets {spec.name} `download`"') from None
        return CleanSource(spec, root, labels, array=images)
    if spec.source == "imagenet":
        paths, wnids = list_imagenet_val(root, wnids=spec.wnids())
        class_names = spec.wnids() or tuple(sorted(set(wnids)))
        index_of = {wnid: i for i, wnid in enumerate(class_names)}
        labels = np.array([index_of[w] for w in wnids], dtype=np.int64)
        keys = [f"{w}/{p.name}" for w, p in zip(wnids, paths)]
        return CleanSource(spec, root, labels, paths=paths, keys=keys, class_names=class_names)
    raise ValueError(f"dataset {spec.name}: unknown source kind {spec.source!r}")
