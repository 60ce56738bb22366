"""Numbers reported in papers, shown as their own clearly marked leaderboard rows.

A reported file is JSON (see ``results/reported/pushpull-net-imagenet.json``)::

    {"schema": "robustbench_pp.reported", "schema_version": 1,
     "citation": "...", "dataset": "imagenet-c", "baseline": "<label of a row>",
     "rows": [{"label": "...", "model": "...", "recipe": "...", "clean_error": 0.269,
               "unnormalized_mean_error": 0.667, "mce": null, "r_net": 0.0}, ...]}

Errors are fractions; ``r_net`` is in percent. A paper's "mCE" must be stored under the
name of what it is: ``unnormalized_mean_error`` for a plain mean of errors, ``mce`` only for
an AlexNet-normalised one.
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
        r_net = entry.get("r_net")
        if r_net is not None and (isinstance(r_net, bool) or not isinstance(r_net, (int, float)) or not math.isfinite(r_net)):
            raise ReportedFileError(f"{where}: r_net must be a number (percent) or null, got {r_net!r}")
        num_images = entry.get("num_images", data.get("num_images"))
        rows.append(
            LeaderboardRow(
                dataset=str(data["dataset"]),
                model=model,
                recipe=entry.get("recipe"),
                label=label,
                source=REPORTED,
                r_net=None if r_net is None else float(r_net),
                num_images=num_images if isinstance(num_images, int) else None,
                reference=entry.get("reference"),
                baseline=data.get("baseline") if r_net is not None else None,
                citation=str(data["citation"]),
                note=entry.get("note"),
                **values,
            )
        )
    return rows
