"""Training recipes and augmentations (AutoAugment, AugMix, PRIME) behind ``rbpp train``."""

from robustbench_pp.train.data import FASHION_MNIST_MEAN, FASHION_MNIST_STD, balanced_subset, load_dataset
from robustbench_pp.train.loop import TrainConfig, TrainResult, evaluate_error, train
from robustbench_pp.train.recipes import AUGMENTATIONS, RECIPES, SCHEDULES, Recipe

__all__ = [
    "AUGMENTATIONS",
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
