"""The definition of a training run (:class:`TrainConfig`) and what may change when it resumes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from robustbench_pp.arguments import whole_number
from robustbench_pp.models import get_card
from robustbench_pp.train.data import DATASETS, input_size_of
from robustbench_pp.train.recipes import AUGMENTATIONS, LR_SCALE_BY_ARCHITECTURE, RECIPES, SCHEDULES

#: CPU threads of a training run unless the caller says otherwise. The weights depend on the
#: thread count (the backward pass splits its sums by thread), so a fixed default, not the
#: machine's core count, is what lets the same command give the same weights everywhere.
DEFAULT_CPU_THREADS = 1
# Fields that may change on resume: they do not affect the weights.
_FREE_ON_RESUME = ("device", "eval_every", "workers")
# Fields renamed since older train_state.pt files (old name -> current name), and fields
# added since (an older state does not constrain them).
_RENAMED = {"inhibition": "inhibition_mode"}
_ADDED = ("threads", "val_root", "workers", "lr_start")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (recorded in the checkpoint card)."""

    model: str  # registered model name
    out: str  # output folder (model.safetensors, model.json, train_state.pt)
    dataset: str = "fashion-mnist"  # fashion-mnist | cifar10 | imagenet | imagenet100 | imagenet200
    augment: str = "none"  # none | autoaugment | augmix | prime
    recipe: str = "standard"  # standard | pushpull (see recipes.py)
    epochs: int | None = None  # None: the recipe's for the dataset
    seed: int | None = None  # None: the recipe's (standard 0, pushpull 1234)
    width: int | None = None  # base channel width (None: the model's default, 64)
    stem: str | None = None  # None: "cifar" for the 32 px sets, "imagenet" for class folders
    inhibition_mode: str | None = None  # PushPull: fixed | trainable (None: the model's default)
    limit_train: int | None = None  # class-balanced seeded subset of the training set
    limit_test: int | None = None  # first N test images for the per-epoch error (None: all)
    eval_every: int = 1  # measure the test error every N epochs (0: only after the last); costs ~1/2 epoch
    batch_size: int | None = None  # None: the recipe's
    lr: float | None = None  # None: the recipe's
    lr_start: float | None = None  # one-cycle initial lr (None: the recipe's, scaled like `lr`)
    weight_decay: float | None = None  # None: the recipe's
    schedule: str | None = None  # None: the recipe's
    jsd: bool | None = None  # None: the recipe's (AugMix/PRIME only)
    device: str = "cpu"
    data_root: str | None = None  # 32 px sets: their files; ImageNet: the training class folders
    val_root: str | None = None  # ImageNet: the validation folder (None: $IMAGENET_VAL_ROOT or the default)
    download: bool = False
    workers: int | None = None  # ImageNet: decoding processes (None: min(8, CPUs - 1)); not in the weights
    # torch CPU threads (None: DEFAULT_CPU_THREADS). More threads train faster on CPU, but the
    # weights are bit-identical only between runs with the same count.
    threads: int | None = None

    def resolved(self) -> "TrainConfig":
        """The config with recipe defaults filled in and values checked.

        Raises:
            ValueError: naming the bad field and the allowed values.
        """
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {self.recipe!r}; choose one of {', '.join(RECIPES)}")
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {self.augment!r}; choose one of {', '.join(AUGMENTATIONS)}")
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose one of {', '.join(DATASETS)}")
        for name in ("epochs", "threads", "batch_size", "workers"):
            whole_number(name, getattr(self, name), minimum=0 if name == "workers" else 1, optional=True)
        recipe = RECIPES[self.recipe]
        defaults = recipe.defaults_for(self.dataset)
        stem = self.stem or ("imagenet" if input_size_of(self.dataset) == 224 else "cifar")
        architecture = get_card(self.model, stem=stem).architecture  # also rejects unknown names early
        scale = LR_SCALE_BY_ARCHITECTURE.get(architecture, 1.0) if self.lr is None else 1.0
        resolved = dataclasses.replace(
            self,
            epochs=self.epochs or defaults.epochs,
            seed=self.seed if self.seed is not None else recipe.seed,
            stem=stem,
            batch_size=self.batch_size or defaults.batch_size,
            lr=self.lr if self.lr is not None else defaults.lr * scale,
            lr_start=self.lr_start if self.lr_start is not None else defaults.onecycle_start_lr * scale,
            weight_decay=self.weight_decay if self.weight_decay is not None else recipe.weight_decay,
            schedule=self.schedule or recipe.schedule,
            jsd=(self.jsd if self.jsd is not None else recipe.jsd) and self.augment in ("augmix", "prime"),
            threads=self.threads or DEFAULT_CPU_THREADS,
        )
        if resolved.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {resolved.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        return resolved


def resume_conflicts(saved: dict, config: TrainConfig) -> dict[str, tuple]:
    """Fields whose saved value differs from ``config``'s: ``{field: (saved, now)}``.

    Device and evaluation frequency may change. A state saved before a field existed
    (``threads``) does not constrain it; fields renamed since are compared under the new name.

    Args:
        saved: the ``config`` dict of a ``train_state.pt``.
        config: the resolved config of the run that resumes.
    """
    previous = {_RENAMED.get(key, key): value for key, value in saved.items()}
    current = {key: value for key, value in dataclasses.asdict(config).items()
               if key not in _FREE_ON_RESUME and (key in previous or key not in _ADDED)}
    return {key: (previous.get(key), value) for key, value in current.items() if previous.get(key) != value}
