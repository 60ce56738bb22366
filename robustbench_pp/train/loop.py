"""The training loop behind ``rbpp train``: deterministic on CPU, resumable, checkpoint per epoch."""

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

from robustbench_pp.preprocessing import normalize_float
from robustbench_pp.train import augment as aug
from robustbench_pp.train.data import NORMALISATION, NUM_CLASSES, balanced_subset, indices_fingerprint, load_dataset
from robustbench_pp.train.recipes import AUGMENTATIONS, LR_SCALE_BY_ARCHITECTURE, RECIPES, SCHEDULES

STATE_FILE = "train_state.pt"
CHECKPOINT_STEM = "model"  # model.safetensors + model.json in the output folder


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (recorded in the checkpoint card)."""

    model: str  # registered model name
    out: str  # output folder (model.safetensors, model.json, train_state.pt)
    dataset: str = "fashion-mnist"  # fashion-mnist | cifar10
    augment: str = "none"  # none | autoaugment | augmix | prime
    recipe: str = "standard"  # standard | pushpull (see recipes.py)
    epochs: int = 2
    seed: int = 0
    width: int | None = None  # base channel width (None: the model's default, 64)
    stem: str = "cifar"  # the training sets here are 32 px
    inhibition: str | None = None  # PushPull: fixed | trainable (None: the model's default)
    limit_train: int | None = None  # class-balanced seeded subset of the training set
    limit_test: int | None = None  # first N test images for the per-epoch error (None: all)
    eval_every: int = 1  # measure the test error every N epochs (0: only after the last); costs ~1/2 epoch
    batch_size: int | None = None  # None: the recipe's
    lr: float | None = None  # None: the recipe's
    weight_decay: float | None = None  # None: the recipe's
    schedule: str | None = None  # None: the recipe's
    jsd: bool | None = None  # None: the recipe's (AugMix/PRIME only)
    device: str = "cpu"
    data_root: str | None = None
    download: bool = False

    def resolved(self) -> "TrainConfig":
        """The config with recipe defaults filled in and values checked.

        Raises:
            ValueError: naming the bad field and the allowed values.
        """
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {self.recipe!r}; choose one of {', '.join(RECIPES)}")
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {self.augment!r}; choose one of {', '.join(AUGMENTATIONS)}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        from robustbench_pp.models import get_card

        recipe = RECIPES[self.recipe]
        architecture = get_card(self.model, stem=self.stem).architecture  # also rejects unknown names early
        resolved = dataclasses.replace(
            self,
            batch_size=self.batch_size or recipe.batch_size,
            lr=self.lr if self.lr is not None else recipe.lr * LR_SCALE_BY_ARCHITECTURE.get(architecture, 1.0),
            weight_decay=self.weight_decay if self.weight_decay is not None else recipe.weight_decay,
            schedule=self.schedule or recipe.schedule,
            jsd=(self.jsd if self.jsd is not None else recipe.jsd) and self.augment in ("augmix", "prime"),
        )
        if resolved.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {resolved.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        return resolved


@dataclass
class TrainResult:
    """What a finished (or resumed-and-finished) run produced."""

    checkpoint: Path  # the JSON card
    history: list[dict] = field(default_factory=list)  # per epoch: loss, test error, seconds


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

    Deterministic on CPU for a given seed (same weights bit for bit, at a fixed torch thread
    count): model init from ``seed``, every epoch re-seeds torch's generator from
    ``(seed, epoch)`` before shuffling and augmenting, so a resumed run continues exactly.
    On CUDA it uses autocast (bfloat16 where supported, else float16 with a grad scaler) and
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
    from tqdm import tqdm

    from robustbench_pp.models import create_model, get_card

    config = config.resolved()
    out = Path(config.out)
    state_path = out / STATE_FILE
    saved = None
    if state_path.exists():
        if not resume:
            raise ValueError(f"{out} already holds a training run ({STATE_FILE}); pass --resume to continue it "
                             "or choose another --out")
        saved = torch.load(state_path, map_location="cpu", weights_only=True)
        free = ("device", "eval_every")  # may change on resume: they do not affect the weights
        previous = {k: v for k, v in saved["config"].items() if k not in free}
        current = {k: v for k, v in dataclasses.asdict(config).items() if k not in free}
        changed = {k: (previous.get(k), v) for k, v in current.items() if previous.get(k) != v}
        if changed:
            raise ValueError(f"cannot resume {out}: the config differs from the saved run: "
                             + ", ".join(f"{k} saved {a!r} now {b!r}" for k, (a, b) in changed.items()))
    elif resume:
        raise ValueError(f"--resume given but {state_path} does not exist")

    device = torch.device(config.device)
    use_cuda = device.type == "cuda"
    mean_tuple, std_tuple = NORMALISATION[config.dataset]
    card = get_card(config.model, num_classes=NUM_CLASSES[config.dataset], stem=config.stem, width=config.width,
                    inhibition=config.inhibition, mean=mean_tuple, std=std_tuple, input_size=32)

    train_images, train_labels = load_dataset(config.dataset, "train", data_root=config.data_root, download=config.download)
    test_images, test_labels = load_dataset(config.dataset, "test", data_root=config.data_root)
    subset = balanced_subset(train_labels, config.limit_train, config.seed)
    train_x = torch.from_numpy(np.ascontiguousarray(train_images[subset].transpose(0, 3, 1, 2)))
    train_y = torch.from_numpy(train_labels[subset])
    test_count = len(test_labels) if config.limit_test is None else min(config.limit_test, len(test_labels))
    test_x = torch.from_numpy(np.ascontiguousarray(test_images[:test_count].transpose(0, 3, 1, 2)))
    test_y = torch.from_numpy(test_labels[:test_count])

    torch.manual_seed(config.seed)
    model = create_model(config.model, num_classes=card.num_classes, stem=card.stem, width=card.width,
                         inhibition=card.inhibition)
    model.card = card
    # channels_last only on CUDA. On CPU it was 15-20% faster for width 8, but torch 2.14's
    # oneDNN backward corrupts memory (segfault / "corrupted size vs. prev_size") for ResNets
    # of width 2, 4 and 6 in channels_last, so CPU runs stay in the default layout.
    memory_format = torch.channels_last if use_cuda else torch.contiguous_format
    model = model.to(device, memory_format=memory_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=RECIPES[config.recipe].momentum,
                                weight_decay=config.weight_decay, nesterov=False)
    steps_per_epoch = len(train_x) // config.batch_size  # drop the last partial batch (BN needs > 1)
    if steps_per_epoch == 0:
        raise ValueError(f"{len(train_x)} training images are fewer than one batch of {config.batch_size}")
    scheduler = _make_scheduler(optimizer, config, steps_per_epoch)
    amp_dtype = torch.bfloat16 if use_cuda and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_cuda and amp_dtype == torch.float16)
    start_epoch, history = 0, []
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        start_epoch, history = int(saved["epoch"]), [dict(h) for h in json.loads(saved["history_json"])]
    mean = torch.tensor(mean_tuple, device=device).view(1, 3, 1, 1)
    std = torch.tensor(std_tuple, device=device).view(1, 3, 1, 1)
    jsd_weight = RECIPES[config.recipe].jsd_weight
    command = command if command is not None else shlex.join(sys.argv)
    data_info = {
        "dataset": config.dataset, "train_images": len(train_x), "test_images": test_count,
        "limit_train": config.limit_train, "subset_sha256": indices_fingerprint(subset), "root": config.data_root,
    }
    card_path = out / f"{CHECKPOINT_STEM}.json"

    for epoch in range(start_epoch, config.epochs):
        torch.manual_seed(_epoch_seed(config.seed, epoch))
        order = torch.randperm(len(train_x))
        model.train()
        started, loss_sum = time.perf_counter(), 0.0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
                   disable=not progress, dynamic_ncols=True)
        for step in bar:
            index = order[step * config.batch_size : (step + 1) * config.batch_size]
            views = _training_views(train_x[index], config)
            target = train_y[index].to(device, non_blocking=True)
            x = torch.cat(views).to(device, non_blocking=True)
            x = normalize_float(x, mean, std).contiguous(memory_format=memory_format)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_cuda):
                logits = model(x)
                if len(views) == 3:
                    clean, aug1, aug2 = logits.chunk(3)
                    loss = F.cross_entropy(clean.float(), target) + jsd_weight * aug.jensen_shannon_loss(clean, aug1, aug2)
                else:
                    loss = F.cross_entropy(logits.float(), target)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            loss_sum += float(loss.detach())
            if progress:
                bar.set_postfix(loss=f"{loss_sum / (step + 1):.3f}", lr=f"{scheduler.get_last_lr()[0]:.3g}")
        bar.close()
        train_seconds = time.perf_counter() - started
        last = epoch + 1 == config.epochs
        measure = last or (config.eval_every > 0 and (epoch + 1) % config.eval_every == 0)
        test_error = evaluate_error(model, test_x, test_y, mean, std, device) if measure else None
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / steps_per_epoch, "test_error": test_error,
                        "train_seconds": round(train_seconds, 2),
                        "eval_seconds": round(time.perf_counter() - started - train_seconds, 2)})
        if progress:
            error_text = f"test error {100 * test_error:.2f}%" if test_error is not None else "test error not measured"
            print(f"epoch {epoch + 1}/{config.epochs}: loss {history[-1]['train_loss']:.4f}, {error_text}, "
                  f"{train_seconds:.1f}s train", file=sys.stderr)
        _save_epoch(out, model, optimizer, scheduler, scaler, config, card, epoch + 1, history, data_info, command)
    if not card_path.exists():  # resumed a run that had already finished: nothing was rewritten
        raise ValueError(f"{out}: training state says all {config.epochs} epochs are done but {card_path} is missing")
    return TrainResult(card_path, history)


def _save_epoch(out, model, optimizer, scheduler, scaler, config, card, epoch, history, data_info, command) -> None:
    from robustbench_pp.models import save_checkpoint
    from robustbench_pp.models.checkpoints import atomic_torch_save

    # 1) the resumable state (one atomic file), 2) the exported checkpoint (weights, then card).
    # A kill between them leaves a consistent train_state.pt; the card's weights sha256
    # detects a half-updated weights/card pair.
    atomic_torch_save(
        {
            "epoch": epoch,
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "config": dataclasses.asdict(config),
            "history_json": json.dumps(history),
        },
        out / STATE_FILE,
    )
    info = {
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
        "command": command,
        "train_config": dataclasses.asdict(config),
        "device": str(config.device),
        "torch_threads": torch.get_num_threads(),
    }
    save_checkpoint(model, out / CHECKPOINT_STEM, card=card, info=info)
