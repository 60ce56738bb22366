"""What produced a result: code, libraries, machine, data and checkpoint."""

from __future__ import annotations

import datetime as _dt
import shlex
import sys
from pathlib import Path

from robustbench_pp._version import __version__
from robustbench_pp.code_identity import git_commit


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
