"""Click parameter types for the numbers of the command line: checked where they are parsed.

Every integer or float option of ``rbpp`` uses a click range type or one of these, so a bad
value fails at the boundary with exit 2 and a message naming the option
(``tests/test_cli_options.py`` walks every command and holds this for options added later).
"""

from __future__ import annotations

import math

import click


class FiniteFloatRange(click.FloatRange):
    """A :class:`click.FloatRange` that also refuses ``nan`` and ``inf`` (which compare false
    with every bound, so a plain range lets ``nan`` through)."""

    name = "finite float range"

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


class BatchSizeType(click.ParamType):
    """A batch size: a whole number of at least 1, or ``auto`` (the largest that fits the GPU)."""

    name = "integer|auto"

    def convert(self, value, param, ctx):
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        try:
            number = int(str(value).strip())
        except ValueError:
            self.fail(f"{value!r} is neither a whole number nor 'auto'.", param, ctx)
        if number < 1:
            self.fail(f"{value!r} is not a positive whole number (or 'auto').", param, ctx)
        return number


#: Counts of things (images, processes, pixels): at least 1.
COUNT = click.IntRange(min=1)
#: Seeds: whole numbers from 0.
SEED = click.IntRange(min=0)
#: Batch sizes of ``rbpp evaluate``.
BATCH_SIZE = BatchSizeType()
