"""``manifest.json`` of a generated corrupted set: reading, recording finished files, checking
them; and the cached sha256 of large released files.

The manifest is the only thing that declares a generated file complete: a file is written
under a temporary name, renamed into place, and only then recorded (with its sha256 and
size, :func:`record_file`) in the manifest, itself replaced atomically. A file on disk that the manifest does
not list, or lists with another size, is an interrupted write and is never trusted.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

from robustbench_pp.code_identity import git_commit
from robustbench_pp.fileio import atomic_write, file_digest
from robustbench_pp.names import ALL_CORRUPTIONS

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "robustbench_pp/corrupted-set"
MANIFEST_VERSION = 1


def _hash_cache_file() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "robustbench_pp" / "sha256-cache.json"


class ManifestError(ValueError):
    """A manifest is missing, malformed or disagrees with the files; the message names the file."""


def cached_sha256(path: str | os.PathLike) -> str:
    """sha256 of a large file, cached per (absolute path, size, mtime) under ~/.cache.

    Released sets are read-only and re-hashing 19 files of 150-600 MB on every evaluation
    would dominate small runs; a changed size or mtime invalidates the entry.
    """
    path = Path(path).resolve()
    stat = path.stat()
    key = str(path)
    cache_file = _hash_cache_file()
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    entry = cache.get(key)
    if entry and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
        return entry["sha256"]
    value = file_digest(path)
    cache = {path: entry for path, entry in cache.items() if os.path.exists(path)}  # forget deleted files
    cache[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": value}
    try:
        atomic_write(cache_file, json.dumps(cache, indent=0, sort_keys=True))
    except OSError:  # a read-only home only costs the cache
        pass
    return value


def read_manifest(folder: str | os.PathLike) -> dict | None:
    """The manifest of a generated set, or None when the folder has none (a released set).

    Raises:
        ManifestError: the manifest exists but is not valid JSON of our format.
    """
    path = Path(folder) / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ManifestError(f"{path} is not valid JSON ({exc}); delete it to regenerate the set") from exc
    if manifest.get("format") != MANIFEST_FORMAT or not isinstance(manifest.get("files"), dict):
        raise ManifestError(f"{path} is not a robustbench_pp manifest (format {manifest.get('format')!r})")
    return manifest


def write_manifest(folder: str | os.PathLike, manifest: dict) -> None:
    """Replace the manifest of ``folder`` atomically."""
    atomic_write(Path(folder) / MANIFEST_NAME, json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def utc_now() -> str:
    """The manifest's timestamp format (UTC, seconds)."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def record_file(folder: Path, manifest: dict, relpath: str, **extra) -> None:
    """Record a file that has reached its final name (sha256, size, commit, ``extra``) and save.

    Call it only after the rename: a listed file is a complete file.
    """
    path = folder / relpath
    manifest["files"][relpath] = {"sha256": file_digest(path), "bytes": path.stat().st_size,
                                  "git_commit": git_commit(), **extra}
    manifest["updated"] = utc_now()
    write_manifest(folder, manifest)


def record_complete_corruption(folder: Path, manifest: dict, corruption: str) -> None:
    """Add ``corruption`` to ``corruptions_complete`` (kept in canonical order) and save."""
    done = set(manifest["corruptions_complete"]) | {corruption}
    manifest["corruptions_complete"] = [c for c in ALL_CORRUPTIONS if c in done]
    write_manifest(folder, manifest)


def entry_is_complete(folder: Path, relpath: str, entry: dict) -> bool:
    """True when the file recorded at ``relpath`` exists with the recorded size."""
    path = folder / relpath
    return path.is_file() and path.stat().st_size == entry.get("bytes")


def verify_entry(folder: Path, relpath: str, entry: dict) -> None:
    """Check one manifest entry's size and sha256 against the file.

    Raises:
        ManifestError: naming the file, when it is missing, truncated or altered.
    """
    path = folder / relpath
    if not path.is_file():
        raise ManifestError(f"{path} is listed in {folder / MANIFEST_NAME} but missing")
    size = path.stat().st_size
    if size != entry["bytes"]:
        raise ManifestError(f"{path} has {size} bytes, the manifest records {entry['bytes']} (truncated or altered)")
    actual = file_digest(path)
    if actual != entry["sha256"]:
        raise ManifestError(f"{path}: sha256 {actual[:16]}... differs from the manifest's {entry['sha256'][:16]}...")
