"""The training loop behind ``rbpp train``: deterministic on CPU, resumable, checkpoint per epoch.

One run, in steps: check the output folder (and the saved state when resuming), load the
data, build the model and its optimiser, restore the saved state, then per epoch train,
measure and save. Bit-reproducibility on the CPU and what it depends on:
:mod:`robustbench_pp.train.reproducibility`; the batches: :mod:`robustbench_pp.train.batches`;
several processes under torchrun: :mod:`robustbench_pp.train.distributed`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from robustbench_pp.models import ModelCard, build_from_card, get_card, save_checkpoint
from robustbench_pp.models.checkpoints import atomic_torch_save
from robustbench_pp.preprocessing import normalize, normalize_float
from robustbench_pp.train import augment as aug
from robustbench_pp.train import distributed
from robustbench_pp.train.batches import FolderData, InMemoryData, check_shares, steps_per_epoch
from robustbench_pp.train.config import TrainConfig, resume_conflicts
from robustbench_pp.train.data import (
    FOLDER_DATASETS,
    NORMALISATION,
    NUM_CLASSES,
    balanced_subset,
    indices_fingerprint,
    input_size_of,
    load_dataset,
)
from robustbench_pp.train.distributed import Ranks
from robustbench_pp.train.recipes import RECIPES, onecycle_factors
from robustbench_pp.train.reproducibility import pinned_threads, reproducibility_record

STATE_FILE = "train_state.pt"
CHECKPOINT_STEM = "model"  # model.safetensors + model.json in the output folder
ONECYCLE_WARMUP = 0.3  # OneCycleLR's pct_start: the share of steps spent warming up


@dataclass
class TrainResult:
    """What a finished (or resumed-and-finished) run produced."""

    checkpoint: Path  # the JSON card
    history: list[dict] = field(default_factory=list)  # per epoch: loss, test error, seconds


@dataclass(frozen=True)
class _Run:
    """What every step of one run reads: the resolved config and its derived constants."""

    config: TrainConfig
    card: ModelCard  # what the checkpoint carries (the dataset's normalisation and input size)
    out: Path
    device: torch.device
    ranks: Ranks
    memory_format: torch.memory_format
    mean: torch.Tensor  # 1×3×1×1 on the device
    std: torch.Tensor
    command: str

    @property
    def autocast(self) -> bool:
        return self.device.type == "cuda" and RECIPES[self.config.recipe].autocast_on_cuda


@dataclass
class _Optimisation:
    """The mutable training state: saved every epoch, restored on resume."""

    model: torch.nn.Module  # DDP-wrapped with several processes
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype
    steps_per_epoch: int

    @property
    def module(self) -> torch.nn.Module:
        return distributed.unwrapped(self.model)


def make_scheduler(optimizer, config: TrainConfig, steps_per_epoch: int):
    """The per-batch learning-rate schedule of a resolved config.

    ``onecycle`` is PyTorch's OneCycleLR with the PushPull-Net runs' arguments: 30% warm-up,
    cosine, ``div_factor = int(lr / lr_start)``, ``final_div_factor = int(lr / 5e-5)`` and
    torch's default momentum cycling (0.95 → 0.85 → 0.95, overriding SGD's momentum).
    """
    total = config.epochs * steps_per_epoch
    if config.schedule == "onecycle":
        div_factor, final_div_factor = onecycle_factors(config.lr, config.lr_start, RECIPES[config.recipe].onecycle_end_lr)
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.lr, epochs=config.epochs, steps_per_epoch=steps_per_epoch,
            pct_start=ONECYCLE_WARMUP, anneal_strategy="cos", div_factor=div_factor, final_div_factor=final_div_factor,
        )
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
    milestones = [int(0.5 * total), int(0.75 * total)]
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)


def _error_over(model, batches, mean, std, memory_format) -> float:
    """Top-1 error of ``model`` over ``(uint8 images on its device, labels)`` batches.

    The images are normalised by :func:`robustbench_pp.preprocessing.normalize`, as the
    evaluation engine does, so the number matches ``rbpp evaluate``'s clean cell.
    """
    model.eval()
    wrong = total = 0
    with torch.inference_mode():
        for images, labels in batches:
            logits = model(normalize(images, mean, std).contiguous(memory_format=memory_format))
            wrong += int((logits.argmax(1).cpu() != labels.cpu()).sum())
            total += len(labels)
    return wrong / max(total, 1)


def evaluate_error(model, images: torch.Tensor, labels: torch.Tensor, mean, std, device, batch_size: int = 500) -> float:
    """Top-1 error (fraction) of ``model`` on uint8 N×3×H×W ``images`` (normalised as in evaluation)."""
    memory_format = torch.channels_last if torch.device(device).type == "cuda" else torch.contiguous_format
    batches = ((images[s : s + batch_size].to(device), labels[s : s + batch_size]) for s in range(0, len(images), batch_size))
    return _error_over(model, batches, [float(v) for v in torch.as_tensor(mean).flatten()],
                       [float(v) for v in torch.as_tensor(std).flatten()], memory_format)


def train(config: TrainConfig, *, resume: bool = False, command: str | None = None, progress: bool = True) -> TrainResult:
    """Train a registered model; write ``model.safetensors`` + ``model.json`` every epoch.

    Deterministic on CPU for a given seed: the same weights bit for bit at the same thread
    count (``config.threads``, default 1), torch version and CPU instruction set (see
    :mod:`robustbench_pp.train.reproducibility`; the card records all three). The model is
    initialised from ``seed`` and every epoch re-seeds the generators from ``(seed, epoch)``
    before shuffling and augmenting, so a resumed run continues exactly. On CUDA the
    ``standard`` recipe uses autocast (bfloat16 where supported, else float16 with a grad
    scaler) and ``pushpull`` fp32, both channels_last; CUDA runs are not bit-reproducible.
    Under torchrun with several processes it trains with DistributedDataParallel
    (:mod:`robustbench_pp.train.distributed`); only rank 0 writes.

    Args:
        config: the run (see :class:`TrainConfig`).
        resume: continue from ``<out>/train_state.pt`` (written atomically each epoch).
        command: the command line to record (default: ``sys.argv``).
        progress: show a tqdm bar per epoch (rank 0).

    Returns:
        :class:`TrainResult` with the card path and the per-epoch history.

    Raises:
        ValueError: bad config, an output folder that already holds a run (without
            ``resume``), or a resume whose config differs from the saved one.
    """
    config = config.resolved()
    ranks = distributed.join(torch.device(config.device))
    try:
        saved = _saved_state(config, resume)
        with pinned_threads(config.threads, deterministic_algorithms=torch.device(config.device).type == "cpu"):
            run = _prepare_run(config, command, ranks)  # first: a bad model setting fails before the data loads
            data = _load_data(config)
            state = _build_optimisation(run, data.num_train)
            start_epoch, history = _restore(state, saved)
            for epoch in range(start_epoch, config.epochs):
                history.append(_train_epoch(run, state, data, epoch, progress and ranks.is_writer))
                if ranks.is_writer:
                    _save_epoch(run, state, data.info, history)
                distributed.barrier(ranks)
    finally:
        distributed.leave(ranks)
    card_path = run.out / f"{CHECKPOINT_STEM}.json"
    if not card_path.exists():  # resumed a run that had already finished: nothing was rewritten
        raise ValueError(f"{run.out}: training state says all {config.epochs} epochs are done but {card_path} is missing")
    return TrainResult(card_path, history)


def _saved_state(config: TrainConfig, resume: bool) -> dict | None:
    """The saved training state to continue from, after checking it may be continued."""
    out = Path(config.out)
    state_path = out / STATE_FILE
    if not state_path.exists():
        if resume:
            raise ValueError(f"`resume` given but {state_path} does not exist")
        return None
    if not resume:
        raise ValueError(f"{out} already holds a training run ({STATE_FILE}); pass `resume` to continue it "
                         "or choose another `out`")
    saved = torch.load(state_path, map_location="cpu", weights_only=True)
    changed = resume_conflicts(saved["config"], config)
    if changed:
        raise ValueError(f"cannot resume {out}: the config differs from the saved run: "
                         + ", ".join(f"{k} saved {a!r} now {b!r}" for k, (a, b) in changed.items()))
    return saved


def _load_data(config: TrainConfig) -> InMemoryData | FolderData:
    if config.dataset in FOLDER_DATASETS:
        return _load_folders(config)
    train_images, train_labels = load_dataset(config.dataset, "train", data_root=config.data_root, download=config.download)
    test_images, test_labels = load_dataset(config.dataset, "test", data_root=config.data_root)
    subset = balanced_subset(train_labels, config.limit_train, config.seed)
    test_count = len(test_labels) if config.limit_test is None else min(config.limit_test, len(test_labels))
    info = {
        "dataset": config.dataset, "train_images": len(subset), "test_images": test_count,
        "limit_train": config.limit_train, "subset_sha256": indices_fingerprint(subset), "root": config.data_root,
    }
    return InMemoryData(
        config=config, train_x=_channels_first(train_images[subset]), train_y=torch.from_numpy(train_labels[subset]),
        test_x=_channels_first(test_images[:test_count]), test_y=torch.from_numpy(test_labels[:test_count]),
        info=info,
    )


def _load_folders(config: TrainConfig) -> FolderData:
    """The class-folder training set (listed, not read) and its validation images."""
    from robustbench_pp.datasets import get_dataset, open_clean_source
    from robustbench_pp.train.folders import FolderTrainSet, list_training_folder

    if config.download:
        raise ValueError(f"`download` applies to cifar10 only; {config.dataset} is read from `data_root`")
    listing = list_training_folder(config.dataset, config.data_root)
    subset = balanced_subset(listing.labels, config.limit_train, config.seed)
    val_spec = get_dataset(FOLDER_DATASETS[config.dataset])
    val_source = open_clean_source(val_spec, source_root=config.val_root)  # names `source_root` when missing
    if tuple(val_source.class_names) != listing.class_names:
        raise ValueError(f"the validation folder {val_source.root} (`val_root`) has other classes than the training "
                         f"folder {listing.root}")
    val_indices = balanced_subset(val_source.labels, config.limit_test, 0)
    recipe = RECIPES[config.recipe]
    train_set = FolderTrainSet(
        paths=tuple(listing.paths[i] for i in subset), labels=listing.labels[subset], augment=config.augment,
        augmix_all_ops=recipe.augmix_all_ops, augment_before_crop=recipe.augment_before_crop, jsd=bool(config.jsd),
        seed=config.seed,
    )
    info = {
        "dataset": config.dataset, "train_images": len(subset), "test_images": len(val_indices),
        "limit_train": config.limit_train, "subset_sha256": indices_fingerprint(subset),
        "listing_sha256": listing.fingerprint(), "root": str(listing.root), "val_root": str(val_source.root),
        "val_fingerprint": val_source.fingerprint(), "train_crop": "Resize(256)+RandomCrop(224)+flip",
        "val_geometry": val_spec.geometry,
    }
    return FolderData(config=config, train_set=train_set, val_source=val_source, val_indices=val_indices, info=info)


def _channels_first(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def _prepare_run(config: TrainConfig, command: str | None, ranks: Ranks) -> _Run:
    device = distributed.device_of(config.device, ranks)
    mean, std = NORMALISATION[config.dataset]
    card = get_card(config.model, num_classes=NUM_CLASSES[config.dataset], stem=config.stem, width=config.width,
                    inhibition_mode=config.inhibition_mode, mean=mean, std=std, input_size=input_size_of(config.dataset))
    # channels_last only on CUDA. On CPU it was 15-20% faster for width 8, but torch 2.14's
    # oneDNN backward corrupts memory (segfault / "corrupted size vs. prev_size") for ResNets
    # of width 2, 4 and 6 in channels_last, so CPU runs stay in the default layout.
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    return _Run(
        config=config, card=card, out=Path(config.out), device=device, ranks=ranks, memory_format=memory_format,
        mean=torch.tensor(mean, device=device).view(1, 3, 1, 1), std=torch.tensor(std, device=device).view(1, 3, 1, 1),
        command=command if command is not None else shlex.join(sys.argv),
    )


def _build_optimisation(run: _Run, train_images: int) -> _Optimisation:
    """The model (initialised from the seed), SGD, the per-batch schedule and the grad scaler."""
    config = run.config
    steps = steps_per_epoch(config, train_images)
    check_shares(config, train_images, run.ranks)
    torch.manual_seed(config.seed)
    model = build_from_card(run.card).to(run.device, memory_format=run.memory_format)
    model = distributed.wrap(model, run.ranks, run.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=RECIPES[config.recipe].momentum,
                                weight_decay=config.weight_decay, nesterov=False)
    amp_dtype = torch.bfloat16 if run.autocast and torch.cuda.is_bf16_supported() else torch.float16
    return _Optimisation(
        model=model, optimizer=optimizer, scheduler=make_scheduler(optimizer, config, steps),
        scaler=torch.amp.GradScaler("cuda", enabled=run.autocast and amp_dtype == torch.float16),
        amp_dtype=amp_dtype, steps_per_epoch=steps,
    )


def _restore(state: _Optimisation, saved: dict | None) -> tuple[int, list[dict]]:
    """Load a saved state into ``state``; the epoch to start from and the history so far."""
    if saved is None:
        return 0, []
    state.module.load_state_dict(saved["model"])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.scheduler.load_state_dict(saved["scheduler"])
    state.scaler.load_state_dict(saved["scaler"])
    return int(saved["epoch"]), [dict(h) for h in json.loads(saved["history_json"])]


def _train_epoch(run: _Run, state: _Optimisation, data, epoch: int, progress: bool) -> dict:
    """One epoch of SGD, then the test error when due (rank 0); the epoch's history entry."""
    from tqdm import tqdm

    config = run.config
    state.model.train()
    started, loss_sum = time.perf_counter(), 0.0
    bar = tqdm(total=state.steps_per_epoch, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
               disable=not progress, dynamic_ncols=True)
    for step, (views, labels, global_size) in enumerate(data.epoch(epoch, run.ranks, run.device)):
        loss_sum += _train_step(run, state, views, labels, global_size)
        bar.update(1)
        if progress:
            bar.set_postfix(loss=f"{loss_sum / (step + 1):.3f}", lr=f"{state.scheduler.get_last_lr()[0]:.3g}")
    bar.close()
    train_seconds = time.perf_counter() - started
    last = epoch + 1 == config.epochs
    measure = run.ranks.is_writer and (last or (config.eval_every > 0 and (epoch + 1) % config.eval_every == 0))
    test_error = None
    if measure:
        test_error = _error_over(state.module, data.validation(run.device), run.card.mean, run.card.std,
                                 run.memory_format)
    entry = {"epoch": epoch + 1, "train_loss": loss_sum / state.steps_per_epoch, "test_error": test_error,
             "train_seconds": round(train_seconds, 2),
             "eval_seconds": round(time.perf_counter() - started - train_seconds, 2)}
    if progress:
        error_text = f"test error {100 * test_error:.2f}%" if test_error is not None else "test error not measured"
        print(f"epoch {epoch + 1}/{config.epochs}: loss {entry['train_loss']:.4f}, {error_text}, "
              f"{train_seconds:.1f}s train", file=sys.stderr)
    return entry


def _train_step(run: _Run, state: _Optimisation, views: list[torch.Tensor], labels: torch.Tensor,
                global_size: int) -> float:
    """One optimiser step on this process's share of a batch; the share's mean loss."""
    target = labels.to(run.device, non_blocking=True)
    x = torch.cat(views).to(run.device, non_blocking=True)
    x = normalize_float(x, run.mean, run.std).contiguous(memory_format=run.memory_format)
    with torch.autocast(run.device.type, dtype=state.amp_dtype, enabled=run.autocast):
        logits = state.model(x)
        if len(views) == 3:
            clean, aug1, aug2 = logits.chunk(3)
            jsd_weight = RECIPES[run.config.recipe].jsd_weight
            loss = F.cross_entropy(clean.float(), target) + jsd_weight * aug.jensen_shannon_loss(clean, aug1, aug2)
        else:
            loss = F.cross_entropy(logits.float(), target)
    # DDP averages the ranks' gradients; weighting each share's mean by its size makes that
    # average the gradient of the global batch's mean loss, also for unequal shares.
    scaled = loss * (len(target) * run.ranks.world / global_size) if run.ranks.world > 1 else loss
    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(scaled).backward()
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.scheduler.step()
    return float(loss.detach())


def _save_epoch(run: _Run, state: _Optimisation, data_info: dict, history: list[dict]) -> None:
    """Save the resumable state, then the exported checkpoint (weights, then card).

    A kill between the two leaves a consistent train_state.pt; the card's weights sha256
    detects a half-updated weights/card pair.
    """
    config, epoch = run.config, history[-1]["epoch"]
    atomic_torch_save(
        {
            "epoch": epoch,
            "model": {k: v.detach().cpu() for k, v in state.module.state_dict().items()},
            "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict(),
            "scaler": state.scaler.state_dict(),
            "config": dataclasses.asdict(config),
            "history_json": json.dumps(history),
        },
        run.out / STATE_FILE,
    )
    save_checkpoint(state.module, run.out / CHECKPOINT_STEM, card=run.card, info=_card_info(run, data_info, history))


def _card_info(run: _Run, data_info: dict, history: list[dict]) -> dict:
    """The checkpoint card's entries besides the model card: recipe, data, metrics, provenance."""
    config, epoch = run.config, history[-1]["epoch"]
    recipe = RECIPES[config.recipe]
    momentum = "0.95 -> 0.85 -> 0.95 (one-cycle)" if config.schedule == "onecycle" else recipe.momentum
    return {
        "recipe": {
            "name": config.recipe, "augment": config.augment, "jsd": config.jsd, "epochs": config.epochs,
            "batch_size": config.batch_size, "lr": config.lr, "weight_decay": config.weight_decay,
            "schedule": config.schedule, "optimizer": "sgd", "momentum": momentum,
            "last_partial_batch": "kept" if recipe.keep_last_batch else "dropped",
            "precision": "autocast" if run.autocast else "fp32",
        },
        "seed": config.seed,
        "data": data_info,
        "metrics": {
            "clean_test_error": next((h["test_error"] for h in reversed(history) if h["test_error"] is not None), None),
            "clean_test_images": data_info["test_images"],
            "epochs_done": epoch,
            "history": history,
        },
        "epoch": epoch,
        "complete": epoch == config.epochs,
        "command": run.command,
        "train_config": dataclasses.asdict(config),
        "device": str(config.device),
        "processes": run.ranks.world,
        "torch_threads": torch.get_num_threads(),
        "reproducibility": reproducibility_record(run.device),
    }
