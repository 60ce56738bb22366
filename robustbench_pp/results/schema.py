"""The cell record: one (model, dataset, corruption, severity) evaluation and its provenance.

A record is a frozen dataclass; on disk it is one JSON object per line (JSON Lines), tagged
with ``schema`` and ``schema_version`` so that old files stay readable and newer ones are
refused with a clear message instead of being misread.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from robustbench_pp.names import ALL_CORRUPTIONS, CLEAN, CLEAN_SEVERITY, SEVERITIES

SCHEMA_NAME = "robustbench_pp.cell"
SCHEMA_VERSION = 1

#: Provenance keys every record carries (values may be None where unknown, e.g. no CUDA).
REQUIRED_PROVENANCE = (
    "package_version",
    "torch_version",
    "torchvision_version",
    "cuda_version",
    "device",
    "git_commit",
    "checkpoint_sha256",
    "dataset_fingerprint",
    "preset",
    "seed",
    "num_images",
    "data_mode",
    "created_utc",
    "command",
)

#: Provenance keys that must agree for two records to belong to the same run (resume, merge).
IDENTITY_PROVENANCE = ("checkpoint_sha256", "dataset_fingerprint", "preset", "seed", "num_images", "data_mode", "settings")


class RecordError(ValueError):
    """A record (or a line of a results file) is malformed."""


@dataclass(frozen=True)
class CellRecord:
    """The outcome of evaluating one model on one cell.

    Attributes:
        model: the registered model name (or a label for reported rows).
        dataset: the dataset spec name, e.g. ``fashion-mnist-c``.
        corruption: one of the 19 corruption names, or ``"clean"``.
        severity: 1..5, or 0 for the clean cell.
        n_correct: top-1 correct predictions.
        n_total: images evaluated.
        seconds: wall time spent on the cell.
        provenance: see :data:`REQUIRED_PROVENANCE`; ``settings`` holds evaluation options.
        recipe: the training recipe of the checkpoint (none, autoaugment, augmix, prime...).
        n_correct_top5: top-5 correct predictions, when computed.
        calibration: per confidence bin ``[count, sum of confidences, number correct]``
            (15 equal-width bins); kept so that shards merge into an exact ECE.
        ci95: 95% bootstrap confidence interval of the top-1 error, when computed.
    """

    model: str
    dataset: str
    corruption: str
    severity: int
    n_correct: int
    n_total: int
    seconds: float
    provenance: Mapping[str, Any]
    recipe: str | None = None
    n_correct_top5: int | None = None
    calibration: tuple[tuple[float, float, float], ...] | None = None
    ci95: tuple[float, float] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _validate(self)
        object.__setattr__(self, "provenance", MappingProxyType(dict(self.provenance)))
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))
        if self.calibration is not None:
            object.__setattr__(self, "calibration", tuple(tuple(float(v) for v in b) for b in self.calibration))
        if self.ci95 is not None:
            object.__setattr__(self, "ci95", (float(self.ci95[0]), float(self.ci95[1])))

    @property
    def cell(self) -> tuple[str, int]:
        return (self.corruption, self.severity)

    @property
    def top1_error(self) -> float:
        return 1.0 - self.n_correct / self.n_total

    @property
    def top5_error(self) -> float | None:
        return None if self.n_correct_top5 is None else 1.0 - self.n_correct_top5 / self.n_total

    def correct_mask(self):
        """Per-image top-1 correctness (numpy bool array) when the record keeps it, else None."""
        import numpy as np

        bits = self.extra.get("correct_bits")
        if bits is None:
            return None
        return np.unpackbits(np.frombuffer(base64.b64decode(bits), dtype=np.uint8), count=self.n_total).astype(bool)

    @property
    def ece(self) -> float | None:
        """Expected calibration error from the stored bins (None when not computed)."""
        if self.calibration is None:
            return None
        total = sum(b[0] for b in self.calibration)
        if total == 0:
            return None
        return sum(abs(b[1] - b[2]) for b in self.calibration) / total

    def to_json(self) -> dict:
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["provenance"] = dict(self.provenance)
        data["extra"] = dict(self.extra)
        if self.calibration is not None:
            data["calibration"] = [list(b) for b in self.calibration]
        if self.ci95 is not None:
            data["ci95"] = list(self.ci95)
        # Derived values are written for readers without this package (they are recomputed on load).
        data["top1_error"] = self.top1_error
        data["top5_error"] = self.top5_error
        data["ece"] = self.ece
        return {"schema": SCHEMA_NAME, "schema_version": SCHEMA_VERSION, **data}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "CellRecord":
        """Build a record from its JSON form.

        Raises:
            RecordError: when the schema is unknown or newer, or a field is missing or wrong.
        """
        if not isinstance(data, Mapping):
            raise RecordError(f"a record must be a JSON object, got {type(data).__name__}")
        if data.get("schema") != SCHEMA_NAME:
            raise RecordError(f"not a robustbench_pp cell record (schema={data.get('schema')!r})")
        version = data.get("schema_version")
        if not _is_int(version) or version < 1:
            raise RecordError(f"bad schema_version {version!r}")
        if version > SCHEMA_VERSION:
            raise RecordError(
                f"schema_version {version} is newer than this robustbench_pp understands ({SCHEMA_VERSION}); "
                "upgrade robustbench_pp to read it"
            )
        # Every writer of this schema writes every field; an unknown or missing key is a damaged
        # or hand-edited line, whose meaning cannot be trusted (a misspelt "recipe" would be lost).
        fields = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - fields - {"schema", "schema_version", *_DERIVED})
        if unknown:
            raise RecordError(f"unknown field(s) for schema_version {version}: {', '.join(map(str, unknown))}")
        missing = [f for f in cls.__dataclass_fields__ if f not in data]
        if missing:
            raise RecordError(f"record lacks field(s): {', '.join(missing)}")
        try:
            record = cls(**{k: data[k] for k in fields})
        except TypeError as exc:
            raise RecordError(str(exc)) from None
        _check_derived(record, data)
        return record


#: Values written for readers without this package; recomputed on load and checked against the counts.
_DERIVED = ("top1_error", "top5_error", "ece")


def _check_derived(record: CellRecord, data: Mapping[str, Any]) -> None:
    for name in _DERIVED:
        if name not in data:
            continue
        written, actual = data[name], getattr(record, name)
        if written is None and actual is None:
            continue
        if written is None or actual is None or not _is_number(written) or abs(written - actual) > 1e-9:
            raise RecordError(f"{name} {written!r} disagrees with the record's counts ({actual!r})")


def encode_correct_mask(correct) -> str:
    """Pack per-image correctness into bits, base64 (the ``extra["correct_bits"]`` field).

    Kept in records so that run-level bootstrap intervals and shard merges are exact.
    """
    import numpy as np

    return base64.b64encode(np.packbits(np.asarray(correct, dtype=bool)).tobytes()).decode("ascii")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    """A finite int or float (not a bool: JSON ``true`` is no number)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _validate(record: CellRecord) -> None:
    """Every field on its own and against the others: a record that passes means one thing."""
    for name in ("model", "dataset"):
        if not isinstance(getattr(record, name), str) or not getattr(record, name):
            raise RecordError(f"{name} must be a non-empty string, got {getattr(record, name)!r}")
    if record.recipe is not None and not isinstance(record.recipe, str):
        raise RecordError(f"recipe must be a string or null, got {record.recipe!r}")
    _validate_cell(record.corruption, record.severity)
    _validate_counts(record)
    if not (_is_number(record.seconds) and record.seconds >= 0):
        raise RecordError(f"seconds must be a finite non-negative number, got {record.seconds!r}")
    _validate_provenance(record.provenance)
    if record.calibration is not None:
        _validate_calibration(record.calibration, record.n_total, record.n_correct)
    if record.ci95 is not None:
        ci = record.ci95
        if not (isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_is_number(v) for v in ci)):
            raise RecordError(f"ci95 must be [low, high] (finite numbers), got {ci!r}")
        if not (0.0 <= ci[0] <= ci[1] <= 1.0):
            raise RecordError(f"ci95 must satisfy 0 <= low <= high <= 1, got {ci!r}")
    if not isinstance(record.extra, Mapping):
        raise RecordError("extra must be a mapping")
    if record.extra.get("correct_bits") is not None:
        _validate_correct_bits(record.extra["correct_bits"], record.n_total, record.n_correct)


def _validate_cell(corruption, severity) -> None:
    # Severities are integers: JSON 1.0 or true equal 1 in Python, but no writer of ours makes them.
    if not _is_int(severity):
        raise RecordError(f"severity must be an integer, got {severity!r}")
    if corruption == CLEAN:
        if severity != CLEAN_SEVERITY:
            raise RecordError(f"the clean cell has severity {CLEAN_SEVERITY}, got {severity!r}")
    elif not isinstance(corruption, str) or corruption not in ALL_CORRUPTIONS:
        raise RecordError(f"unknown corruption {corruption!r}")
    elif severity not in SEVERITIES:
        raise RecordError(f"severity must be 1..5 for {corruption}, got {severity!r}")


def _validate_counts(record: CellRecord) -> None:
    if not (_is_int(record.n_total) and record.n_total > 0):
        raise RecordError(f"n_total must be a positive integer, got {record.n_total!r}")
    for name in ("n_correct", "n_correct_top5"):
        value = getattr(record, name)
        if value is None and name == "n_correct_top5":
            continue
        if not (_is_int(value) and 0 <= value <= record.n_total):
            raise RecordError(f"{name} must be an integer in [0, n_total={record.n_total}], got {value!r}")
    if record.n_correct_top5 is not None and record.n_correct_top5 < record.n_correct:
        raise RecordError("n_correct_top5 is smaller than n_correct")


def _optional_int(provenance: Mapping, key: str, minimum: int) -> None:
    value = provenance.get(key)
    if value is not None and not (_is_int(value) and value >= minimum):
        raise RecordError(f"provenance {key} must be an integer >= {minimum} or null, got {value!r}")


def _validate_provenance(provenance) -> None:
    """The keys every record carries, and the types of those that code computes with."""
    if not isinstance(provenance, Mapping):
        raise RecordError("provenance must be a mapping")
    missing = [k for k in REQUIRED_PROVENANCE if k not in provenance]
    if missing:
        raise RecordError(f"provenance lacks: {', '.join(missing)}")
    for key, minimum in (("num_images", 1), ("bootstrap_seed", 0), ("bootstrap_resamples", 1), ("batch_size", 1),
                         ("world_size", 1)):
        _optional_int(provenance, key, minimum)
    seed = provenance.get("seed")
    if seed is not None and not _is_int(seed):
        raise RecordError(f"provenance seed must be an integer or null, got {seed!r}")
    shard = provenance.get("shard")
    if shard is not None and not _is_shard(shard):
        raise RecordError(f"provenance shard must be 'i/n' with 0 <= i < n, or null; got {shard!r}")
    settings = provenance.get("settings")
    if settings is not None and not isinstance(settings, Mapping):
        raise RecordError(f"provenance settings must be a mapping or null, got {settings!r}")


def _is_shard(value) -> bool:
    if not isinstance(value, str) or value.count("/") != 1:
        return False
    index, count = value.split("/")
    if not (index.isdigit() and count.isdigit() and index.isascii() and count.isascii()):
        return False
    return 0 <= int(index) < int(count)


def _validate_calibration(bins, n_total: int, n_correct: int) -> None:
    """Bins of [count, confidence sum, correct count]: whole counts that add up to the cell's."""
    if not isinstance(bins, (list, tuple)) or not bins or not all(isinstance(b, (list, tuple)) and len(b) == 3 for b in bins):
        raise RecordError("calibration must be a list of [count, confidence sum, correct sum] bins")
    if any(not all(_is_number(v) and v >= 0 for v in b) for b in bins):
        raise RecordError("calibration bins must hold finite non-negative numbers")
    slack = 1e-6 * max(1, n_total)
    for count, confidence, correct in bins:
        if count != round(count) or correct != round(correct) or correct > count or confidence > count + slack:
            raise RecordError(f"calibration bin {[count, confidence, correct]} is impossible "
                              "(whole counts, correct <= count, confidence sum <= count)")
    if round(sum(b[0] for b in bins)) != n_total or round(sum(b[2] for b in bins)) != n_correct:
        raise RecordError(f"calibration bins count {sum(b[0] for b in bins):g} images and {sum(b[2] for b in bins):g} "
                          f"correct, the record n_total={n_total} and n_correct={n_correct}")


def _validate_correct_bits(bits, n_total: int, n_correct: int) -> None:
    """Packed per-image correctness: exactly n_total bits (zero padding), n_correct of them set."""
    import binascii

    import numpy as np

    if not isinstance(bits, str):
        raise RecordError(f"correct_bits must be a base64 string, got {type(bits).__name__}")
    try:
        packed = base64.b64decode(bits.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise RecordError("correct_bits is not valid base64") from None
    if len(packed) != (n_total + 7) // 8:
        raise RecordError(f"correct_bits holds {len(packed)} bytes; n_total={n_total} needs {(n_total + 7) // 8}")
    unpacked = np.unpackbits(np.frombuffer(packed, dtype=np.uint8))
    if unpacked[n_total:].any():
        raise RecordError(f"correct_bits has bits set beyond n_total={n_total}")
    if int(unpacked.sum()) != n_correct:
        raise RecordError(f"correct_bits marks {int(unpacked.sum())} images correct, n_correct says {n_correct}")
