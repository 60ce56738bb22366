"""What every on-disk layout of a corrupted set shares: errors, the value objects passed
between opening, reading and generation, and the :class:`Layout` base class.

A layout class owns everything that depends on how a set is stored: the paths of its cells
and their manifest keys, which corruptions are present, opening and checking the files, the
cell readers, writing a piece in progress under ``.partial/``, finalising it (rename, then
manifest record), the file hashes of the fingerprint and checksum verification. Opening
(:mod:`robustbench_pp.datasets.corrupted`) and generation
(:mod:`robustbench_pp.datasets.generate`) never branch on the layout themselves.

Finalising is the only place a file becomes complete: it is renamed to its final name, then
recorded in the manifest (:func:`robustbench_pp.datasets.manifest.record_file`), and the
corruption is recorded as complete once all its files are (:meth:`Layout.finalised`).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Iterable, Iterator

import numpy as np

from robustbench_pp.datasets.clean import CleanSource
from robustbench_pp.datasets.manifest import (
    MANIFEST_NAME,
    ManifestError,
    check_recorded_file,
    record_complete_corruption,
    record_file,
    verify_entry,
)
from robustbench_pp.datasets.specs import DatasetSpec
from robustbench_pp.names import ALL_CORRUPTIONS, SEVERITIES

#: Work in progress of a generation run, inside the set's folder.
PARTIAL_DIR = ".partial"


class LayoutError(ValueError):
    """Corrupted files do not have the expected layout; the message names the file."""


class DataNotFoundError(FileNotFoundError):
    """A corrupted-data folder or clean source is missing; the message says how to get it."""


@dataclass(frozen=True)
class Selection:
    """The cells asked for: corruption names (None: every one present) and severities."""

    corruptions: tuple[str, ...] | None
    severities: tuple[int, ...]

    @classmethod
    def checked(cls, corruptions=None, severities=None) -> Selection:
        """Validate names and severities (default severities 1..5).

        Raises:
            ValueError: naming the unknown corruption (with close names) or the bad severity.
        """
        from robustbench_pp.corruptions.parameters import check_name, check_severity

        if corruptions is not None:
            corruptions = tuple(corruptions)
            for name in corruptions:
                check_name(name)
        chosen = SEVERITIES if severities is None else severities
        return cls(corruptions, tuple(check_severity(s) for s in chosen))


@dataclass(frozen=True)
class CleanAccess:
    """The clean test set behind a corrupted set, as found when opening it."""

    root: Path  # where it was looked for
    source: CleanSource | None = None  # None when absent: no clean cell, no label check
    error: str | None = None  # why it is absent


@dataclass(frozen=True)
class CellTable:
    """The readable cells of an opened set, position by position."""

    labels: np.ndarray  # int64, one per position (image of a cell)
    source_indices: np.ndarray  # position -> index in the full clean test set
    readers: dict[tuple[str, int], Callable]  # (corruption, severity) -> positions -> images


@dataclass(frozen=True)
class SetContents:
    """Which images a generated set holds, in which order, at which severities."""

    source_indices: np.ndarray  # position -> index in the full clean test set
    severities: tuple[int, ...]  # ascending; an npy file holds one block per severity
    keys: tuple[str, ...] | None = None  # "<wnid>/<file>.JPEG" per position (JPEG folders only)

    @property
    def num_images(self) -> int:
        return len(self.source_indices)


@dataclass(frozen=True)
class Piece:
    """One unit of generation work: a cell, the ``block``-th severity of its corruption."""

    corruption: str
    severity: int
    block: int


class Layout(abc.ABC):
    """The files of one corrupted set in one on-disk layout (subclasses: one per layout).

    Args:
        spec: the dataset.
        root: the set's folder (``<out>/<name>`` for a generated set).
    """

    kind: ClassVar[str]  # the DatasetSpec.layout value this class serves
    released_fingerprint_method: ClassVar[str]  # describe()'s wording for a set without manifest
    jpeg_quality: int | None = None  # quality of stored JPEGs (None: lossless files)

    def __init__(self, spec: DatasetSpec, root: str | Path):
        self.spec, self.root = spec, Path(root)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec.name!r}, {str(self.root)!r})"

    # -- paths and manifest keys ---------------------------------------------------------------

    @property
    def partial_root(self) -> Path:
        return self.root / PARTIAL_DIR

    @abc.abstractmethod
    def cell_key(self, corruption: str, severity: int) -> str:
        """Manifest key (relative path) of the file that records a cell as complete."""
        raise NotImplementedError

    def corruption_keys(self, corruption: str, severities: Iterable[int]) -> list[str]:
        """Manifest keys of every file of one corruption at these severities."""
        return list(dict.fromkeys(self.cell_key(corruption, s) for s in severities))

    @abc.abstractmethod
    def corruption_path(self, corruption: str) -> Path:
        """Where a corruption's data lives (a file or a folder)."""
        raise NotImplementedError

    @abc.abstractmethod
    def corruptions_present(self) -> list[str]:
        """Corruptions with data in the folder, canonical order."""
        raise NotImplementedError

    def image_keys(self, source: CleanSource, source_indices: np.ndarray) -> tuple[str, ...] | None:
        """Per-image file keys in this layout (None when the layout has no file per image)."""
        return None

    def regenerate_hint(self) -> str:
        """How to finish or rebuild this generated set."""
        return f'rerun "rbpp generate {self.spec.name} `out` {self.root.parent}/"'

    # -- opening ------------------------------------------------------------------------------

    @abc.abstractmethod
    def open_cells(self, manifest: dict | None, clean: CleanAccess, selection: Selection) -> CellTable:
        """Check the files' structure (always: cheap) and build a reader per selected cell.

        Raises:
            LayoutError, ManifestError: naming the file and what is wrong.
            DataNotFoundError: nothing to read the labels from.
        """
        raise NotImplementedError

    def selected_corruptions(self, manifest: dict | None, corruptions) -> list[str]:
        """Corruptions to open; in a generated set only those its manifest records as complete.

        Raises:
            LayoutError: a requested corruption is absent or unfinished.
        """
        if manifest is None:
            present = self.corruptions_present()
            selected = corruptions or present
            for name in selected:
                if name not in present:
                    raise LayoutError(f"{self.root} has no data for {name} (expected {self.corruption_path(name)})")
            return list(selected)
        done = manifest["corruptions_complete"]
        selected = corruptions or [c for c in ALL_CORRUPTIONS if c in done]
        for name in selected:
            if name not in done:
                raise LayoutError(f"{name} is not recorded as complete in {self.root / MANIFEST_NAME} "
                                  f"(interrupted or not generated); {self.regenerate_hint()} to finish it")
        return list(selected)

    def generated_indices(self, manifest: dict) -> np.ndarray:
        """Source index of each position of a generated set (all images unless it has a ``limit``);
        :func:`~robustbench_pp.datasets.manifest.read_manifest` has checked them."""
        indices = manifest["indices"]
        if indices is None:
            return np.arange(manifest["num_images"], dtype=np.int64)
        return np.asarray(indices, dtype=np.int64)

    def check_opened_files(self, manifest: dict, cells: Iterable[tuple[str, int]]) -> None:
        """The per-run check of a generated set's files that hold ``cells`` (see
        :mod:`robustbench_pp.datasets.manifest`): each listed, and unchanged since it was recorded.

        Raises:
            ManifestError: naming the first file missing from the manifest, or changed.
        """
        for relpath in sorted(self.fingerprint_keys(cells)):
            if relpath not in manifest["files"]:
                raise ManifestError(f"{self.root / relpath} is not recorded in {self.root / MANIFEST_NAME}; "
                                    f"{self.regenerate_hint()} to finish the set")
            self.check_recorded(manifest, relpath)

    def check_recorded(self, manifest: dict, relpath: str) -> None:
        """Check one recorded file cheaply (size, mtime, sampled hash; full hash when changed).

        Raises:
            ManifestError: naming the file.
        """
        check_recorded_file(self.root, relpath, manifest["files"][relpath])

    def recorded_intact(self, manifest: dict, relpath: str) -> bool:
        """Whether a recorded file passes :meth:`check_recorded` (resuming forgets those that fail)."""
        try:
            self.check_recorded(manifest, relpath)
        except (ManifestError, LayoutError, OSError):
            return False
        return True

    # -- identity and verification --------------------------------------------------------------

    def fingerprint_keys(self, cells: Iterable[tuple[str, int]]) -> set[str]:
        """Manifest keys of the files that hold these cells (and what every cell shares)."""
        return {self.cell_key(c, s) for c, s in cells}

    def file_hashes(self, manifest: dict | None, table: CellTable) -> list[tuple[str, str]]:
        """``(relative path, sha256)`` of the opened cells' files, sorted: the manifest's for a
        generated set, else the layout's own (:meth:`released_hashes`)."""
        if manifest is None:
            return self.released_hashes(table)
        wanted = self.fingerprint_keys(table.readers)
        return sorted((rel, entry["sha256"]) for rel, entry in manifest["files"].items() if rel in wanted)

    @abc.abstractmethod
    def released_hashes(self, table: CellTable) -> list[tuple[str, str]]:
        """``(relative path, hash)`` identifying the opened cells' files of a set without manifest."""
        raise NotImplementedError

    def verify(self, manifest: dict | None, table: CellTable) -> list[str]:
        """Read every byte of the opened cells' files and check them: the manifest's sha256
        (generated sets; a JPEG cell's images against its ``SHA256SUMS``) or the published
        MD5s (released sets).

        Returns:
            The relative paths verified.

        Raises:
            ManifestError: naming the first file that differs.
        """
        if manifest is None:
            return self.verify_release(table)
        checked = []
        for relpath, _sha in self.file_hashes(manifest, table):
            self.verify_recorded(manifest, relpath)
            checked.append(relpath)
        return checked

    def verify_recorded(self, manifest: dict, relpath: str) -> None:
        """Read every byte of one recorded file (and of what it lists) and check it.

        Raises:
            ManifestError: naming the first file that differs.
        """
        verify_entry(self.root, relpath, manifest["files"][relpath])

    @abc.abstractmethod
    def verify_release(self, table: CellTable) -> list[str]:
        """Check the opened cells' files against the published checksums (the relative paths checked)."""
        raise NotImplementedError

    # -- generation -----------------------------------------------------------------------------

    def begin(self, manifest: dict, contents: SetContents, labels: np.ndarray) -> None:
        """Write what the set holds besides its cells (nothing by default)."""

    @abc.abstractmethod
    def pending(self, manifest: dict, corruption: str, contents: SetContents) -> tuple[list[Piece], int]:
        """The pieces of ``corruption`` still to write, and the count of cells already written."""
        raise NotImplementedError

    def todo_positions(self, piece: Piece, contents: SetContents) -> np.ndarray:
        """Positions of the piece still to corrupt (all of them unless the layout resumes within a piece)."""
        return np.arange(contents.num_images, dtype=np.int64)

    @abc.abstractmethod
    def write_piece(self, piece: Piece, contents: SetContents, batches: Iterator[tuple[np.ndarray, np.ndarray]]) -> None:
        """Write ``(positions, corrupted images N×H×W×3)`` batches of a piece under ``.partial/``."""
        raise NotImplementedError

    @abc.abstractmethod
    def finish_piece(self, manifest: dict, piece: Piece, contents: SetContents) -> None:
        """Record a written piece; move its file into place once it is complete (:meth:`finalised`)."""
        raise NotImplementedError

    def finalised(self, manifest: dict, relpath: str, corruption: str, severities, details: dict) -> None:
        """Record a file that just reached its final name (with ``details`` in its entry); the
        corruption is complete when all its files are recorded. The one place a manifest
        learns that a file or a corruption is complete."""
        record_file(self.root, manifest, relpath, **details)
        if all(key in manifest["files"] for key in self.corruption_keys(corruption, severities)):
            record_complete_corruption(self.root, manifest, corruption)
