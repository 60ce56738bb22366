"""``manifest.json`` of a generated corrupted set: reading it (checked), recording finished
files, checking files against it; and the cached sha256 of large files.

The manifest is the only thing that declares a generated file complete: a file is written
under a temporary name, renamed into place, and only then recorded (sha256, size, mtime_ns
and a sampled hash, :func:`record_file`) in the manifest, itself replaced atomically. A file
on disk that the manifest does not list is an interrupted write and is never trusted.

What is checked, and when:

- **Reading** (every open, every resume): the manifest must be self-consistent or it is
  refused (:func:`read_manifest`): our format and version; a ``digest`` of its own contents
  that matches (a hand edit of the seed, the severities or the file list is refused);
  severities whole numbers 1-5, ascending, without repeats; a whole-number seed; parameters
  present; indices in range, ascending, and matching ``indices_sha256``; every file entry
  complete; every corruption recorded as complete with all its files listed.
- **Every run** (:func:`check_recorded_file`, on the opened cells' files, about 1 MiB read per
  file): size; and either the recorded mtime_ns plus a sampled hash (16 chunks of 64 KiB
  spread over the file), or, when the mtime differs (edited, or copied without its times),
  the full sha256, cached per (path, size, mtime) in ``~/.cache``. An in-place edit is
  caught unless it keeps the mtime and misses every sampled chunk; a JPEG cell also checks
  its images' names, sizes and mtimes and a sample of their hashes
  (:mod:`robustbench_pp.datasets.layouts.jpeg`).
- **``--verify``** (:func:`verify_entry`, on request): every byte of every opened file
  against its sha256, and every JPEG image against its ``SHA256SUMS`` line.

The dataset fingerprint of a generated set is built from the recorded sha256 values, which
these checks tie to the bytes on disk.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Callable

from robustbench_pp.code_identity import git_commit
from robustbench_pp.fileio import atomic_write, file_digest
from robustbench_pp.names import ALL_CORRUPTIONS, SEVERITIES

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "robustbench_pp/corrupted-set"
# 2: a digest of the manifest's contents, and mtime_ns plus a sampled hash per file.
MANIFEST_VERSION = 2
SAMPLE_CHUNKS = 16
SAMPLE_BYTES = 64 << 10
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _hash_cache_file() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "robustbench_pp" / "sha256-cache.json"


class ManifestError(ValueError):
    """A manifest is missing, malformed or disagrees with the files; the message names the file."""


def cached_value(key: str, stamp: dict, compute: Callable[[], str]) -> str:
    """``compute()``, cached under ``key`` in ``~/.cache`` while ``stamp`` (sizes, mtimes) is unchanged."""
    cache_file = _hash_cache_file()
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    entry = cache.get(key) if isinstance(cache, dict) else None
    if isinstance(entry, dict) and entry.get("stamp") == stamp and isinstance(entry.get("value"), str):
        return entry["value"]
    value = compute()
    cache = {k: v for k, v in cache.items() if os.path.exists(k.split("#")[0])} if isinstance(cache, dict) else {}
    cache[key] = {"stamp": stamp, "value": value}
    try:
        atomic_write(cache_file, json.dumps(cache, indent=0, sort_keys=True))
    except OSError:  # a read-only or full home only costs the cache
        pass
    return value


def cached_sha256(path: str | os.PathLike) -> str:
    """sha256 of a large file, cached per (absolute path, size, mtime) under ~/.cache.

    Released sets are read-only and re-hashing 19 files of 150-600 MB on every evaluation
    would dominate small runs; a changed size or mtime invalidates the entry.
    """
    path = Path(path).resolve()
    stat = path.stat()
    return cached_value(str(path), {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}, lambda: file_digest(path))


def sampled_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's size and of ``SAMPLE_CHUNKS`` chunks spread evenly over it (the
    whole file when it is small): about 1 MiB read whatever the size."""
    size = os.path.getsize(path)
    digest = hashlib.sha256(f"{size}\n".encode())
    with open(path, "rb") as handle:
        if size <= SAMPLE_CHUNKS * SAMPLE_BYTES:
            digest.update(handle.read())
        else:
            for k in range(SAMPLE_CHUNKS):
                handle.seek(k * (size - SAMPLE_BYTES) // (SAMPLE_CHUNKS - 1))
                digest.update(handle.read(SAMPLE_BYTES))
    return digest.hexdigest()


def manifest_digest(manifest: dict) -> str:
    """sha256 of the manifest's canonical JSON without its ``digest`` field."""
    body = {key: value for key, value in manifest.items() if key != "digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def indices_sha256(indices) -> str:
    """The ``indices_sha256`` parameter: sha256 of the source indices as little-endian int64."""
    import numpy as np

    return hashlib.sha256(np.ascontiguousarray(indices, dtype="<i8").tobytes()).hexdigest()


def read_manifest(folder: str | os.PathLike) -> dict | None:
    """The manifest of a generated set, checked, or None when the folder has none (a released set).

    Raises:
        ManifestError: the manifest exists but is not ours, was edited, or is not
            self-consistent; the message names the file and the key.
    """
    path = Path(folder) / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path} is not valid JSON ({exc}); delete the folder to regenerate the set") from None
    except OSError as exc:
        raise ManifestError(f"cannot read {path}: {exc.strerror}") from None
    check_manifest(manifest, path)
    return manifest


def write_manifest(folder: str | os.PathLike, manifest: dict) -> None:
    """Set the manifest's ``digest`` and replace the manifest of ``folder`` atomically."""
    manifest["digest"] = manifest_digest(manifest)
    atomic_write(Path(folder) / MANIFEST_NAME, json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def utc_now() -> str:
    """The manifest's timestamp format (UTC, seconds)."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------------------------
# Self-consistency.


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_manifest(manifest, path: Path) -> None:
    """Refuse a manifest that is not ours, was edited by hand, or contradicts itself.

    Raises:
        ManifestError: naming ``path`` and the first problem found.
    """
    def fail(problem: str):
        raise ManifestError(f"{path}: {problem}; delete the folder and rerun generation to rebuild the set")

    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ManifestError(f"{path} is not a robustbench_pp manifest (format {found!r})")
    version = manifest.get("format_version")
    if version != MANIFEST_VERSION or not _is_int(version):
        older = _is_int(version) and version < MANIFEST_VERSION
        fail(f"format_version {version!r} is {'older than' if older else 'not'} version {MANIFEST_VERSION}"
             + (" (no integrity digest)" if older else ""))
    if manifest.get("digest") != manifest_digest(manifest):
        fail("its contents do not match its digest (edited by hand?)")
    _check_identity(manifest, fail)
    _check_indices(manifest, fail)
    files = manifest.get("files")
    if not isinstance(files, dict):
        fail("`files` must be an object")
    for relpath, entry in files.items():
        _check_entry(relpath, entry, fail)
    done = manifest.get("corruptions_complete")
    if not isinstance(done, list) or len(set(map(str, done))) != len(done) or not set(done) <= set(ALL_CORRUPTIONS):
        fail(f"corruptions_complete must list known corruptions once each, got {done!r}")


def _check_identity(manifest: dict, fail) -> None:
    if not isinstance(manifest.get("dataset"), str):
        fail("`dataset` must be a name")
    seed = manifest.get("seed")
    if not _is_int(seed) or seed < 0:
        fail(f"`seed` must be a whole number of at least 0, got {seed!r}")
    parameters = manifest.get("parameters")
    if not isinstance(parameters, dict):
        fail("`parameters` is missing")
    severities = parameters.get("severities")
    if (not isinstance(severities, list) or not severities or not all(_is_int(s) and s in SEVERITIES for s in severities)
            or severities != sorted(set(severities))):
        fail(f"parameters.severities must be whole numbers 1-5, ascending, without repeats, got {severities!r}")
    if parameters.get("preset") != manifest.get("preset") or not isinstance(manifest.get("preset"), str):
        fail("parameters.preset and preset differ")
    limit = parameters.get("limit")
    if limit is not None and (not _is_int(limit) or limit < 1):
        fail(f"parameters.limit must be empty or a whole number of at least 1, got {limit!r}")
    for key in ("image_size", "layout", "geometry", "indices_sha256"):
        if key not in parameters:
            fail(f"parameters.{key} is missing")


def _check_indices(manifest: dict, fail) -> None:
    import numpy as np

    count, source = manifest.get("num_images"), manifest.get("source")
    if not _is_int(count) or count < 1:
        fail(f"`num_images` must be a whole number of at least 1, got {count!r}")
    if not isinstance(source, dict) or not _is_int(source.get("num_images")):
        fail("source.num_images is missing")
    indices = manifest.get("indices")
    if indices is None:
        if count != source["num_images"]:
            fail(f"{count} images without `indices`, but the clean source has {source['num_images']}")
        indices = np.arange(count, dtype=np.int64)
    else:
        if not isinstance(indices, list) or len(indices) != count or not all(_is_int(i) for i in indices):
            fail(f"`indices` must list {count} whole numbers")
        indices = np.asarray(indices, dtype=np.int64)
        if indices.min() < 0 or indices.max() >= source["num_images"] or np.any(np.diff(indices) <= 0):
            fail(f"`indices` must be ascending source indices in [0, {source['num_images']})")
    if indices_sha256(indices) != manifest["parameters"]["indices_sha256"]:
        fail("`indices` do not match parameters.indices_sha256")


def _check_entry(relpath, entry, fail) -> None:
    if (not isinstance(relpath, str) or not relpath or relpath.startswith("/") or ".." in Path(relpath).parts
            or not isinstance(entry, dict)):
        fail(f"files: bad entry {relpath!r}")
    for key in ("sha256", "sample_sha256"):
        if not isinstance(entry.get(key), str) or not _HEX64.fullmatch(entry[key]):
            fail(f"files.{relpath}.{key} must be a sha256 hex digest")
    for key in ("bytes", "mtime_ns"):
        if not _is_int(entry.get(key)) or entry[key] < 0:
            fail(f"files.{relpath}.{key} must be a whole number")


# --------------------------------------------------------------------------------------------
# Recording finished files.


def record_file(folder: Path, manifest: dict, relpath: str, **extra) -> None:
    """Record a file that has reached its final name (sha256, size, mtime_ns, sampled hash,
    commit, ``extra``) and save. Call it only after the rename: a listed file is a complete file.
    """
    path = folder / relpath
    stat = path.stat()
    manifest["files"][relpath] = {"sha256": file_digest(path), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                                  "sample_sha256": sampled_sha256(path), "git_commit": git_commit(), **extra}
    manifest["updated"] = utc_now()
    write_manifest(folder, manifest)


def record_complete_corruption(folder: Path, manifest: dict, corruption: str) -> None:
    """Add ``corruption`` to ``corruptions_complete`` (kept in canonical order) and save."""
    done = set(manifest["corruptions_complete"]) | {corruption}
    manifest["corruptions_complete"] = [c for c in ALL_CORRUPTIONS if c in done]
    write_manifest(folder, manifest)


# --------------------------------------------------------------------------------------------
# Checking files against the manifest.


def check_recorded_file(folder: Path, relpath: str, entry: dict) -> None:
    """The per-run check of one recorded file (see the module docstring): size, then the
    recorded mtime and a sampled hash, or the full (cached) sha256 when the mtime differs.

    Raises:
        ManifestError: naming the file, when it is missing, truncated or altered.
    """
    path = folder / relpath
    if not path.is_file():
        raise ManifestError(f"{path} is listed in {folder / MANIFEST_NAME} but missing")
    stat = path.stat()
    if stat.st_size != entry["bytes"]:
        raise ManifestError(f"{path} has {stat.st_size} bytes, the manifest records {entry['bytes']} "
                            "(truncated or altered)")
    if stat.st_mtime_ns == entry["mtime_ns"]:
        altered = sampled_sha256(path) != entry["sample_sha256"]
    else:  # modified since it was recorded, or copied without its times: read it all (once)
        altered = cached_sha256(path) != entry["sha256"]
    if altered:
        raise ManifestError(f"{path} was altered after generation: its bytes differ from the sha256 in "
                            f"{folder / MANIFEST_NAME}")


def verify_entry(folder: Path, relpath: str, entry: dict) -> None:
    """Check one manifest entry's size and full sha256 against the file (reads every byte).

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
