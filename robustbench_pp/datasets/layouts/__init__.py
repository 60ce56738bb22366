"""The on-disk layouts of corrupted sets, one class each (torchvision's habit: one class per format).

- :class:`NpyLayout`: CIFAR-10-C, ``<corruption>.npy`` of K severity blocks + ``labels.npy``;
- :class:`JpegFolderLayout`: ImageNet-C, ``<corruption>/<severity>/<wnid>/<file>.JPEG``.

:func:`layout_for` is the one place that chooses a class from ``DatasetSpec.layout``.
"""

from __future__ import annotations

from pathlib import Path

from robustbench_pp.datasets.layouts.base import (
    PARTIAL_DIR,
    CellTable,
    CleanAccess,
    DataNotFoundError,
    Layout,
    LayoutError,
    Piece,
    Selection,
    SetContents,
)
from robustbench_pp.datasets.layouts.jpeg import JpegFolderLayout
from robustbench_pp.datasets.layouts.npy import LABELS_FILE, NpyLayout
from robustbench_pp.datasets.specs import DatasetSpec

_LAYOUTS: dict[str, type[Layout]] = {cls.kind: cls for cls in (NpyLayout, JpegFolderLayout)}


def layout_for(spec: DatasetSpec, root: str | Path) -> Layout:
    """The layout object of ``spec``'s corrupted files in ``root``.

    Raises:
        ValueError: the spec names a layout that has no class.
    """
    try:
        return _LAYOUTS[spec.layout](spec, root)
    except KeyError:
        raise ValueError(f"dataset {spec.name}: unknown layout {spec.layout!r} (known: {', '.join(_LAYOUTS)})") from None


__all__ = [
    "LABELS_FILE",
    "PARTIAL_DIR",
    "CellTable",
    "CleanAccess",
    "DataNotFoundError",
    "JpegFolderLayout",
    "Layout",
    "LayoutError",
    "NpyLayout",
    "Piece",
    "Selection",
    "SetContents",
    "layout_for",
]
