"""One evaluation run: checkpoint + dataset -> a record per cell, through ``robustbench_pp.results``.

The chain is: settings -> model (card decides preprocessing) -> data (opened and checked) ->
audit (input size) -> plan of cells (clean first) -> per cell: evaluate, reduce across
ranks, and on the writing rank append one record. With ``resume``, cells recorded by the
same run are skipped; a file from a different run is refused. Killing the process loses at
most the cell in flight (records are appended atomically, one per finished cell).

The model is a registered one (:func:`robustbench_pp.models.create_model`), one given in an
external form (``PATH.py:FACTORY``, ``package.module:FACTORY``, ``torchvision/NAME``,
``timm/NAME``, an entry point: :mod:`robustbench_pp.models.external`), or a module handed to
:func:`run_evaluation` directly (:func:`robustbench_pp.evaluate.evaluate_model`). The
``protocol`` (``imagenet-c`` or ``pushpull-net``) decides how clean ImageNet images are framed;
it is recorded in every record and, when not the default, in the run's identity.

Bad settings and an output folder that cannot be written fail before any work. Data found
damaged in the middle of a run (an image that cannot be decoded) stops it, and a results file
that this invocation created is removed: its records were computed on data known to be
damaged, and nothing that looks like a run is left behind.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustbench_pp import results
from robustbench_pp.evaluate.distributed import Partition, local_device, reduce_outcome
from robustbench_pp.evaluate.engine import CellOutcome, Forward, evaluate_cell, find_batch_size, resolve_device
from robustbench_pp.evaluate.errors import EvaluationError
from robustbench_pp.evaluate.errors import as_evaluation_error as _as_evaluation_error
from robustbench_pp.evaluate.model import build_model, ready_model
from robustbench_pp.evaluate.preflight import check_output, check_output_folder, check_settings, data_errors
from robustbench_pp.metrics.bootstrap import bootstrap_error_ci
from robustbench_pp.names import ALL_CORRUPTIONS, CLEAN, CLEAN_SEVERITY, DEFAULT_PROTOCOL, PROTOCOLS


@dataclass(frozen=True)
class EvalSettings:
    """Everything that defines an evaluation run (the CLI fills it from its options)."""

    dataset: str
    model: str | None = None  # registered name or an external form; optional with a checkpoint that carries a card
    checkpoint: str | None = None  # None: random weights (tests, pipeline benchmarks) or the factory's
    num_classes: int | None = None
    stem: str | None = None
    width: int | None = None
    mean: tuple[float, ...] | None = None  # external models only (None: the family's or the dataset's usual)
    std: tuple[float, ...] | None = None  # external models only
    input_size: int | None = None  # external models only (None: the family's or the dataset's image size)
    protocol: str = DEFAULT_PROTOCOL  # clean ImageNet framing: "imagenet-c" or "pushpull-net"
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
    """What a run did: the records of this invocation and those found when resuming.

    Attributes:
        out: the results file (None: records kept in memory only).
        written: records of the cells evaluated now.
        skipped: records of the cells found already done (``resume``).
        seconds, images: totals of the cells evaluated now.
        card: the model card the run used (its name and preprocessing).
    """

    out: Path | None
    written: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    seconds: float = 0.0
    images: int = 0
    card: Any = None

    @property
    def records(self) -> list:
        """Every record of the run, clean cell first, then corruptions in canonical order."""
        def order(record) -> tuple[int, int]:
            return (-1 if record.corruption == CLEAN else ALL_CORRUPTIONS.index(record.corruption), record.severity)

        return sorted([*self.skipped, *self.written], key=order)

    def add(self, record) -> None:
        """Count a record written by this invocation."""
        self.written.append(record)
        self.seconds += record.seconds
        self.images += record.n_total


def open_data(settings: EvalSettings):
    """The dataset to evaluate, opened and checked (files, or clean images corrupted on the fly).

    Raises:
        EvaluationError: missing or damaged files, or a selection the dataset does not have.
    """
    from robustbench_pp.datasets import open_corrupted

    with _as_evaluation_error():
        return open_corrupted(settings.dataset, data_root=settings.data_root, source_root=settings.source_root,
                              on_the_fly=settings.on_the_fly, seed=settings.seed,
                              jpeg_roundtrip=settings.jpeg_roundtrip, corruptions=settings.corruptions,
                              severities=settings.severities, protocol=settings.protocol)


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
            "wrong `model`/`checkpoint` or wrong `dataset`?"
        )
    if card.input_size == spec.image_size:
        return None
    message = (f"{spec.name} images are {spec.image_size}×{spec.image_size} px but {card.name} expects "
               f"{card.input_size}×{card.input_size} (card)")
    if not allow_mismatch:
        raise EvaluationError(message + ": pick the matching dataset (e.g. cifar10-c-224 for 224 px models) "
                              "or pass `allow_mismatch` to resize on the device (recorded in the results)")
    warnings.warn(message + "; resizing on the device because of `allow_mismatch`", stacklevel=2)
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
    identity = {
        "precision": settings.precision,
        "subset": None if settings.limit is None else {"limit": settings.limit, "seed": settings.subset_seed},
        "jpeg_roundtrip": settings.jpeg_roundtrip,
        "resize_to": resize_to,
        "model_card": card.to_dict(),
        **settings.extra_settings,
    }
    if settings.protocol != DEFAULT_PROTOCOL:  # absent means the default: runs from before protocols keep their identity
        identity["protocol"] = settings.protocol
    return identity




@dataclass(frozen=True)
class _Inputs:
    """The opened model and data of a run, and what the settings make of them.

    Attributes:
        model: in eval mode on ``device`` (compiled when asked).
        card: the model card (its preprocessing, input size, classes).
        data: the opened dataset.
        device: where the model runs.
        resize_to: the side inputs are resized to (``allow_mismatch``), or None.
        cells: the planned cells, clean first.
        num_images: images per cell (the whole cell, also when this process takes a share).
        positions: the images this process evaluates (its rank's part of its shard).
        checkpoint_sha256: the weights' hash, or "random-init".
        recipe: the checkpoint's training recipe, if it says.
    """

    model: torch.nn.Module
    card: Any
    data: Any
    device: torch.device
    resize_to: int | None
    cells: tuple[tuple[str, int], ...]
    num_images: int
    positions: np.ndarray
    checkpoint_sha256: str
    recipe: str | None


def _device(settings: EvalSettings) -> torch.device:
    with _as_evaluation_error():
        return local_device(resolve_device(settings.device))


def _open_inputs(settings: EvalSettings, partition: Partition, shard: Partition, prepared=None) -> _Inputs:
    """Open and audit the model and the data, plan the cells and pick this process's images.

    ``prepared`` is ``(module, card)`` for a model handed over by the caller (evaluate_model).
    """
    if settings.protocol not in PROTOCOLS:
        raise EvaluationError(f"`protocol` must be one of {', '.join(PROTOCOLS)}, got {settings.protocol!r}")
    device = _device(settings)
    with _as_evaluation_error():
        model = build_model(settings) if prepared is None else None
        card = model.card if prepared is None else prepared[1]
        data = open_data(settings)
        resize_to = audit_input(card, data.spec, settings.allow_mismatch)
        cells = plan_cells(data.available_cells(), settings.corruptions, settings.severities)
        subset = _subset_positions(data, settings)
        ready = ready_model(model if prepared is None else prepared[0], card, device, settings.compile)
    return _Inputs(
        model=ready.module, card=card, data=data, device=device,
        resize_to=resize_to, cells=tuple(cells), num_images=len(subset),
        positions=partition.take(shard.take(subset)),
        checkpoint_sha256=ready.weights_sha256, recipe=ready.recipe,
    )


def _forward_and_batch_size(settings: EvalSettings, inputs: _Inputs) -> tuple[Forward, int]:
    """The chunked forward pass and the batch size (``"auto"``: the largest that fits the GPU)."""
    forward = Forward(inputs.model, inputs.card.mean, inputs.card.std, inputs.device, settings.precision,
                      resize_to=inputs.resize_to)
    batch_size = settings.batch_size
    if batch_size == "auto":
        batch_size = find_batch_size(forward, inputs.resize_to or inputs.data.spec.image_size)
    return forward, int(batch_size)  # check_settings refused anything but a whole number or "auto"


def _provenance(settings: EvalSettings, inputs: _Inputs, batch_size: int, partition: Partition,
                shard: Partition) -> dict:
    """What every record of the run says produced it (all but its creation time)."""
    data = inputs.data
    return {
        **results.provenance.environment(str(inputs.device)),
        "checkpoint_sha256": inputs.checkpoint_sha256,
        "checkpoint_path": settings.checkpoint,
        "dataset_fingerprint": data.fingerprint(),
        "data": data.describe(),
        "preset": data.spec.preset,
        "seed": settings.seed if data.mode == "on-the-fly" else data.seed,
        "num_images": inputs.num_images,  # the whole cell, also in shard files (identity)
        "data_mode": data.mode,
        "protocol": settings.protocol,
        "command": settings.command,
        "settings": _settings_identity(settings, inputs.resize_to, inputs.card),
        "batch_size": batch_size,
        "world_size": partition.world,
        "shard": None if shard.world == 1 else f"{shard.rank}/{shard.world}",
        "bootstrap_seed": settings.subset_seed,
        "bootstrap_resamples": settings.bootstrap_resamples,
    }


@dataclass(frozen=True)
class _CellWriter:
    """Turns a cell's outcome into a record and appends it to the results file, if any."""

    out: Path | None
    model: str
    dataset: str
    recipe: str | None
    provenance: Mapping[str, Any]

    def write(self, cell: tuple[str, int], outcome: CellOutcome) -> results.CellRecord:
        """The cell's record (with its bootstrap interval), appended to ``out`` before returning."""
        corruption, severity = cell
        ci = bootstrap_error_ci(outcome.correct, resamples=self.provenance["bootstrap_resamples"],
                                seed=self.provenance["bootstrap_seed"])
        record = results.CellRecord(
            model=self.model, dataset=self.dataset, corruption=corruption, severity=severity,
            n_correct=outcome.n_correct, n_total=outcome.n_total, seconds=round(outcome.seconds, 4),
            provenance={**self.provenance, "created_utc": results.provenance.utc_now()},
            recipe=self.recipe, n_correct_top5=outcome.n_correct_top5,
            calibration=outcome.calibration.tolist(), ci95=ci,
            extra={"correct_bits": results.encode_correct_mask(outcome.correct)},
        )
        if self.out is not None:
            results.append_records(self.out, [record])
        return record

    def done_cells(self, resume: bool) -> dict:
        """Cells this run already recorded in ``out`` (when resuming); another run's file is refused."""
        if self.out is None or not resume:
            return {}
        with _as_evaluation_error():
            return results.completed_cells(self.out, results.identity(self.model, self.dataset, self.provenance))


@dataclass(frozen=True)
class _Session:
    """Everything needed to evaluate one cell after another."""

    inputs: _Inputs
    forward: Forward
    batch_size: int
    num_workers: int | None
    partition: Partition
    writer: _CellWriter

    def run_cell(self, cell: tuple[str, int], on_batch: Callable[[int], None] | None) -> results.CellRecord | None:
        """Evaluate a cell, combine the ranks' counts and write its record (None on other ranks)."""
        device = self.inputs.device
        batches = self.inputs.data.batches(*cell, batch_size=self.batch_size, indices=self.inputs.positions,
                                           device=device, pin_memory=device.type == "cuda",
                                           num_workers=self.num_workers)
        outcome = evaluate_cell(self.forward, batches, on_batch=on_batch)
        merged = reduce_outcome(outcome, self.partition, device if device.type == "cuda" else torch.device("cpu"))
        return None if merged is None else self.writer.write(cell, merged)


def _open_session(settings: EvalSettings, out: Path | None, partition: Partition, shard: Partition,
                  prepared=None) -> _Session:
    """Open the model and data and set up the forward pass and the record writer."""
    inputs = _open_inputs(settings, partition, shard, prepared)
    forward, batch_size = _forward_and_batch_size(settings, inputs)
    writer = _CellWriter(out=out, model=inputs.card.name, dataset=inputs.data.spec.name, recipe=inputs.recipe,
                         provenance=_provenance(settings, inputs, batch_size, partition, shard))
    return _Session(inputs, forward, batch_size, settings.num_workers, partition, writer)


def _cell_progress(progress: Callable | None, overall, cell: tuple[str, int], images: int):
    """A per-batch callback that advances the cell's bar and the whole run's bar (None: no bars)."""
    if progress is None:
        return None
    corruption, severity = cell
    cell_bar = progress(images, f"{corruption} {severity}" if severity else "clean")

    def callback(n: int) -> None:
        cell_bar(n)
        overall(n)

    return callback


def run_evaluation(
    settings: EvalSettings,
    *,
    out: str | Path | None,
    resume: bool = False,
    partition: Partition = Partition(),
    shard: Partition = Partition(),
    progress: Callable | None = None,
    model: tuple[torch.nn.Module, Any] | None = None,
    announce: Callable[[str], None] | None = None,
) -> RunResult:
    """Evaluate every planned cell and append a record per cell to ``out``.

    Args:
        settings: the run's definition.
        out: the JSON Lines file (written by rank 0 only); None to keep records in memory.
        resume: skip cells already in ``out`` from the same run; without it an existing
            ``out`` is refused so that nothing is overwritten or mixed.
        partition: this process's rank among torchrun processes.
        shard: this job's slice ``i/n`` of the images (cluster job arrays).
        progress: factory ``progress(total_images, description) -> callback(n)`` for bars;
            called once with description "all cells" for the whole run, then once per cell.
        model: ``(module, card)`` to evaluate instead of building ``settings.model``.
        announce: called with one line describing an external model's preprocessing once
            the model and data are open (the command line prints it).

    Returns:
        A :class:`RunResult`: the records written now and those found when resuming.

    Raises:
        EvaluationError: bad combination of inputs, with the reason.
    """
    out = Path(out) if out is not None else None
    check_settings(settings)
    check_output_folder(out)
    # The writing rank holds `out` from the existence check to the last record: a second run on
    # the same file fails at once instead of recording cells twice or interleaving its own.
    with results.writer_lock(out if partition.is_writer else None):
        created = check_output(out, resume)
        session = _open_session(settings, out, partition, shard, model)
        card = session.inputs.card
        if announce is not None and hasattr(card, "describe"):
            announce(card.describe())
        cells, images = session.inputs.cells, len(session.inputs.positions)
        done = session.writer.done_cells(resume)
        run = RunResult(out=out, skipped=[done[c] for c in cells if c in done], card=card)
        todo = [c for c in cells if c not in done]
        overall = progress(len(todo) * images, "all cells") if progress and todo else None
        try:
            for cell in todo:
                record = session.run_cell(cell, _cell_progress(progress, overall, cell, images))
                if record is not None:
                    run.add(record)
        except data_errors() as exc:
            kept = "" if out is None else f"; {out} keeps the records it had before this run"
            if created and partition.is_writer and out.exists():
                out.unlink()
                kept = f"; {out} was removed: its records were computed on this damaged data"
            raise EvaluationError(f"{exc}{kept}") from None
    return run


def default_out(settings: EvalSettings, shard: Partition = Partition()) -> Path:
    """Where a run's records go unless told: ``results/<model>__<dataset>[.shard-i-of-n].jsonl``.

    ``<model>`` is the model's name (an external form's label, with characters other than
    letters, digits, ``.``, ``_`` and ``-`` replaced by ``-``), or the checkpoint's file stem
    when no name is given.
    """
    import re

    from robustbench_pp.models.external import label_of

    name = label_of(settings.model) if settings.model else Path(settings.checkpoint or "random-init").stem
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name)
    suffix = "" if shard.world == 1 else f".shard-{shard.rank}-of-{shard.world}"
    return Path("results") / f"{name}__{settings.dataset}{suffix}.jsonl"


def _subset_positions(data, settings: EvalSettings) -> np.ndarray:
    """All positions, or the fixed class-balanced seeded subset of ``limit`` images."""
    from robustbench_pp.datasets import balanced_subset

    with _as_evaluation_error():
        return balanced_subset(data.labels, settings.limit, settings.subset_seed)
