"""Numbers reported in papers, shown as their own clearly marked leaderboard rows.

A reported file is JSON (see ``results/reported/pushpull-net-imagenet.json``)::

    {"schema": "robustbench_pp.reported", "schema_version": 1,
     "citation": "...", "dataset": "imagenet-c", "baseline": "<label of a row>",
     "rows": [{"label": "...", "model": "...", "recipe": "...", "clean_error": 0.269,
               "unnormalized_mean_error": 0.667, "mce": null, "r_net_unnormalized": 0.0}, ...]}

Errors are fractions; R_net values are in percent. A paper's numbers must be stored under the
name of what they are: ``unnormalized_mean_error`` for a plain mean of errors, ``mce`` only for
an AlexNet-normalised one; ``r_net_unnormalized`` for an R_net computed from the former,
``r_net_mce`` from the latter. ``r_net`` (the key of files written before the two were named)
is read as ``r_net_unnormalized``: the PushPull-Net table's R_net is computed from its
unnormalised error.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from robustbench_pp.report.leaderboard import REPORTED, LeaderboardRow

SCHEMA_NAME = "robustbench_pp.reported"
SCHEMA_VERSION = 1

_FRACTIONS = ("clean_error", "mce", "relative_mce", "unnormalized_mean_error", "mean_ece")
_LEGACY_R_NET = "r_net"  # schema 1 files before the two R_net values were named


class ReportedFileError(ValueError):
    """A reported-numbers file is malformed; the message names the file and the entry."""


def _fraction(value, where: str, key: str, allow_above_one: bool = False) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ReportedFileError(f"{where}: {key} must be a number or null, got {value!r}")
    if value < 0 or (value > 1 and not allow_above_one):
        raise ReportedFileError(f"{where}: {key}={value} is not a fraction in [0, 1] (store 26.9% as 0.269)")
    return float(value)


def _percent(value, where: str, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ReportedFileError(f"{where}: {key} must be a number (percent) or null, got {value!r}")
    return float(value)


def _r_net_values(entry: dict, where: str) -> dict[str, float | None]:
    """``r_net_unnormalized`` and ``r_net_mce`` of an entry (``r_net`` read as the former)."""
    if _LEGACY_R_NET in entry and "r_net_unnormalized" in entry:
        raise ReportedFileError(f"{where}: give r_net_unnormalized or its old name r_net, not both")
    unnormalized = entry.get("r_net_unnormalized", entry.get(_LEGACY_R_NET))
    return {
        "r_net_unnormalized": _percent(unnormalized, where, "r_net_unnormalized"),
        "r_net_mce": _percent(entry.get("r_net_mce"), where, "r_net_mce"),
    }


def load_reported(path: str | os.PathLike) -> list[LeaderboardRow]:
    """Read a reported-numbers file into leaderboard rows marked ``"reported"``.

    Args:
        path: a JSON file in the format of this module's docstring.

    Returns:
        One row per entry of ``rows``, with the file's citation and dataset.

    Raises:
        ReportedFileError: when the file is missing, not JSON, of another schema or a newer
            version, or an entry lacks ``label``/``model`` or holds a bad number.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportedFileError(f"reported-numbers file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReportedFileError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA_NAME:
        raise ReportedFileError(f"{path}: not a reported-numbers file (expected \"schema\": \"{SCHEMA_NAME}\")")
    version = data.get("schema_version")
    if not isinstance(version, int) or not 1 <= version <= SCHEMA_VERSION:
        raise ReportedFileError(f"{path}: unsupported schema_version {version!r} (this robustbench_pp reads {SCHEMA_VERSION})")
    for key in ("citation", "dataset", "rows"):
        if not data.get(key):
            raise ReportedFileError(f"{path}: missing {key!r}")
    if not isinstance(data["rows"], list):
        raise ReportedFileError(f"{path}: 'rows' must be a list")
    rows = []
    labels = set()
    for index, entry in enumerate(data["rows"]):
        where = f"{path}: rows[{index}]"
        if not isinstance(entry, dict):
            raise ReportedFileError(f"{where}: must be an object")
        label, model = entry.get("label"), entry.get("model")
        if not isinstance(label, str) or not label or not isinstance(model, str) or not model:
            raise ReportedFileError(f"{where}: needs non-empty 'label' and 'model' strings")
        if label in labels:
            raise ReportedFileError(f"{where}: label {label!r} appears twice")
        labels.add(label)
        values = {key: _fraction(entry.get(key), where, key, allow_above_one=key in ("mce", "relative_mce")) for key in _FRACTIONS}
        r_nets = _r_net_values(entry, where)
        has_r_net = any(value is not None for value in r_nets.values())
        num_images = entry.get("num_images", data.get("num_images"))
        rows.append(
            LeaderboardRow(
                dataset=str(data["dataset"]),
                model=model,
                recipe=entry.get("recipe"),
                label=label,
                source=REPORTED,
                num_images=num_images if isinstance(num_images, int) else None,
                reference=entry.get("reference"),
                baseline=data.get("baseline") if has_r_net else None,
                citation=str(data["citation"]),
                note=entry.get("note"),
                **values,
                **r_nets,
            )
        )
    return rows
