"""Forked worker processes that never outlive the process that started them.

A pool worker whose parent is killed (``kill -9``, the OOM killer) is re-parented to PID 1
and would go on corrupting images, holding hundreds of MB, for nobody. Two guards:

- on Linux, :func:`die_with_parent` asks the kernel to send the worker SIGKILL when its
  parent dies (``prctl(PR_SET_PDEATHSIG)``), then checks that the parent has not died already;
- everywhere, long loops call :func:`exit_if_orphaned`, which compares ``os.getppid()``
  with the pid recorded at start-up (re-parenting changes it).
"""

from __future__ import annotations

import os
import signal
import sys

_PR_SET_PDEATHSIG = 1
_parent_pid: int | None = None


def die_with_parent(parent_pid: int) -> None:
    """Make this (forked) process exit when ``parent_pid``, its parent, dies. Call it first in a
    worker's initializer; ``parent_pid`` is the parent's ``os.getpid()`` taken before forking."""
    global _parent_pid
    _parent_pid = parent_pid
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl: the getppid checks remain
            pass
    exit_if_orphaned()  # the parent may have died before the request above


def exit_if_orphaned() -> None:
    """Exit at once (no clean-up: the parent owns every file) when the parent has died."""
    if _parent_pid is not None and os.getppid() != _parent_pid:
        os._exit(1)
