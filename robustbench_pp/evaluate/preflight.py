"""What a run checks before it does any work, and how it tells data errors from others.

Bad settings (a negative batch size or worker count, an unknown device) and an output folder
that cannot be written (under a regular file, read-only) fail here with one message naming
the parameter or the folder, before a model is loaded or a record written.
"""

from __future__ import annotations

from pathlib import Path

from robustbench_pp import arguments
from robustbench_pp.evaluate.errors import EvaluationError, as_evaluation_error
from robustbench_pp.fileio import writable_folder


def check_settings(settings) -> None:
    """Check the numbers and the device of a run's ``EvalSettings``.

    Raises:
        EvaluationError: naming the parameter and the value.
    """
    with as_evaluation_error():
        if settings.batch_size != "auto":
            arguments.whole_number("batch_size", settings.batch_size)
        arguments.whole_number("num_workers", settings.num_workers, minimum=0, optional=True)
        arguments.whole_number("limit", settings.limit, optional=True)
        arguments.whole_number("num_classes", settings.num_classes, optional=True)
        arguments.whole_number("width", settings.width, optional=True)
        arguments.whole_number("input_size", getattr(settings, "input_size", None), optional=True)
        arguments.whole_number("subset_seed", settings.subset_seed, minimum=0)
        arguments.whole_number("seed", settings.seed, minimum=0)
        arguments.whole_number("bootstrap_resamples", settings.bootstrap_resamples)
        arguments.resolve_device(settings.device)


def check_output_folder(out: Path | None) -> None:
    """Refuse an output folder that cannot be created or written (before its lock is taken:
    the lock file lives there).

    Raises:
        EvaluationError: naming the folder.
    """
    if out is not None:
        with as_evaluation_error():
            writable_folder(out.parent)


def check_output(out: Path | None, resume: bool) -> bool:
    """Refuse to overwrite or mix into an existing results file unless resuming it (under the
    results file's lock, so that two runs cannot both find it absent).

    Returns:
        Whether this run creates the file (it holds no record yet).

    Raises:
        EvaluationError: naming the file.
    """
    if out is None:
        return False
    exists = out.exists() and out.stat().st_size > 0
    if exists and not resume:
        raise EvaluationError(f"{out} already exists: pass `resume` to continue it, or choose another `out`")
    return not exists


def data_errors() -> tuple[type[BaseException], ...]:
    """The errors that mean the data itself is damaged (as opposed to the machine or the model)."""
    from robustbench_pp.datasets import DataNotFoundError, LayoutError, ManifestError

    return LayoutError, ManifestError, DataNotFoundError
