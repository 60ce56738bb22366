"""Datasets: clean sources, released corrupted sets, generation and on-the-fly corruption.

Public API::

    spec = get_dataset("cifar10-c")            # DatasetSpec (frozen)
    data = open_corrupted("cifar10-c")         # released / generated files, or on_the_fly=True
    for images, labels in data.batches("fog", 3, batch_size=256, device="cuda", pin_memory=True):
        logits = model(normalize(images, mean, std))   # robustbench_pp.preprocessing
    generate("fashion-mnist-c", out="corruptions/")

Modules: ``specs`` (the registry), ``sources`` and ``clean`` (clean test sets), ``layouts``
(one class per on-disk layout of corrupted files), ``corrupted`` (an opened set),
``loader`` (batches), ``generate``, ``manifest``, ``released`` (published checksums),
``subsets``.
"""

from robustbench_pp.datasets.clean import CleanSource, download_source, open_clean_source
from robustbench_pp.datasets.corrupted import MODES, CorruptedDataset, open_corrupted
from robustbench_pp.datasets.generate import GenerationReport, generate
from robustbench_pp.datasets.layouts import DataNotFoundError, LayoutError
from robustbench_pp.datasets.manifest import ManifestError
from robustbench_pp.datasets.released import verify_release_checksums
from robustbench_pp.datasets.sources import SourceError
from robustbench_pp.datasets.specs import DatasetSpec, get_dataset, list_datasets
from robustbench_pp.datasets.subsets import balanced_subset

__all__ = [
    "MODES",
    "CleanSource",
    "CorruptedDataset",
    "DataNotFoundError",
    "DatasetSpec",
    "GenerationReport",
    "LayoutError",
    "ManifestError",
    "SourceError",
    "balanced_subset",
    "download_source",
    "generate",
    "get_dataset",
    "list_datasets",
    "open_clean_source",
    "open_corrupted",
    "verify_release_checksums",
]
