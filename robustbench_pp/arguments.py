"""Checks of the numbers and device names that the library takes from its users.

Every library function that takes a count (``batch_size``, ``workers``, ``limit``...), a seed
or a device checks it here, at its own boundary, so that a wrong value fails with one message
naming the parameter (in backticks; the command line shows its flag) instead of silently
meaning something else: ``range(0, n, -4)`` is empty, and ``batch_size or default`` turns 0
into the default. The command line also checks its options with click range types; these
checks hold for library callers too.
"""

from __future__ import annotations

from numbers import Integral

#: Device types the package runs on (torch knows more names; none of the others is supported).
DEVICE_TYPES = ("cpu", "cuda", "mps")


def whole_number(name: str, value, *, minimum: int = 1, optional: bool = False) -> int | None:
    """``value`` as an int after checking it is a whole number (not a bool) of at least ``minimum``.

    Args:
        name: the parameter, as the caller spells it (shown in backticks).
        value: what was passed.
        minimum: the smallest value that means something.
        optional: whether None (the caller's default) is allowed.

    Raises:
        ValueError: naming the parameter and the value.

    Example:
        >>> whole_number("batch_size", 64)
        64
        >>> whole_number("batch_size", -4)
        Traceback (most recent call last):
        ValueError: `batch_size` must be a whole number of at least 1, got -4
    """
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"`{name}` must be a whole number of at least {minimum}, got {value!r}")
    return int(value)


def resolve_device(device: str, *, name: str = "device"):
    """The torch device for ``device``: ``"auto"`` is CUDA when available, else the CPU.

    Args:
        device: "auto", "cpu", "cuda", "cuda:N" or "mps".
        name: the parameter, as the caller spells it.

    Returns:
        A ``torch.device`` that exists here.

    Raises:
        ValueError: an unknown device name, a device type the package does not run on, or a
            device this machine does not have.
    """
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"`{name}` {device!r} is not a device: use auto, cpu, cuda or cuda:N") from None
    if resolved.type not in DEVICE_TYPES:
        raise ValueError(f"`{name}` {device!r} is not supported: use auto, cpu, cuda or cuda:N")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"`{name}` {device} asked for, but no CUDA device is available here (use `{name}` cpu)")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"`{name}` {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"`{name}` {device} asked for, but MPS is not available here (use `{name}` cpu)")
    return resolved


def shard(text: str, *, name: str = "shard") -> tuple[int, int]:
    """``"i/n"`` (0-based ``i``): one slice of a job split ``n`` ways, as ``(i, n)``.

    Raises:
        ValueError: for anything but ``0 <= i < n``, naming the parameter.
    """
    try:
        index, count = (int(part) for part in str(text).split("/"))
    except ValueError:
        raise ValueError(f"`{name}` must look like i/n (e.g. 0/4), got {text!r}") from None
    if not (count >= 1 and 0 <= index < count):
        raise ValueError(f"`{name}` {text}: need 0 <= i < n")
    return index, count
