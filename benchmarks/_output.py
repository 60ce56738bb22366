"""What every benchmark script writes: its numbers as JSON, replaced atomically (a reader of the
file never sees half of it, and a failed run leaves the previous file as it was)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_json(path, data) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)
