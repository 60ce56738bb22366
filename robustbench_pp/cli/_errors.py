"""Library errors as command-line messages.

The library speaks of its parameters, written in backticks (``batch_size must be positive``
reads "`batch_size` must be positive"); the command line knows which flag sets each one.
:func:`with_flags` rewrites every backticked parameter name that the running command has as
an option into that option's flag, and :func:`library_errors` turns library exceptions into
a one-line :class:`click.ClickException` (exit 1, no traceback) with that rewriting.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping

import click

_PARAMETER = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)`")


def option_flags(command: click.Command | None, aliases: Mapping[str, str] | None = None) -> dict[str, str]:
    """Parameter name -> flag for every option of ``command`` (its longest spelling), plus aliases.

    Args:
        command: the click command whose options are mapped (None: only ``aliases``).
        aliases: library parameter names that a command sets under another name
            (e.g. ``{"num_workers": "--workers"}``).
    """
    flags: dict[str, str] = {}
    for param in getattr(command, "params", ()):
        if isinstance(param, click.Option) and param.name:
            flags[param.name] = max(param.opts, key=len)
    flags.update(aliases or {})
    return flags


def with_flags(text: str, command: click.Command | None = None, aliases: Mapping[str, str] | None = None) -> str:
    """``text`` with each backticked parameter the command sets replaced by its flag.

    Example:
        >>> import click
        >>> cmd = click.Command("x", params=[click.Option(["--batch-size"])])
        >>> with_flags("`batch_size` must be positive; `seed` is unused", cmd)
        '--batch-size must be positive; `seed` is unused'
    """
    flags = option_flags(command, aliases)
    return _PARAMETER.sub(lambda match: flags.get(match.group(1), match.group(0)), text)


@contextlib.contextmanager
def library_errors(*kinds: type[BaseException], aliases: Mapping[str, str] | None = None) -> Iterator[None]:
    """Run library code; turn ``kinds`` (default ValueError and OSError) into ClickExceptions.

    The message names the running command's flags instead of the library's parameter names.
    """
    kinds = kinds or (ValueError, OSError)
    try:
        yield
    except kinds as exc:
        context = click.get_current_context(silent=True)
        raise click.ClickException(with_flags(str(exc), context.command if context else None, aliases)) from None
