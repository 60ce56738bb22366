"""Training recipes and augmentations (AutoAugment, AugMix, PRIME) behind ``rbpp train``.

32 px sets in memory (Fashion-MNIST, CIFAR-10) or ImageNet-style class folders (ImageNet-1k,
ImageNet-100/200), on one process or several under torchrun (DistributedDataParallel).
"""

from robustbench_pp.train.config import DEFAULT_CPU_THREADS, TrainConfig
from robustbench_pp.train.data import (
    DATASETS,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    FOLDER_DATASETS,
    balanced_subset,
    load_dataset,
)
from robustbench_pp.train.loop import TrainResult, evaluate_error, make_scheduler, train
from robustbench_pp.train.recipes import AUGMENTATIONS, RECIPES, SCHEDULES, Recipe, onecycle_factors

__all__ = [
    "AUGMENTATIONS",
    "DATASETS",
    "DEFAULT_CPU_THREADS",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "FOLDER_DATASETS",
    "RECIPES",
    "Recipe",
    "SCHEDULES",
    "TrainConfig",
    "TrainResult",
    "balanced_subset",
    "evaluate_error",
    "load_dataset",
    "make_scheduler",
    "onecycle_factors",
    "train",
]
