"""Training recipes and augmentations (AutoAugment, AugMix, PRIME) behind ``rbpp train``."""

from robustbench_pp.train.config import DEFAULT_CPU_THREADS, TrainConfig
from robustbench_pp.train.data import FASHION_MNIST_MEAN, FASHION_MNIST_STD, balanced_subset, load_dataset
from robustbench_pp.train.loop import TrainResult, evaluate_error, train
from robustbench_pp.train.recipes import AUGMENTATIONS, RECIPES, SCHEDULES, Recipe

__all__ = [
    "AUGMENTATIONS",
    "DEFAULT_CPU_THREADS",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "RECIPES",
    "Recipe",
    "SCHEDULES",
    "TrainConfig",
    "TrainResult",
    "balanced_subset",
    "evaluate_error",
    "load_dataset",
    "train",
]
