"""The evaluation's error: every reason a run cannot start or continue, as one message."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class EvaluationError(ValueError):
    """The run cannot start or continue; the message says why and what to do."""


@contextlib.contextmanager
def as_evaluation_error() -> Iterator[None]:
    """Library errors (bad model, data or results file) re-raised as :class:`EvaluationError`."""
    try:
        yield
    except EvaluationError:
        raise
    except (ValueError, OSError) as exc:
        raise EvaluationError(str(exc)) from None
