"""The public releases of the corrupted sets (CIFAR-10-C, CIFAR-100-C, ImageNet-C): their
published MD5 checksums, and verification of downloaded files against them.

The structural checks of released files (headers, sizes, counts, labels) belong to their
layouts (:mod:`robustbench_pp.datasets.layouts`), are cheap and always run; this
verification reads every byte and runs on request.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from robustbench_pp.datasets.manifest import ManifestError
from robustbench_pp.datasets.specs import DatasetSpec
from robustbench_pp.fileio import file_digest


def load_release_checksums() -> dict:
    """The published MD5 checksums of the released sets (package data)."""
    text = resources.files("robustbench_pp").joinpath("data", "release_checksums.json").read_text()
    return json.loads(text)


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
