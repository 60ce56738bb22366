"""Put a rendered report into its folder: atomic moves, the report's manifest, stale pages.

Files are written to a staging folder inside the output folder (same file system, so each
``os.replace`` is atomic) and moved into place, ``index.html`` last: a reader never sees a
new index pointing at missing pages.

The folder may hold files of its owner (``model-card.html``, notes), so the report deletes
only what it provably wrote: :data:`MANIFEST` lists each file a report wrote with its
sha256. When a new report no longer has a model or comparison page that the previous
manifest lists, and the file still has the bytes the manifest records, it is removed; any
other file is left alone. The manifest is rewritten before the moves to list the old and the
new files, so a crash at any point leaves every page it wrote listed.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path

from robustbench_pp._version import __version__
from robustbench_pp.fileio import atomic_write

#: The report's own list of the files it wrote (name -> sha256), in the output folder.
MANIFEST = "report-manifest.json"
_GENERATOR = "robustbench_pp report"
#: Only pages are ever removed: the other files of a report are rewritten each time.
_PAGES = ("model-*.html", "compare-*.html")


def _sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _plain_name(name) -> bool:
    return isinstance(name, str) and Path(name).name == name and not name.startswith(".") and name not in ("", MANIFEST)


def previous_files(out: Path) -> dict[str, str]:
    """Name -> sha256 of the files the previous report in ``out`` wrote (empty without one).

    A manifest that is missing, unreadable or not ours lists nothing: nothing is removed.
    """
    try:
        data = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    files = data.get("files") if isinstance(data, dict) and data.get("generator") == _GENERATOR else None
    if not isinstance(files, dict):
        return {}
    return {name: digest for name, digest in files.items() if _plain_name(name) and isinstance(digest, str)}


def _write_manifest(out: Path, files: Mapping[str, str]) -> None:
    document = {"generator": _GENERATOR, "version": __version__, "files": dict(sorted(files.items()))}
    atomic_write(out / MANIFEST, json.dumps(document, indent=1) + "\n")


def _is_page(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in _PAGES)


def _remove_stale(out: Path, previous: Mapping[str, str], current: Mapping[str, str]) -> None:
    """Remove pages of the previous report that this one lacks, if they are still as written."""
    for name, digest in previous.items():
        if name in current or not _is_page(name):
            continue
        path = out / name
        try:
            if path.is_symlink() or not path.is_file():
                continue
            if _sha256(path.read_bytes()) != digest:
                warnings.warn(f"{path} was changed since the previous report wrote it; leaving it", stacklevel=3)
                continue
            path.unlink()
        except OSError as exc:
            warnings.warn(f"could not remove the stale page {path}: {exc.strerror}", stacklevel=3)


def write_report(files: Mapping[str, bytes], out_dir: str | os.PathLike) -> Path:
    """Move rendered files into ``out_dir`` (created if needed), ``index.html`` last.

    Model and comparison pages of the previous report (listed in its :data:`MANIFEST`) that
    this one does not contain are deleted; nothing else in ``out_dir`` is.

    Returns:
        The path of ``index.html`` (or of ``out_dir`` when there is no index).

    Raises:
        ValueError: a file name that is not a plain name in ``out_dir``.
        OSError: the folder cannot be written; files already there stay whole.
    """
    for name in files:
        if not _plain_name(name):
            raise ValueError(f"refusing to write report file {name!r} outside {out_dir}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    previous = previous_files(out)
    current = {name: _sha256(content) for name, content in files.items()}
    staging = Path(tempfile.mkdtemp(prefix=".rbpp-report-", dir=out))
    try:
        for name, content in files.items():
            with open(staging / name, "wb") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
        _write_manifest(out, {**previous, **current})  # every file that may be ours after the moves
        for name in sorted(files, key=lambda n: n == "index.html"):
            os.replace(staging / name, out / name)
        _remove_stale(out, previous, current)
        _write_manifest(out, current)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out / "index.html" if "index.html" in files else out
