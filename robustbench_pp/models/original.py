"""Weights as the original PushPull-Net training code saves them, in our module names.

That code (spec section 3) names the stem ``conv1.push_conv.weight`` /
``conv1.pull_inhibition_strength`` (PushPull) or ``conv1.weight`` + ``conv1.bias`` (plain
stem, which has a bias), the stem BatchNorm ``bn.*`` and the classifier ``classifier.*``; its
Lightning checkpoints add ``hyper_parameters`` (use_push_pull, avg_kernel_size,
pull_inhibition_strength, trainable_pull_inhibition, model, dataset_name, num_classes,
augmentation). Both its Lightning files and plain state_dicts in its key names map here onto
our registered ResNets, ``resnet{18,34,50}``, ``_pp3``, ``_pp5`` and ``_pp0`` (no pooling of
the pull response), with identical logits.
"""

from __future__ import annotations

import re

import torch

from robustbench_pp.models.registry import ModelCard, get_card
from robustbench_pp.models.safe_pickle import Opaque, as_mapping, describe
from robustbench_pp.models.weights import CheckpointError, stem_of
from robustbench_pp.preprocessing import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD

_RENAMES = {
    "conv1.push_conv.weight": "conv1.weight",
    "conv1.pull_inhibition_strength": "conv1.inhibition",
}
_POOLING_SIZES = (0, 3, 5)  # registered _pp0, _pp3, _pp5
# Augmentation objects (or names) of that code -> this project's recipe names.
_RECIPES = (("autoaug", "autoaugment"), ("augmix", "augmix"), ("prime", "prime"), ("none", "none"))


def uses_original_names(state_dict: dict) -> bool:
    """True for a ResNet state_dict in the original code's key names: a ``push_conv`` stem, or
    ``bn.*``/``classifier.*`` beside ResNet stages (torchvision's AlexNet also has ``classifier.*``)."""
    if "conv1.push_conv.weight" in state_dict:
        return True
    resnet = any(key.startswith("layer1.") for key in state_dict)
    return resnet and ("bn.weight" in state_dict or "classifier.weight" in state_dict)


def _our_key(key: str) -> str:
    """A key of the original code in our (torchvision) module names."""
    key = _RENAMES.get(key, key)
    if key.startswith("bn."):
        return "bn1." + key[len("bn."):]
    if key.startswith("classifier."):
        return "fc." + key[len("classifier."):]
    return key


def map_original_state_dict(state: dict, source: str) -> dict:
    """A plain state_dict in the original key names, renamed to ours (weights unchanged).

    A trainable α keeps its per-channel vector; a plain stem's conv bias is folded into the
    stem BatchNorm (see :func:`map_lightning_checkpoint`). A fixed α is not in that code's
    state_dicts (it is a plain attribute): such files load as the fixed α = 1 variant, the
    code's default; other fixed values need its Lightning file.

    Raises:
        CheckpointError: a plain stem bias without the BatchNorm it folds into.
    """
    push_pull = "conv1.push_conv.weight" in state
    mapped = {_our_key(key): value for key, value in state.items()}
    if "conv1.inhibition" in mapped:
        mapped["conv1.inhibition"] = mapped["conv1.inhibition"].reshape(-1)
    if not push_pull:
        _fold_stem_bias(mapped, source)
    return mapped


def map_lightning_checkpoint(checkpoint: dict, source: str = "<lightning checkpoint>") -> tuple[dict, ModelCard, dict]:
    """Map an original PushPull-Net Lightning checkpoint onto our ResNet names (spec section 3).

    ``bn.*`` -> ``bn1.*``, ``classifier.*`` -> ``fc.*``, ``conv1.push_conv.weight`` ->
    ``conv1.weight``, ``conv1.pull_inhibition_strength`` -> ``conv1.inhibition``. The plain
    stem of that code has a conv bias that our (torchvision) stem lacks; it is folded exactly
    into the stem BatchNorm: BN(z + b) uses (z + b − μ), so μ' = μ − b gives equal outputs in
    eval mode (in train mode BN subtracts the batch mean, which cancels b anyway). Only
    ``state_dict`` provides weights; optimizer and scheduler states are ignored.

    Args:
        checkpoint: the loaded dict with ``state_dict`` and ``hyper_parameters`` (a dict, or an
            inert ``AttributeDict``/``Namespace`` record from the safe unpickler).
        source: name used in error messages.

    Returns:
        ``(state_dict in our names, model card, hyper_parameters as plain JSON-able values)``;
        the hyper-parameters carry ``recipe``, the augmentation in this project's names.

    Raises:
        CheckpointError: unknown architecture, unsupported pooling size, or missing keys.
    """
    hparams = as_mapping(checkpoint["hyper_parameters"])
    weights = as_mapping(checkpoint["state_dict"])
    if hparams is None or weights is None:
        raise CheckpointError(f"{source}: 'state_dict' and 'hyper_parameters' must be mappings")
    state = {k: v for k, v in weights.items() if isinstance(v, torch.Tensor)}
    if state and all(k.startswith("model.") for k in state):  # LightningModule wrapping `self.model`
        state = {k[len("model."):]: v for k, v in state.items()}
    mapped = {_our_key(key): value for key, value in state.items()}
    architecture = re.sub(r"[^a-z0-9]", "", str(hparams.get("model", "")).lower())
    if architecture not in ("resnet18", "resnet34", "resnet50"):
        raise CheckpointError(f"{source}: hyper_parameters['model']={hparams.get('model')!r} is not resnet18/34/50")
    push_pull = bool(hparams.get("use_push_pull", "conv1.inhibition" in mapped or "conv1.push_conv.weight" in state))
    stem = _stem(mapped, source)
    if push_pull:
        name, inhibition_mode, strength = _map_pushpull_stem(mapped, hparams, architecture, source)
    else:
        name, inhibition_mode, strength = architecture, None, 1.0
        _fold_stem_bias(mapped, source)
    num_classes = int(mapped["fc.weight"].shape[0]) if "fc.weight" in mapped else int(hparams.get("num_classes", 0))
    dataset = str(hparams.get("dataset_name", "")).lower()
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if "cifar" in dataset else (IMAGENET_MEAN, IMAGENET_STD)
    width = int(mapped["conv1.weight"].shape[0])
    card = get_card(
        name, num_classes=num_classes, stem=stem, width=width, inhibition_mode=inhibition_mode,
        inhibition_strength=strength, mean=mean, std=std,
    )
    info = describe(hparams)
    recipe = recipe_name(hparams.get("augmentation"))
    if recipe is not None:
        info["recipe"] = recipe
    return mapped, card, info


def recipe_name(augmentation) -> str | None:
    """This project's recipe name for the original code's ``augmentation`` (a name or an object).

    Objects (AutoAugment, AugMix, a PRIME module, or a Compose holding one) are recognised by
    their class names, without loading them.
    """
    names = list(_class_names(augmentation, depth=0)) if isinstance(augmentation, Opaque) else [augmentation]
    for name in names:
        if isinstance(name, str):
            flat = re.sub(r"[^a-z]", "", name.lower())
            for key, recipe in _RECIPES:
                if key in flat:
                    return recipe
    if isinstance(augmentation, Opaque):
        return augmentation.short_name.lower()
    return None if augmentation is None else str(augmentation).lower()


def _class_names(value, depth: int):
    """Class names of an opaque object and of the opaque objects inside its state (breadth first)."""
    if depth > 4:
        return
    if isinstance(value, Opaque):
        yield value.short_name
        for part in (value.state, value.args, value.list_items, value.items):
            yield from _class_names(part, depth + 1)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _class_names(item, depth + 1)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _class_names(item, depth + 1)


def _stem(mapped: dict, source: str) -> str:
    if "conv1.weight" not in mapped:
        raise CheckpointError(f"{source}: no stem convolution weight (conv1.push_conv.weight or conv1.weight)")
    stem = stem_of(mapped)
    if stem is None:
        kernel = int(mapped["conv1.weight"].shape[-1])
        raise CheckpointError(f"{source}: stem kernel {kernel}×{kernel} is neither CIFAR (3) nor ImageNet (7)")
    return stem


def _map_pushpull_stem(mapped: dict, hparams: dict, architecture: str, source: str) -> tuple[str, str, float]:
    """Registered name, inhibition mode and fixed α of a PushPull checkpoint; ``mapped`` is adjusted.

    A trainable α is kept as our per-channel vector; a fixed α leaves the state_dict (our
    fixed α is a non-persistent buffer) and becomes the card's ``inhibition_strength``.
    """
    avg = hparams.get("avg_kernel_size", 3)
    if type(avg) is not int or avg not in _POOLING_SIZES:
        raise CheckpointError(f"{source}: avg_kernel_size={avg!r} has no registered model (only _pp0, _pp3, _pp5)")
    trainable = bool(hparams.get("trainable_pull_inhibition", "conv1.inhibition" in mapped))
    strength = 1.0
    if trainable:
        if "conv1.inhibition" in mapped:
            mapped["conv1.inhibition"] = mapped["conv1.inhibition"].reshape(-1)
    else:
        fixed = mapped.pop("conv1.inhibition", None)
        strength = float(hparams.get("pull_inhibition_strength", 1.0) if fixed is None else fixed.reshape(-1)[0].item())
    return f"{architecture}_pp{avg}", "trainable" if trainable else "fixed", strength


def _fold_stem_bias(mapped: dict, source: str) -> None:
    """Fold the original plain stem's conv bias into the stem BatchNorm's running mean (exact)."""
    if "conv1.bias" not in mapped:
        return
    bias = mapped.pop("conv1.bias")
    if "bn1.running_mean" not in mapped:
        raise CheckpointError(f"{source}: plain stem has conv1.bias but no bn.running_mean to fold it into")
    mapped["bn1.running_mean"] = mapped["bn1.running_mean"] - bias
