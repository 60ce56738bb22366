"""One evaluation run: checkpoint + dataset -> a record per cell, through ``robustbench_pp.results``.

The chain is: settings -> model (card decides preprocessing) -> data (opened and checked) ->
audit (input size) -> plan of cells (clean first) -> per cell: evaluate, reduce across
ranks, and on the writing rank append one record. ``--resume`` skips cells recorded by the
same run; a file from a different run is refused. Killing the process loses at most the
cell in flight (records are appended atomically, one per finished cell).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from robustbench_pp.evaluate.distributed import Partition, reduce_outcome
from robustbench_pp.evaluate.engine import Forward, evaluate_cell, find_batch_size
from robustbench_pp.metrics.bootstrap import bootstrap_error_ci
from robustbench_pp.names import CLEAN, CLEAN_SEVERITY


class EvaluationError(ValueError):
    """The run cannot start or continue; the message says why and what to do."""


@dataclass(frozen=True)
class EvalSettings:
    """Everything that defines an evaluation run (the CLI fills it from its flags)."""

    dataset: str
    model: str | None = None  # registered name; optional with a checkpoint that carries a card
    checkpoint: str | None = None  # None: random weights (tests, pipeline benchmarks)
    num_classes: int | None = None
    stem: str | None = None
    width: int | None = None
    data_root: str | None = None  # released/generated corrupted files
    source_root: str | None = None  # clean source
    on_the_fly: bool = False  # corrupt in memory instead of reading files
    jpeg_roundtrip: bool = False  # on the fly: simulate the released JPEG (quality 85) step
    corruptions: tuple[str, ...] | None = None  # None: every available corruption
    severities: tuple[int, ...] | None = None  # None: 1..5
    limit: int | None = None  # class-balanced seeded subset of this many images
    subset_seed: int = 0  # seed of that subset (and of the bootstrap)
    seed: int = 0  # corruption seed (on the fly)
    batch_size: int | str = 256  # or "auto" (largest power of two that fits on the GPU)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast)
    compile: bool = False  # torch.compile the model (pays off on long GPU runs)
    allow_mismatch: bool = False  # evaluate inputs whose size differs from the card's (resized, recorded)
    num_workers: int | None = None  # data loader processes (None: the loader decides)
    bootstrap_resamples: int = 1000
    command: str = ""
    extra_settings: dict = field(default_factory=dict)


@dataclass
class RunResult:
    """What a run did: the records of this invocation and those found when resuming."""

    out: Path | None
    written: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    seconds: float = 0.0
    images: int = 0


def _recipe_of(model) -> str | None:
    checkpoint = getattr(model, "checkpoint", None)
    info = getattr(checkpoint, "info", None) or {}
    recipe = info.get("recipe", info.get("augmentation"))
    if isinstance(recipe, dict):
        recipe = recipe.get("augment") or recipe.get("name")
    return str(recipe) if recipe is not None else None


def build_model(settings: EvalSettings):
    """The model and its card, from the checkpoint (or random weights)."""
    from robustbench_pp.models import create_model

    try:
        model = create_model(settings.model, num_classes=settings.num_classes, stem=settings.stem,
                             checkpoint=settings.checkpoint, width=settings.width)
    except (ValueError, FileNotFoundError, OSError) as exc:
        raise EvaluationError(str(exc)) from None
    return model


def audit_input(card, spec, allow_mismatch: bool) -> int | None:
    """Compare the data's image size and classes with the model card.

    Returns:
        None when the images go in as they are, else the side to resize them to
        (only with ``allow_mismatch``; a warning is issued and the record says so).

    Raises:
        EvaluationError: a class-count mismatch, or a size mismatch without allow_mismatch.
    """
    if card.num_classes != spec.num_classes:
        raise EvaluationError(
            f"the model has {card.num_classes} outputs but {spec.name} has {spec.num_classes} classes: "
            "wrong --model/--checkpoint or wrong --dataset?"
        )
    if card.input_size == spec.image_size:
        return None
    message = (f"{spec.name} images are {spec.image_size}×{spec.image_size} px but {card.name} expects "
               f"{card.input_size}×{card.input_size} (card)")
    if not allow_mismatch:
        raise EvaluationError(message + ": pick the matching dataset (e.g. cifar10-c-224 for 224 px models) "
                              "or pass --allow-mismatch to resize on the device (recorded in the results)")
    warnings.warn(message + "; resizing on the device because of --allow-mismatch", stacklevel=2)
    return card.input_size


def plan_cells(available: Sequence[tuple[str, int]], corruptions, severities) -> list[tuple[str, int]]:
    """The cells to evaluate, clean first, then corruptions in canonical order.

    Raises:
        EvaluationError: when a requested corruption or severity has no data.
    """
    available = list(available)
    plan = [cell for cell in available if cell == (CLEAN, CLEAN_SEVERITY)]
    corrupted = [cell for cell in available if cell[0] != CLEAN]
    wanted = [cell for cell in corrupted
              if (corruptions is None or cell[0] in corruptions) and (severities is None or cell[1] in severities)]
    if corruptions is not None:
        found = {c for c, _ in wanted}
        absent = [c for c in corruptions if c not in found]
        if absent:
            raise EvaluationError(f"no data for corruption(s) {', '.join(absent)} in this dataset")
    return plan + wanted


def _settings_identity(settings: EvalSettings, resize_to: int | None, card) -> dict:
    """The options that change results: they must agree to resume or merge."""
    return {
        "precision": settings.precision,
        "subset": None if settings.limit is None else {"limit": settings.limit, "seed": settings.subset_seed},
        "jpeg_roundtrip": settings.jpeg_roundtrip,
        "resize_to": resize_to,
        "model_card": card.to_dict(),
        **settings.extra_settings,
    }


def run_evaluation(
    settings: EvalSettings,
    *,
    out: str | Path | None,
    resume: bool = False,
    partition: Partition = Partition(),
    shard: Partition = Partition(),
    progress: Callable | None = None,
) -> RunResult:
    """Evaluate every planned cell and append a record per cell to ``out``.

    Args:
        settings: the run's definition.
        out: the JSON Lines file (written by rank 0 only); None to keep records in memory.
        resume: skip cells already in ``out`` from the same run; without it an existing
            ``out`` is refused so that nothing is overwritten or mixed.
        partition: this process's rank among torchrun processes.
        shard: the ``--shard i/n`` slice of the images (cluster job arrays).
        progress: factory ``progress(total_images, description) -> callback(n)`` for bars;
            called once with description "all cells" for the whole run, then once per cell.

    Raises:
        EvaluationError: bad combination of inputs, with the reason.
    """
    from robustbench_pp import results
    from robustbench_pp.datasets import open_corrupted
    from robustbench_pp.evaluate.engine import resolve_device
    from robustbench_pp.evaluate.distributed import local_device

    try:
        device = local_device(resolve_device(settings.device))
    except ValueError as exc:
        raise EvaluationError(str(exc)) from None
    out = Path(out) if out is not None else None
    if out is not None and out.exists() and out.stat().st_size > 0 and not resume:
        raise EvaluationError(f"{out} already exists: pass --resume to continue it, or choose another --out")

    model = build_model(settings)
    card = model.card
    try:
        data = open_corrupted(settings.dataset, data_root=settings.data_root, source_root=settings.source_root,
                              on_the_fly=settings.on_the_fly, seed=settings.seed,
                              jpeg_roundtrip=settings.jpeg_roundtrip, corruptions=settings.corruptions,
                              severities=settings.severities)
    except (ValueError, FileNotFoundError, OSError) as exc:
        raise EvaluationError(str(exc)) from None
    resize_to = audit_input(card, data.spec, settings.allow_mismatch)
    cells = plan_cells(data.available_cells(), settings.corruptions, settings.severities)

    subset = _subset_positions(data, settings)
    positions = partition.take(shard.take(subset))

    model = model.eval().to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if settings.compile:
        model = torch.compile(model)
    forward = Forward(model, card.mean, card.std, device, settings.precision, resize_to=resize_to)
    batch_size = settings.batch_size
    if batch_size == "auto":
        batch_size = find_batch_size(forward, resize_to or data.spec.image_size)
    batch_size = int(batch_size)
    if batch_size < 1:
        raise EvaluationError(f"--batch-size must be positive or 'auto', got {batch_size}")

    checkpoint = getattr(model, "checkpoint", None) or getattr(getattr(model, "_orig_mod", None), "checkpoint", None)
    provenance_common = {
        **results.provenance.environment(str(device)),
        "checkpoint_sha256": getattr(checkpoint, "sha256", None) or "random-init",
        "checkpoint_path": settings.checkpoint,
        "dataset_fingerprint": data.fingerprint(),
        "data": data.describe(),
        "preset": data.spec.preset,
        "seed": settings.seed if data.mode == "on-the-fly" else data.seed,
        "num_images": len(subset),  # the whole cell, also in shard files (identity)
        "data_mode": data.mode,
        "command": settings.command,
        "settings": _settings_identity(settings, resize_to, card),
        "batch_size": batch_size,
        "world_size": partition.world,
        "shard": None if shard.world == 1 else f"{shard.rank}/{shard.world}",
        "bootstrap_seed": settings.subset_seed,
        "bootstrap_resamples": settings.bootstrap_resamples,
    }
    recipe = _recipe_of(model) or _recipe_of(getattr(model, "_orig_mod", None))
    model_name = card.name

    def make_record(corruption, severity, outcome, seconds):
        ci = bootstrap_error_ci(outcome.correct, resamples=settings.bootstrap_resamples, seed=settings.subset_seed)
        return results.CellRecord(
            model=model_name, dataset=data.spec.name, corruption=corruption, severity=severity,
            n_correct=outcome.n_correct, n_total=outcome.n_total, seconds=round(seconds, 4),
            provenance={**provenance_common, "created_utc": results.provenance.utc_now()},
            recipe=recipe, n_correct_top5=outcome.n_correct_top5,
            calibration=outcome.calibration.tolist(), ci95=ci,
            extra={"correct_bits": results.encode_correct_mask(outcome.correct)},
        )

    done = {}
    if out is not None and resume:
        try:
            done = results.completed_cells(out, results.identity(model_name, data.spec.name, provenance_common))
        except results.ResultsFileError as exc:
            raise EvaluationError(str(exc)) from None

    run = RunResult(out=out, skipped=[done[c] for c in cells if c in done])
    todo = [c for c in cells if c not in done]
    overall = progress(len(todo) * len(positions), "all cells") if progress and todo else None
    for corruption, severity in todo:
        callback = None
        if progress:
            cell_bar = progress(len(positions), f"{corruption} {severity}" if severity else "clean")

            def callback(n, cell_bar=cell_bar):
                cell_bar(n)
                overall(n)
        batches = data.batches(corruption, severity, batch_size=batch_size, indices=positions, device=device,
                               pin_memory=device.type == "cuda", num_workers=settings.num_workers)
        outcome = evaluate_cell(forward, batches, on_batch=callback)
        merged = reduce_outcome(outcome, partition, device if device.type == "cuda" else torch.device("cpu"))
        if merged is None:
            continue
        record = make_record(corruption, severity, merged, merged.seconds)
        if out is not None:
            results.append_records(out, [record])
        run.written.append(record)
        run.seconds += merged.seconds
        run.images += merged.n_total
    return run


def _subset_positions(data, settings: EvalSettings) -> np.ndarray:
    """All positions, or the fixed class-balanced seeded subset of ``--limit`` images."""
    from robustbench_pp.datasets import balanced_subset

    try:
        return balanced_subset(data.labels, settings.limit, settings.subset_seed)
    except ValueError as exc:
        raise EvaluationError(str(exc)) from None
