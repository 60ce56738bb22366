"""Line numbers of a TOML file's tables and keys (``tomllib`` parses values but keeps no positions).

:func:`locate` scans the text once and maps ``(table, index, key)`` to the line where the key
is written: ``table`` is the dotted header name, ``index`` the occurrence of an array of tables
(``[[models]]``: 0, 1, ...; 0 for a plain table), ``key`` the key (None: the header line).
Keys of the top level have table "". Only what study files use is recognised: headers, bare
or quoted keys, values spanning several lines inside brackets or triple quotes.
"""

from __future__ import annotations

import re
from collections import Counter

_ARRAY_HEADER = re.compile(r"^\s*\[\[\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\]\s*(#.*)?$")
_HEADER = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\s*(#.*)?$")
_KEY = re.compile(r"^\s*(\"[^\"]*\"|'[^']*'|[A-Za-z0-9_\-]+)\s*=")

Position = tuple[str, int, str | None]


def _bracket_balance(text: str) -> int:
    """Open minus closed brackets/braces outside strings and comments."""
    depth, quote, index = 0, None, 0
    while index < len(text):
        char = text[index]
        if quote:
            if char == "\\" and quote == '"':
                index += 1
            elif char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char == "#":
            break
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        index += 1
    return depth


def locate(text: str) -> dict[Position, int]:
    """``{(table, index, key): line}`` (1-based) for every header and key of ``text``."""
    positions: dict[Position, int] = {}
    seen: Counter = Counter()
    table, index, depth, in_multiline_string = "", 0, 0, None
    for number, line in enumerate(text.splitlines(), start=1):
        if in_multiline_string:
            if line.count(in_multiline_string) % 2 == 1:
                in_multiline_string = None
            continue
        if depth > 0:
            depth += _bracket_balance(line)
            continue
        match = _ARRAY_HEADER.match(line)
        if match:
            table = match.group(1).replace('"', "").replace("'", "").strip()
            index = seen[table]
            seen[table] += 1
            positions[(table, index, None)] = number
            continue
        match = _HEADER.match(line)
        if match:
            table, index = match.group(1).replace('"', "").replace("'", "").strip(), 0
            positions[(table, 0, None)] = number
            continue
        match = _KEY.match(line)
        if match:
            key = match.group(1).strip("\"'")
            positions.setdefault((table, index, key), number)
            value = line[match.end():]
            for fence in ('"""', "'''"):
                if value.count(fence) == 1:
                    in_multiline_string = fence
            if not in_multiline_string:
                depth = max(0, _bracket_balance(value))
    return positions
