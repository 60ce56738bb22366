"""The model of a run: built from the settings (registered or external) and made ready to evaluate.

Registered models come from :func:`robustbench_pp.models.create_model` (their card decides
the preprocessing); external forms (``PATH.py:FACTORY``, ``package.module:FACTORY``,
``torchvision/NAME``, ``timm/NAME``, entry points) from
:func:`robustbench_pp.models.external.build_external`, with the dataset's usual
preprocessing unless told otherwise. An external model's output is checked on two blank
images before any cell is evaluated, so a wrong model fails before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from robustbench_pp.evaluate.errors import EvaluationError, as_evaluation_error


@dataclass(frozen=True)
class ReadyModel:
    """A model placed for evaluation and what the records say about its weights."""

    module: torch.nn.Module  # eval mode, on the device (channels_last on GPUs, compiled when asked)
    weights_sha256: str  # the checkpoint file's sha256, else the state_dict's (external), else "random-init"
    recipe: str | None  # the training recipe the checkpoint names, if any


def build_model(settings) -> torch.nn.Module:
    """The model (with ``model.card``) of an :class:`~robustbench_pp.evaluate.EvalSettings`:
    registered, from its checkpoint or random, or external.

    Raises:
        EvaluationError: an unknown model, a checkpoint that is missing or does not fit, or an
            external model that cannot be built (the message names it).
    """
    from robustbench_pp.models import create_model
    from robustbench_pp.models.external import build_external, is_external

    with as_evaluation_error():
        if settings.model is not None and is_external(settings.model):
            if settings.stem is not None or settings.width is not None:
                raise EvaluationError(f"`stem` and `width` apply to registered models, not to {settings.model}")
            spec = _dataset_spec(settings.dataset)
            return build_external(settings.model, num_classes=settings.num_classes or spec.num_classes,
                                  defaults=dataset_preprocessing(spec), mean=settings.mean, std=settings.std,
                                  input_size=settings.input_size, checkpoint=settings.checkpoint)
        if (settings.mean, settings.std, settings.input_size) != (None, None, None):
            raise EvaluationError("`mean`, `std` and `input_size` apply to models given as PATH.py:FACTORY, "
                                  "package.module:FACTORY, torchvision/NAME, timm/NAME or an entry point; a "
                                  "registered model's card decides its preprocessing")
        return create_model(settings.model, num_classes=settings.num_classes, stem=settings.stem,
                            checkpoint=settings.checkpoint, width=settings.width)


def _dataset_spec(name: str):
    from robustbench_pp.datasets import get_dataset

    with as_evaluation_error():
        return get_dataset(name)


def dataset_preprocessing(spec):
    """A dataset's usual preprocessing (its image size and its source's normalisation): what an
    external model gets unless told otherwise.

    Returns:
        A :class:`robustbench_pp.models.external.Preprocessing`.
    """
    from robustbench_pp.models.external import Preprocessing
    from robustbench_pp.preprocessing import SOURCE_NORMALIZATION

    mean, std = SOURCE_NORMALIZATION[spec.source]
    return Preprocessing(spec.image_size, mean, std, f"the usual for {spec.name}")


def ready_model(model: torch.nn.Module, card: Any, device: torch.device, compile_model: bool) -> ReadyModel:
    """Put the model in eval mode on its device and, for an external model, check its output.

    Raises:
        EvaluationError: an external model whose forward pass fails or does not return
            N×classes logits.
    """
    placed = model.eval().to(device)
    if device.type == "cuda":
        placed = placed.to(memory_format=torch.channels_last)
    if hasattr(card, "state_dict_sha256"):  # an external model: before anything is written
        from robustbench_pp.models.external import check_output

        with as_evaluation_error():
            check_output(placed, card, device)
    return ReadyModel(torch.compile(placed) if compile_model else placed, _weights_sha256(model, card),
                      _recipe_of(model))


def _weights_sha256(model, card) -> str:
    checkpoint = getattr(model, "checkpoint", None)
    return getattr(checkpoint, "sha256", None) or getattr(card, "state_dict_sha256", None) or "random-init"


def _recipe_of(model) -> str | None:
    checkpoint = getattr(model, "checkpoint", None)
    info = getattr(checkpoint, "info", None) or {}
    recipe = info.get("recipe", info.get("augmentation"))
    if isinstance(recipe, dict):
        recipe = recipe.get("augment") or recipe.get("name")
    return str(recipe) if recipe is not None else None
