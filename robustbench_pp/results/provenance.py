"""What produced a result: code, libraries, machine, data and checkpoint."""

from __future__ import annotations

import datetime as _dt
import shlex
import subprocess
import sys
from pathlib import Path

from robustbench_pp import __version__


def git_commit(path: Path | None = None) -> str | None:
    """The project's git commit (with ``+dirty`` when the tree has changes), or None."""
    root = Path(path) if path else Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if dirty else commit


def environment(device: str | None = None) -> dict:
    """Package, torch, torchvision and CUDA versions, and the device name."""
    import torch
    import torchvision

    name = device or "cpu"
    if device and device.startswith("cuda") and torch.cuda.is_available():
        name = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return {
        "package_version": __version__,
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "cuda_version": torch.version.cuda,
        "device": name,
        "git_commit": git_commit(),
        "python_version": sys.version.split()[0],
    }


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def command_line(argv: list[str] | None = None) -> str:
    """The exact command that is running, shell-quoted."""
    argv = sys.argv if argv is None else argv
    program = Path(argv[0]).name if argv else "rbpp"
    return shlex.join([program, *argv[1:]])
