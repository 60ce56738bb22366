"""The training loop behind ``rbpp train``: deterministic on CPU, resumable, checkpoint per epoch.

One run, in steps: check the output folder (and the saved state when resuming), load the
data, build the model and its optimiser, restore the saved state, then per epoch train,
measure and save. Bit-reproducibility on the CPU and what it depends on:
:mod:`robustbench_pp.train.reproducibility`.
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
from robustbench_pp.preprocessing import normalize_float
from robustbench_pp.train import augment as aug
from robustbench_pp.train.config import TrainConfig, resume_conflicts
from robustbench_pp.train.data import NORMALISATION, NUM_CLASSES, balanced_subset, indices_fingerprint, load_dataset
from robustbench_pp.train.recipes import RECIPES
from robustbench_pp.train.reproducibility import pinned_threads, reproducibility_record

STATE_FILE = "train_state.pt"
CHECKPOINT_STEM = "model"  # model.safetensors + model.json in the output folder


@dataclass
class TrainResult:
    """What a finished (or resumed-and-finished) run produced."""

    checkpoint: Path  # the JSON card
    history: list[dict] = field(default_factory=list)  # per epoch: loss, test error, seconds


@dataclass(frozen=True)
class _Data:
    """The run's images (uint8 N×3×32×32 tensors) and labels, and their description for the card."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    info: dict


@dataclass(frozen=True)
class _Run:
    """What every step of one run reads: the resolved config and its derived constants."""

    config: TrainConfig
    card: ModelCard  # what the checkpoint carries (the dataset's normalisation, 32 px)
    out: Path
    device: torch.device
    memory_format: torch.memory_format
    mean: torch.Tensor  # 1×3×1×1 on the device
    std: torch.Tensor
    command: str

    @property
    def use_cuda(self) -> bool:
        return self.device.type == "cuda"


@dataclass
class _Optimisation:
    """The mutable training state: saved every epoch, restored on resume."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype
    steps_per_epoch: int


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919 + 17) % (2**63)


def _make_scheduler(optimizer, config: TrainConfig, steps_per_epoch: int):
    total = config.epochs * steps_per_epoch
    if config.schedule == "onecycle":
        recipe = RECIPES[config.recipe]
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.lr, total_steps=total, pct_start=0.3, anneal_strategy="cos",
            div_factor=max(config.lr / recipe.onecycle_start_lr, 1.0), cycle_momentum=False,
        )
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
    milestones = [int(0.5 * total), int(0.75 * total)]
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)


def _training_views(batch_uint8: torch.Tensor, config: TrainConfig) -> list[torch.Tensor]:
    """Augmented float [0,1] views of a uint8 batch: [x] or [clean, aug1, aug2] with JSD."""
    recipe = RECIPES[config.recipe]
    augment = config.augment

    def uint8_aug(batch):
        if augment == "autoaugment":
            return aug.autoaugment(batch, "cifar10")
        if augment == "augmix":
            return aug.augmix(batch, all_ops=recipe.augmix_all_ops)
        return batch

    if augment in ("autoaugment", "augmix") and not config.jsd:
        if recipe.augment_before_crop:
            return [aug.random_crop_flip(uint8_aug(batch_uint8)).float() / 255]
        return [uint8_aug(aug.random_crop_flip(batch_uint8)).float() / 255]
    cropped = aug.random_crop_flip(batch_uint8)
    clean = cropped.float() / 255
    if augment == "augmix":  # with JSD
        return [clean, uint8_aug(cropped).float() / 255, uint8_aug(cropped).float() / 255]
    if augment == "prime":
        views = [aug.prime(clean), aug.prime(clean)] if config.jsd else [aug.prime(clean)]
        return [clean, *views] if config.jsd else views
    return [clean]


def evaluate_error(model, images: torch.Tensor, labels: torch.Tensor, mean, std, device, batch_size: int = 500) -> float:
    """Top-1 error (fraction) of ``model`` on uint8 N×3×H×W ``images``."""
    model.eval()
    memory_format = torch.channels_last if torch.device(device).type == "cuda" else torch.contiguous_format
    wrong = 0
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].to(device, non_blocking=True).float() / 255
            logits = model(normalize_float(x, mean, std).contiguous(memory_format=memory_format))
            wrong += int((logits.argmax(1).cpu() != labels[start : start + batch_size]).sum())
    return wrong / len(images)


def train(config: TrainConfig, *, resume: bool = False, command: str | None = None, progress: bool = True) -> TrainResult:
    """Train a registered model; write ``model.safetensors`` + ``model.json`` every epoch.

    Deterministic on CPU for a given seed: the same weights bit for bit at the same thread
    count (``config.threads``, default 1), torch version and CPU instruction set (see
    :mod:`robustbench_pp.train.reproducibility`; the card records all three). The model is
    initialised from ``seed`` and every epoch re-seeds torch's generator from ``(seed,
    epoch)`` before shuffling and augmenting, so a resumed run continues exactly. On CUDA it
    uses autocast (bfloat16 where supported, else float16 with a grad scaler) and
    channels_last; CUDA runs are not bit-reproducible.

    Args:
        config: the run (see :class:`TrainConfig`).
        resume: continue from ``<out>/train_state.pt`` (written atomically each epoch).
        command: the command line to record (default: ``sys.argv``).
        progress: show a tqdm bar per epoch.

    Returns:
        :class:`TrainResult` with the card path and the per-epoch history.

    Raises:
        ValueError: bad config, an output folder that already holds a run (without
            ``resume``), or a resume whose config differs from the saved one.
    """
    config = config.resolved()
    saved = _saved_state(config, resume)
    with pinned_threads(config.threads, deterministic_algorithms=torch.device(config.device).type == "cpu"):
        run = _prepare_run(config, command)  # first: a bad model setting fails before the data loads
        data = _load_data(config)
        state = _build_optimisation(run, len(data.train_x))
        start_epoch, history = _restore(state, saved)
        for epoch in range(start_epoch, config.epochs):
            history.append(_train_epoch(run, state, data, epoch, progress))
            _save_epoch(run, state, data.info, history)
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


def _load_data(config: TrainConfig) -> _Data:
    train_images, train_labels = load_dataset(config.dataset, "train", data_root=config.data_root, download=config.download)
    test_images, test_labels = load_dataset(config.dataset, "test", data_root=config.data_root)
    subset = balanced_subset(train_labels, config.limit_train, config.seed)
    test_count = len(test_labels) if config.limit_test is None else min(config.limit_test, len(test_labels))
    info = {
        "dataset": config.dataset, "train_images": len(subset), "test_images": test_count,
        "limit_train": config.limit_train, "subset_sha256": indices_fingerprint(subset), "root": config.data_root,
    }
    return _Data(
        train_x=_channels_first(train_images[subset]), train_y=torch.from_numpy(train_labels[subset]),
        test_x=_channels_first(test_images[:test_count]), test_y=torch.from_numpy(test_labels[:test_count]),
        info=info,
    )


def _channels_first(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def _prepare_run(config: TrainConfig, command: str | None) -> _Run:
    device = torch.device(config.device)
    mean, std = NORMALISATION[config.dataset]
    card = get_card(config.model, num_classes=NUM_CLASSES[config.dataset], stem=config.stem, width=config.width,
                    inhibition_mode=config.inhibition_mode, mean=mean, std=std, input_size=32)
    # channels_last only on CUDA. On CPU it was 15-20% faster for width 8, but torch 2.14's
    # oneDNN backward corrupts memory (segfault / "corrupted size vs. prev_size") for ResNets
    # of width 2, 4 and 6 in channels_last, so CPU runs stay in the default layout.
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    return _Run(
        config=config, card=card, out=Path(config.out), device=device, memory_format=memory_format,
        mean=torch.tensor(mean, device=device).view(1, 3, 1, 1), std=torch.tensor(std, device=device).view(1, 3, 1, 1),
        command=command if command is not None else shlex.join(sys.argv),
    )


def _build_optimisation(run: _Run, train_images: int) -> _Optimisation:
    """The model (initialised from the seed), SGD, the per-batch schedule and the grad scaler."""
    config = run.config
    steps_per_epoch = train_images // config.batch_size  # drop the last partial batch (BN needs > 1)
    if steps_per_epoch == 0:
        raise ValueError(f"{train_images} training images are fewer than one batch of {config.batch_size} (`batch_size`)")
    torch.manual_seed(config.seed)
    model = build_from_card(run.card).to(run.device, memory_format=run.memory_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=RECIPES[config.recipe].momentum,
                                weight_decay=config.weight_decay, nesterov=False)
    amp_dtype = torch.bfloat16 if run.use_cuda and torch.cuda.is_bf16_supported() else torch.float16
    return _Optimisation(
        model=model, optimizer=optimizer, scheduler=_make_scheduler(optimizer, config, steps_per_epoch),
        scaler=torch.amp.GradScaler("cuda", enabled=run.use_cuda and amp_dtype == torch.float16),
        amp_dtype=amp_dtype, steps_per_epoch=steps_per_epoch,
    )


def _restore(state: _Optimisation, saved: dict | None) -> tuple[int, list[dict]]:
    """Load a saved state into ``state``; the epoch to start from and the history so far."""
    if saved is None:
        return 0, []
    state.model.load_state_dict(saved["model"])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.scheduler.load_state_dict(saved["scheduler"])
    state.scaler.load_state_dict(saved["scaler"])
    return int(saved["epoch"]), [dict(h) for h in json.loads(saved["history_json"])]


def _train_epoch(run: _Run, state: _Optimisation, data: _Data, epoch: int, progress: bool) -> dict:
    """One epoch of SGD, then the test error when due; the epoch's history entry."""
    from tqdm import tqdm

    config = run.config
    torch.manual_seed(_epoch_seed(config.seed, epoch))
    order = torch.randperm(len(data.train_x))
    state.model.train()
    started, loss_sum = time.perf_counter(), 0.0
    bar = tqdm(range(state.steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
               disable=not progress, dynamic_ncols=True)
    for step in bar:
        index = order[step * config.batch_size : (step + 1) * config.batch_size]
        loss_sum += _train_step(run, state, data.train_x[index], data.train_y[index])
        if progress:
            bar.set_postfix(loss=f"{loss_sum / (step + 1):.3f}", lr=f"{state.scheduler.get_last_lr()[0]:.3g}")
    bar.close()
    train_seconds = time.perf_counter() - started
    last = epoch + 1 == config.epochs
    measure = last or (config.eval_every > 0 and (epoch + 1) % config.eval_every == 0)
    test_error = evaluate_error(state.model, data.test_x, data.test_y, run.mean, run.std, run.device) if measure else None
    entry = {"epoch": epoch + 1, "train_loss": loss_sum / state.steps_per_epoch, "test_error": test_error,
             "train_seconds": round(train_seconds, 2),
             "eval_seconds": round(time.perf_counter() - started - train_seconds, 2)}
    if progress:
        error_text = f"test error {100 * test_error:.2f}%" if test_error is not None else "test error not measured"
        print(f"epoch {epoch + 1}/{config.epochs}: loss {entry['train_loss']:.4f}, {error_text}, "
              f"{train_seconds:.1f}s train", file=sys.stderr)
    return entry


def _train_step(run: _Run, state: _Optimisation, images: torch.Tensor, labels: torch.Tensor) -> float:
    """One optimiser step on a uint8 batch; the batch loss."""
    views = _training_views(images, run.config)
    target = labels.to(run.device, non_blocking=True)
    x = torch.cat(views).to(run.device, non_blocking=True)
    x = normalize_float(x, run.mean, run.std).contiguous(memory_format=run.memory_format)
    with torch.autocast(run.device.type, dtype=state.amp_dtype, enabled=run.use_cuda):
        logits = state.model(x)
        if len(views) == 3:
            clean, aug1, aug2 = logits.chunk(3)
            jsd_weight = RECIPES[run.config.recipe].jsd_weight
            loss = F.cross_entropy(clean.float(), target) + jsd_weight * aug.jensen_shannon_loss(clean, aug1, aug2)
        else:
            loss = F.cross_entropy(logits.float(), target)
    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(loss).backward()
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
            "model": {k: v.detach().cpu() for k, v in state.model.state_dict().items()},
            "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict(),
            "scaler": state.scaler.state_dict(),
            "config": dataclasses.asdict(config),
            "history_json": json.dumps(history),
        },
        run.out / STATE_FILE,
    )
    save_checkpoint(state.model, run.out / CHECKPOINT_STEM, card=run.card, info=_card_info(run, data_info, history))


def _card_info(run: _Run, data_info: dict, history: list[dict]) -> dict:
    """The checkpoint card's entries besides the model card: recipe, data, metrics, provenance."""
    config, epoch = run.config, history[-1]["epoch"]
    return {
        "recipe": {
            "name": config.recipe, "augment": config.augment, "jsd": config.jsd, "epochs": config.epochs,
            "batch_size": config.batch_size, "lr": config.lr, "weight_decay": config.weight_decay,
            "schedule": config.schedule, "optimizer": "sgd", "momentum": RECIPES[config.recipe].momentum,
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
        "torch_threads": torch.get_num_threads(),
        "reproducibility": reproducibility_record(run.device),
    }
