"""The bytes of a results file: one record per line, and what an unfinished last line can be.

Every line this package writes is :data:`SIGNATURE` followed by the record's other fields as
sorted JSON (printable ASCII, no NaN or Infinity) and a newline. The newline is the last byte
of a write, so a file whose last line lacks it holds one of three things there:

- a complete record that only misses its newline (hand-copied files): it is a record like any
  other, read as such, and an append writes the missing newline first;
- this package's own torn write (a writer killed mid-``write``): printable ASCII that begins
  with the signature (or is a beginning of it) and never closes its top-level object, after
  lines that are all valid records. Readers drop it with a :class:`TornLineWarning`; the
  next append cuts it off;
- anything else: the file is not a results file, or someone edited it. It is refused and
  never changed.

Each line also carries :data:`DIGEST_KEY`, the sha256 of its content: a line changed after it
was written (a flipped severity digit stays a valid record otherwise) is refused. Lines
without it (written before it existed, or deliberately edited with it removed) are still
checked field by field. Parsing is strict: NaN, Infinity, numbers that overflow to infinity
and duplicate keys are errors, as nothing of ours writes them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from robustbench_pp.results.schema import SCHEMA_NAME, CellRecord, RecordError

#: How every line this package writes begins (the schema first, then the sorted fields).
SIGNATURE = ('{"schema": ' + json.dumps(SCHEMA_NAME) + ", ").encode("ascii")
#: The key of a line's own digest: sha256 of the canonical JSON of the line's other keys.
DIGEST_KEY = "record_sha256"


class ResultsFileError(ValueError):
    """A results file cannot be read or does not fit the requested use; names the file."""


class TornLineWarning(UserWarning):
    """The last line of a results file was cut by a killed writer and is ignored."""


def _digest(data: dict) -> str:
    canonical = json.dumps(data, sort_keys=True, allow_nan=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def encode(record: CellRecord) -> bytes:
    """One record as the line this package writes: signature, sorted fields and digest, newline."""
    data = record.to_json()
    data[DIGEST_KEY] = _digest(data)
    data.pop("schema")
    body = json.dumps(data, sort_keys=True, allow_nan=False)
    return SIGNATURE + body[1:].encode("ascii") + b"\n"


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


def _constant(name: str):
    raise ValueError(f"{name} is not a number a results file may hold")


def _unique(pairs: list) -> dict:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        duplicated = sorted({key for key in keys if keys.count(key) > 1})
        raise ValueError(f"duplicate key(s) {', '.join(map(repr, duplicated))}")
    return dict(pairs)


def decode(line: bytes, where: str) -> CellRecord:
    """The record of one line (``where`` is ``file:line`` for messages).

    Raises:
        ResultsFileError: not strict JSON, or not a valid record.
    """
    try:
        data = json.loads(line.decode("utf-8"), parse_float=_finite, parse_constant=_constant,
                          object_pairs_hook=_unique)
    except json.JSONDecodeError as exc:
        raise ResultsFileError(f"{where}: not valid JSON ({exc.msg})") from None
    except UnicodeDecodeError:
        raise ResultsFileError(f"{where}: not valid JSON (not UTF-8 text)") from None
    except (ValueError, RecursionError) as exc:  # our hooks, int digit limits, absurd nesting
        raise ResultsFileError(f"{where}: not valid JSON ({exc})") from None
    if isinstance(data, dict) and DIGEST_KEY in data:
        written = data.pop(DIGEST_KEY)
        if written != _digest(data):
            raise ResultsFileError(f"{where}: {DIGEST_KEY} does not match the line: it was changed after it was "
                                   f"written (remove {DIGEST_KEY} to accept a deliberate edit)")
    try:
        return CellRecord.from_json(data)
    except RecordError as exc:
        raise ResultsFileError(f"{where}: {exc}") from None


def is_own_torn_write(tail: bytes) -> bool:
    """Whether an unfinished last line is a strict beginning of a line this package writes.

    It must be printable ASCII, begin with :data:`SIGNATURE` (or be a beginning of it), and
    never close its top-level object: a line that closes it is complete, not torn.
    """
    if not all(0x20 <= byte < 0x7F for byte in tail):
        return False
    if not (tail.startswith(SIGNATURE) or SIGNATURE.startswith(tail)):
        return False
    return _never_closes(tail.decode("ascii"))


def _never_closes(text: str) -> bool:
    """True when ``text``'s brackets (outside strings) nest properly and the first one stays open."""
    pairs = {"}": "{", "]": "["}
    stack: list[str] = []
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            stack.append(char)
        elif char in pairs:
            if not stack or stack.pop() != pairs[char] or not stack:
                return False
    return True


@dataclass(frozen=True)
class Parsed:
    """A results file's content.

    Attributes:
        records: every record, in file order.
        torn_at: offset of this package's own torn last line, or None.
        needs_newline: the last record lacks its newline (an append writes it first).
    """

    records: list[CellRecord]
    torn_at: int | None = None
    needs_newline: bool = False


def parse(raw: bytes, path: str | os.PathLike) -> Parsed:
    """Read every record of a file's bytes (see the module docstring for the last line).

    Raises:
        ResultsFileError: a line that is not a valid record, or an unfinished last line that
            is not this package's torn write; the message names the file and line.
    """
    path = Path(path)
    lines = raw.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    records = [decode(line, f"{path}:{number}") for number, line in enumerate(lines, 1) if line.strip()]
    if not tail:
        return Parsed(records)
    where = f"{path}:{len(lines) + 1}"
    if is_own_torn_write(tail):
        return Parsed(records, torn_at=len(raw) - len(tail))
    try:
        records.append(decode(tail, where))  # a complete record whose newline is missing
    except ResultsFileError as exc:
        raise ResultsFileError(
            f"{exc}; this last line has no newline and is no torn write of this package: refusing to read or "
            f"change {path}"
        ) from None
    return Parsed(records, needs_newline=True)
