"""Batches of one cell: the clean and on-the-fly readers and the DataLoader plumbing.

A reader is a picklable callable ``positions -> uint8 images`` (numpy N×H×W×3 or torch
N×3×H×W), so that DataLoader worker processes can run it; the layouts define the readers of
stored cells (:mod:`robustbench_pp.datasets.layouts`), this module those made from the clean
source. :func:`load_batches` turns a reader into ``(uint8 B×3×H×W, int64 B)`` batches:
pixels stay uint8 until :func:`robustbench_pp.preprocessing.normalize` runs on the evaluation
device, so a GPU is fed a quarter of the bytes of float input, and memory stays bounded by a
few batches whatever the dataset size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, ClassVar, Iterator

import numpy as np

from robustbench_pp.arguments import whole_number
from robustbench_pp.datasets.clean import CleanSource

CORRUPT_ON = ("auto", "host", "device")


def to_nchw(images):
    """uint8 N×H×W×3 numpy -> N×3×H×W tensor view (channels_last strides, no copy)."""
    import torch

    if isinstance(images, torch.Tensor):
        return images
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)


@dataclass
class CleanReader:
    """Positions -> clean images at the spec's geometry."""

    source: CleanSource
    source_indices: np.ndarray

    cheap_to_read: ClassVar[bool] = True  # when the source is in memory (see LoadOptions.clean_in_memory)

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        return self.source.images(self.source_indices[positions])


@dataclass
class OnTheFlyReader:
    """Positions -> clean images corrupted in memory, as the generated files hold them."""

    source: CleanSource
    source_indices: np.ndarray
    corruption: str
    severity: int
    seed: int
    jpeg_roundtrip: bool
    jpeg_quality: int

    cheap_to_read: ClassVar[bool] = False

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        return self.apply(self.source.images(self.source_indices[positions]), positions)

    def clean_reader(self) -> CleanReader:
        """The reader of the same positions without corruption (for corruption on the device)."""
        return CleanReader(self.source, self.source_indices)

    def apply(self, images, positions: np.ndarray):
        """Corrupt clean images (numpy N×H×W×3, or a torch N×3×H×W batch on any device)."""
        from robustbench_pp.corruptions import corrupt_by_index, jpeg_roundtrip

        # The randomness of an image depends on its source index only, so any subset or
        # order reproduces the images of one full pass (and of the generated files).
        out = corrupt_by_index(images, self.source_indices[positions], self.corruption, self.severity,
                               preset=self.source.spec.preset, seed=self.seed)
        if self.jpeg_roundtrip:
            out = jpeg_roundtrip(out, quality=self.jpeg_quality)
        return out


@dataclass(frozen=True)
class LoadOptions:
    """How the batches of a cell are built and where they go (see CorruptedDataset.batches)."""

    device: str = "cpu"
    pin_memory: bool = False
    num_workers: int | None = None  # None: 0 for cheap readers and single batches, else min(4, CPUs - 1)
    corrupt_on: str = "auto"  # on the fly: "host" (loader), "device", or "auto" (device unless CPU)
    clean_in_memory: bool = True  # the clean source is an in-memory array (not image files)


@dataclass(frozen=True)
class _ReaderFailure:
    """An exception raised by a reader in a worker process, sent back as a value.

    A DataLoader re-raises a worker's exception with the worker's whole traceback pasted into
    its message; sent as a value, it is raised again in this process as it was (one line
    naming the file, e.g. an image that cannot be decoded).
    """

    error: BaseException


class _BatchDataset:
    """Item k is the whole k-th batch, so worker processes build batches end to end."""

    def __init__(self, chunks: list[np.ndarray], reader: Callable, labels: np.ndarray):
        self.chunks, self.reader, self.labels = chunks, reader, labels

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, k: int):
        import torch

        positions = self.chunks[k]
        if torch.utils.data.get_worker_info() is None:
            return to_nchw(self.reader(positions)), torch.from_numpy(self.labels[positions])
        try:
            return to_nchw(self.reader(positions)), torch.from_numpy(self.labels[positions])
        except Exception as exc:  # noqa: BLE001 - every error goes back to the main process
            return _ReaderFailure(_picklable(exc))


def _picklable(exc: Exception) -> Exception:
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


def _init_worker(_worker_id: int) -> None:
    import torch

    torch.set_num_threads(1)


def _worker_count(reader: Callable, chunks: list, options: LoadOptions) -> int:
    if options.num_workers is not None:
        return options.num_workers
    # Memory-mapped npy cells and in-memory clean sets are read faster than workers start;
    # a single batch gains nothing from them either.
    cheap = reader.cheap_to_read and options.clean_in_memory
    # Leave one core to the main process (model, transfers): on 2 cores, one worker.
    return 0 if cheap or len(chunks) <= 1 else min(4, (os.cpu_count() or 1) - 1)


def load_batches(reader: Callable, labels: np.ndarray, chunks: list[np.ndarray], options: LoadOptions) -> Iterator:
    """Yield ``(images uint8 B×3×H×W, labels int64 B)`` on ``options.device``, one per chunk of positions.

    Raises:
        ValueError: an unknown ``corrupt_on``.
    """
    import torch

    num_workers = whole_number("num_workers", _worker_count(reader, chunks, options), minimum=0)
    device = torch.device(options.device)
    if options.corrupt_on not in CORRUPT_ON:
        raise ValueError(f"`corrupt_on` must be 'auto', 'host' or 'device', got {options.corrupt_on!r}")
    on_device = None
    if isinstance(reader, OnTheFlyReader) and (options.corrupt_on == "device" or (options.corrupt_on == "auto"
                                                                                   and device.type != "cpu")):
        on_device, reader = reader, reader.clean_reader()
    # Pinned host batches serve a later copy too (callers that move batches themselves).
    pin = options.pin_memory and torch.cuda.is_available()
    dataset = _BatchDataset(chunks, reader, labels)
    if num_workers == 0:
        source = (dataset[k] for k in range(len(dataset)))
    else:
        source = torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=False, num_workers=num_workers,
                                             worker_init_fn=_init_worker, prefetch_factor=2, pin_memory=pin)
    for positions, item in zip(chunks, source):
        if isinstance(item, _ReaderFailure):
            raise item.error
        images, batch_labels = item
        if pin and not images.is_pinned():
            images, batch_labels = images.pin_memory(), batch_labels.pin_memory()
        if device.type != "cpu":
            images = images.to(device, non_blocking=pin)
            batch_labels = batch_labels.to(device, non_blocking=pin)
        if on_device is not None:
            images = on_device.apply(images, positions)
        yield images, batch_labels
