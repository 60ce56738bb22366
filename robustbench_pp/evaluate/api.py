"""``evaluate_model``: the benchmark for any ``torch.nn.Module``, from Python.

The same run as ``rbpp evaluate`` (same cells, records, provenance and results file), for a
model you built yourself::

    import robustbench_pp
    model = MyNet(num_classes=10)
    model.load_state_dict(torch.load("my_net.pt"))
    run = robustbench_pp.evaluate_model(model, dataset="fashion-mnist-c", name="my-net",
                                        mean=(0.2190,) * 3, std=(0.3318,) * 3,
                                        out="results/my-net__fashion-mnist-c.jsonl",
                                        on_the_fly=True, limit=1000, device="cpu")
    print(1 - run.records[0].n_correct / run.records[0].n_total)   # clean error E
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from torch import nn

from robustbench_pp.evaluate.distributed import parse_shard
from robustbench_pp.evaluate.errors import EvaluationError, as_evaluation_error
from robustbench_pp.evaluate.model import dataset_preprocessing
from robustbench_pp.evaluate.runner import EvalSettings, RunResult, run_evaluation

#: The run options evaluate_model accepts (the fields of EvalSettings that a module does not decide).
RUN_OPTIONS = tuple(
    f.name for f in dataclasses.fields(EvalSettings)
    if f.name not in ("dataset", "model", "checkpoint", "num_classes", "stem", "width", "mean", "std", "input_size")
)


def evaluate_model(
    model: nn.Module,
    *,
    dataset: str,
    name: str,
    mean,
    std,
    input_size: int | None = None,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    shard: str | None = None,
    **options,
) -> RunResult:
    """Evaluate a ``torch.nn.Module`` on the clean cell and every corruption cell of a dataset.

    The model maps a normalised float N×3×H×W batch to N×classes logits (classes: the
    dataset's). It is put in eval mode and moved to the run's device; its output is checked
    on two blank images before anything is written. The run's identity (resume, merge, check,
    metrics, report) covers ``name`` and a sha256 of the model's state_dict.

    Args:
        model: any ``nn.Module``.
        dataset: a dataset spec name (``rbpp datasets`` lists them).
        name: the model's name in the records.
        mean, std: per-channel normalisation of [0, 1] RGB pixels (3 values each).
        input_size: square side the model expects (default: the dataset's image size); a
            different size needs ``allow_mismatch=True`` (inputs resized on the device).
        out: the JSON Lines results file to append to (None: records kept in memory only).
        resume: continue ``out`` (cells already recorded by the same run are skipped).
        shard: ``"i/n"``: evaluate only part i of n of the images (combine the shard files
            with ``rbpp merge``).
        **options: the run options of ``rbpp evaluate`` (:data:`RUN_OPTIONS`): ``on_the_fly``,
            ``limit``, ``corruptions``, ``severities``, ``device``, ``precision``,
            ``batch_size``, ``data_root``, ``source_root``, ``seed``, ``subset_seed``,
            ``protocol``, ``allow_mismatch``, ``num_workers``, ...

    Returns:
        A :class:`~robustbench_pp.evaluate.RunResult`; ``run.records`` holds every
        :class:`~robustbench_pp.results.CellRecord` of the run (clean first).

    Raises:
        EvaluationError: a bad option (named in backticks), a model whose output is not
            N×classes, missing data, or a results file of another run.
    """
    if not isinstance(model, nn.Module):
        raise EvaluationError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(name, str) or not name.strip():
        raise EvaluationError(f"`name` must be a non-empty string, got {name!r}")
    unknown = sorted(set(options) - set(RUN_OPTIONS))
    if unknown:
        raise EvaluationError(f"unknown option(s) {', '.join(f'`{o}`' for o in unknown)}; "
                              f"accepted: {', '.join(RUN_OPTIONS)}")
    for key in ("corruptions", "severities"):
        if options.get(key) is not None:
            options[key] = tuple(options[key])
    options.setdefault("command", f"robustbench_pp.evaluate_model(name={name!r}, dataset={dataset!r})")
    settings = EvalSettings(dataset=dataset, model=name, **options)
    with as_evaluation_error():
        from robustbench_pp.datasets import get_dataset
        from robustbench_pp.models.external import card_for, preprocessing

        spec = get_dataset(dataset)
        prep = preprocessing(mean, std, input_size, defaults=dataset_preprocessing(spec))
        card = card_for(model, name=name, source="python", target=f"{type(model).__module__}.{type(model).__qualname__}",
                        num_classes=spec.num_classes, prep=prep)
        part = parse_shard(shard)
    return run_evaluation(settings, out=Path(out) if out is not None else None, resume=resume, shard=part,
                          model=(model, card))
