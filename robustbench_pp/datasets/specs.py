"""Named benchmark datasets: what each one is and where its files live.

A :class:`DatasetSpec` is a flat, frozen record: image geometry, classes,
corruption preset, the clean source it is made from and the on-disk layout of its
corrupted files. The dataset, not the caller, decides its preprocessing: the loader applies
``geometry`` to clean images and never resizes corrupted ones (they are stored at
``image_size`` already).

Folders:

- corrupted data: ``<corruptions home>/<name>`` where the home is ``$RBPP_CORRUPTIONS``
  or ``corruptions/`` in the working directory (the project's untracked data folder);
- clean source: ``$<source_env>`` if set, else ``default_source_root``.
"""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from robustbench_pp.datasets.sources import DEFAULT_FASHION_MNIST_ROOT

#: Environment variable overriding the folder that holds every corrupted set.
CORRUPTIONS_HOME_ENV = "RBPP_CORRUPTIONS"

_CACHE_HOME = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "robustbench_pp"


@dataclass(frozen=True)
class DatasetSpec:
    """One benchmark dataset (a clean test set and its corrupted versions)."""

    name: str  # registry key, e.g. "cifar10-c"
    source: str  # clean source kind: "fashion-mnist" | "cifar10" | "cifar100" | "imagenet"
    image_size: int  # side of the square images the model sees (clean and corrupted)
    num_classes: int
    preset: str  # corruption parameter set: "cifar" (32 px), "imagenet" (224 px) or "pushpull-224"
    layout: str  # corrupted files: "npy" (CIFAR-10-C blocks) or "jpeg-folders" (ImageNet-C)
    geometry: str  # clean image -> model input: "pad-32", "identity", "bicubic-224", "resize256-crop224"
    default_data_root: str  # corrupted files, relative to the corruptions home
    default_source_root: str  # clean source folder when ``source_env`` is unset
    source_env: str  # environment variable naming the clean source folder
    num_images: int  # images in the full clean test set (one cell)
    wnids_file: str | None = None  # package-data list of class wnids (ImageNet subsets)
    release: str | None = None  # key in release_checksums.json when a public release exists
    jpeg_quality: int = 85  # quality of the released JPEG layout (ImageNet-C used 85)
    description: str = ""

    def resolve_data_root(self, data_root: str | os.PathLike | None = None) -> Path:
        """The corrupted-data folder: ``data_root`` if given, else the default one."""
        if data_root is not None:
            return Path(data_root)
        home = Path(os.environ.get(CORRUPTIONS_HOME_ENV, "corruptions"))
        return home / Path(self.default_data_root).name

    def resolve_source_root(self, source_root: str | os.PathLike | None = None) -> Path:
        """The clean-source folder: ``source_root``, else ``$source_env``, else the default."""
        if source_root is not None:
            return Path(source_root)
        return Path(os.environ.get(self.source_env, self.default_source_root)).expanduser()

    def wnids(self) -> tuple[str, ...] | None:
        """The class wnids in class-index order for ImageNet subsets, else None.

        A subset's class index is the wnid's position in the sorted list.
        """
        if self.wnids_file is None:
            return None
        return _load_wnids(self.wnids_file)

    def to_dict(self) -> dict:
        """A json-able copy of the fields."""
        return {field: getattr(self, field) for field in self.__dataclass_fields__}


@lru_cache(maxsize=None)
def _load_wnids(filename: str) -> tuple[str, ...]:
    text = resources.files("robustbench_pp").joinpath("data", filename).read_text()
    return tuple(sorted(json.loads(text)))


_CIFAR_ROOT = str(_CACHE_HOME / "cifar")
_IMAGENET_VAL_ROOT = str(_CACHE_HOME / "imagenet" / "val")

_SPECS: tuple[DatasetSpec, ...] = (
    DatasetSpec(
        name="fashion-mnist-c", source="fashion-mnist", image_size=32, num_classes=10,
        preset="cifar", layout="npy", geometry="pad-32",
        default_data_root="corruptions/fashion-mnist-c",
        default_source_root=str(DEFAULT_FASHION_MNIST_ROOT), source_env="FASHION_MNIST_ROOT",
        num_images=10000,
        description="Fashion-MNIST test set padded to 32x32 RGB, cifar preset, CIFAR-10-C layout (generated here)",
    ),
    DatasetSpec(
        name="cifar10-c", source="cifar10", image_size=32, num_classes=10,
        preset="cifar", layout="npy", geometry="identity",
        default_data_root="corruptions/cifar10-c", default_source_root=_CIFAR_ROOT,
        source_env="CIFAR_ROOT", num_images=10000, release="cifar10-c",
        description="CIFAR-10-C (Hendrycks & Dietterich; Zenodo 2535967)",
    ),
    DatasetSpec(
        name="cifar100-c", source="cifar100", image_size=32, num_classes=100,
        preset="cifar", layout="npy", geometry="identity",
        default_data_root="corruptions/cifar100-c", default_source_root=_CIFAR_ROOT,
        source_env="CIFAR_ROOT", num_images=10000, release="cifar100-c",
        description="CIFAR-100-C (Zenodo 3555552)",
    ),
    DatasetSpec(
        name="cifar10-c-224", source="cifar10", image_size=224, num_classes=10,
        preset="pushpull-224", layout="npy",
        geometry="bicubic-224", default_data_root="corruptions/cifar10-c-224",
        default_source_root=_CIFAR_ROOT, source_env="CIFAR_ROOT", num_images=10000,
        description="PushPull-Net variant: CIFAR-10 test upsampled bicubically to 224, imagenet preset with "
        "elastic_transform x 224 as its generator (npy layout, 7.5 GB per corruption; on-the-fly is usually "
        "the better choice)",
    ),
    DatasetSpec(
        name="imagenet-c", source="imagenet", image_size=224, num_classes=1000,
        preset="imagenet", layout="jpeg-folders",
        geometry="resize256-crop224", default_data_root="corruptions/imagenet-c",
        default_source_root=_IMAGENET_VAL_ROOT, source_env="IMAGENET_VAL_ROOT", num_images=50000,
        release="imagenet-c",
        description="ImageNet-C (Zenodo 2235448): val Resize(256)+CenterCrop(224), JPEG q85",
    ),
    DatasetSpec(
        name="imagenet100-c", source="imagenet", image_size=224, num_classes=100,
        preset="imagenet", layout="jpeg-folders",
        geometry="resize256-crop224", default_data_root="corruptions/imagenet100-c",
        default_source_root=_IMAGENET_VAL_ROOT, source_env="IMAGENET_VAL_ROOT", num_images=5000,
        wnids_file="imagenet100_wnids.json",
        description="ImageNet-C restricted to the 100 PushPull-Net classes",
    ),
    DatasetSpec(
        name="imagenet200-c", source="imagenet", image_size=224, num_classes=200,
        preset="imagenet", layout="jpeg-folders",
        geometry="resize256-crop224", default_data_root="corruptions/imagenet200-c",
        default_source_root=_IMAGENET_VAL_ROOT, source_env="IMAGENET_VAL_ROOT", num_images=10000,
        wnids_file="imagenet200_wnids.json",
        description="ImageNet-C restricted to the 200 Tiny-ImageNet classes",
    ),
)

_REGISTRY: dict[str, DatasetSpec] = {spec.name: spec for spec in _SPECS}


def list_datasets() -> list[str]:
    """Names of the registered datasets, in registry order."""
    return list(_REGISTRY)


def get_dataset(name: str | DatasetSpec) -> DatasetSpec:
    """Look a dataset spec up by name (a spec passes through unchanged).

    Raises:
        ValueError: for an unknown name, suggesting close names.
    """
    if isinstance(name, DatasetSpec):
        return name
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown dataset {name!r}.{hint} Known: {', '.join(_REGISTRY)}") from None
