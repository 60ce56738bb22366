"""The model registry: names -> builders plus a frozen metadata card per model.

A model is registered where its builder is defined (``@register_model`` in ``resnet.py`` /
``alexnet.py``), so adding a model touches one file. This module imports no builder: the
package (``robustbench_pp/models/__init__.py``) imports the builder modules, so importing
anything under ``robustbench_pp.models`` registers the built-in models (timm's layout).
The card, not the caller, decides the preprocessing (input size, mean, std).
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import math
from dataclasses import dataclass
from typing import Callable

from torch import nn

from robustbench_pp.preprocessing import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD

STEMS = ("cifar", "imagenet")
INHIBITION_MODES = ("fixed", "trainable")

INPUT_SIZE = {"cifar": 32, "imagenet": 224}
# A model's default normalisation by stem (PushPull-Net's CIFAR-10 values for 32 px models).
DEFAULT_NORMALISATION = {"cifar": (CIFAR10_MEAN, CIFAR10_STD), "imagenet": (IMAGENET_MEAN, IMAGENET_STD)}


@dataclass(frozen=True)
class ModelCard:
    """Flat, frozen metadata of one built model (what evaluation needs to feed it)."""

    name: str  # registered name, e.g. "resnet18_pp3"
    architecture: str  # family and depth, e.g. "resnet18"
    stem: str  # "cifar" (3x3 s1, no max pool) or "imagenet" (7x7 s2 + max pool)
    first_layer: str  # "conv" or "pushpull"
    avg_kernel_size: int  # pull average pooling size (0: no pooling, and for a plain conv stem)
    inhibition_mode: str | None  # "fixed" | "trainable" for PushPull, None for conv
    input_size: int  # square input side in pixels
    mean: tuple[float, float, float]  # per-channel mean subtracted from [0,1] RGB
    std: tuple[float, float, float]  # per-channel std divided after the mean
    num_classes: int
    width: int  # base channel width (64 = the standard ResNet)
    paper: str  # citation of the architecture / first layer
    inhibition_strength: float | None = None  # the fixed α, None when trainable or conv

    def __post_init__(self) -> None:
        problems = _card_problems(self)
        if problems:
            raise ValueError("invalid model card: " + "; ".join(problems))

    def to_dict(self) -> dict:
        """The card as a JSON-ready dict (tuples become lists)."""
        return {key: (list(value) if isinstance(value, tuple) else value) for key, value in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "ModelCard":
        """Rebuild a card from :meth:`to_dict` output.

        Raises:
            ValueError: when a field is missing or unknown (names it).
        """
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
        unknown, missing = set(data) - names, required - set(data)
        if unknown or missing:
            raise ValueError(f"model card fields: missing {sorted(missing)}, unknown {sorted(unknown)}")
        values = dict(data)
        values["mean"], values["std"] = tuple(values["mean"]), tuple(values["std"])
        return cls(**values)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _card_problems(card: ModelCard) -> list[str]:
    """What makes a card unusable (each naming the field, in quotes: card fields are not the
    caller's parameters), empty when it is valid."""
    problems = []
    if not isinstance(card.name, str) or not card.name:
        problems.append(f"'name' must be a non-empty string, got {card.name!r}")
    for field_name in ("input_size", "num_classes", "width"):
        value = getattr(card, field_name)
        if not _is_int(value) or value < 1:
            problems.append(f"'{field_name}' must be a positive integer, got {value!r}")
    if not _is_int(card.avg_kernel_size) or card.avg_kernel_size < 0:
        problems.append(f"'avg_kernel_size' must be a non-negative integer, got {card.avg_kernel_size!r}")
    problems += normalisation_problems(card.mean, card.std, quote="'")
    if card.stem not in STEMS:
        problems.append(f"'stem' must be one of {', '.join(STEMS)}, got {card.stem!r}")
    if card.first_layer not in ("conv", "pushpull"):
        problems.append(f"'first_layer' must be 'conv' or 'pushpull', got {card.first_layer!r}")
    if card.inhibition_mode not in (None, *INHIBITION_MODES):
        problems.append(f"'inhibition_mode' must be null, 'fixed' or 'trainable', got {card.inhibition_mode!r}")
    if card.inhibition_strength is not None and not _is_number(card.inhibition_strength):
        problems.append(f"'inhibition_strength' must be a finite number or null, got {card.inhibition_strength!r}")
    return problems


def normalisation_problems(mean, std, quote: str = "`") -> list[str]:
    """What is wrong with a per-channel normalisation, each naming mean or std between
    ``quote`` (backticks: the caller's parameters); empty when valid."""
    problems = []
    for field_name, value in (("mean", mean), ("std", std)):
        if not isinstance(value, tuple) or len(value) != 3 or not all(_is_number(v) for v in value):
            problems.append(f"{quote}{field_name}{quote} must be 3 finite numbers (one per RGB channel), got {value!r}")
        elif field_name == "std" and not all(v > 0 for v in value):
            problems.append(f"{quote}std{quote} must be positive in every channel (inputs are divided by it), "
                            f"got {value!r}")
    return problems


def card_disagreements(card: ModelCard) -> list[str]:
    """Where a card contradicts the registered model its name denotes (empty when it agrees).

    The name decides the builder (``resnet18_pp3``: ResNet-18, PushPull stem, pooling 3); a
    card whose ``architecture``, ``first_layer``, ``avg_kernel_size``, ``stem`` or
    ``inhibition_mode`` says otherwise was edited, and its results would carry the wrong label.
    An unregistered name is left to :func:`build_from_card` (which suggests close names).
    """
    entry = _REGISTRY.get(card.name)
    if entry is None:
        return []
    found = [
        f"'{field_name}' is {actual!r} but {card.name} has {expected!r}"
        for field_name, actual, expected in (("architecture", card.architecture, entry.architecture),
                                             ("first_layer", card.first_layer, entry.first_layer),
                                             ("avg_kernel_size", card.avg_kernel_size, entry.avg_kernel_size))
        if actual != expected
    ]
    if card.stem not in entry.stems:
        found.append(f"'stem' is {card.stem!r} but {card.name} has only {', '.join(entry.stems)}")
    if (card.inhibition_mode is None) != (entry.first_layer != "pushpull"):
        found.append(f"'inhibition_mode' is {card.inhibition_mode!r} for a {entry.first_layer} first layer")
    return found


@dataclass(frozen=True)
class _Entry:
    name: str
    builder: Callable[..., nn.Module]
    architecture: str
    first_layer: str
    avg_kernel_size: int
    default_width: int
    default_inhibition_mode: str | None
    paper: str
    stems: tuple[str, ...]
    infer_width: Callable[[dict], int] | None


_REGISTRY: dict[str, _Entry] = {}


def register_model(
    name: str,
    *,
    architecture: str,
    paper: str,
    first_layer: str = "conv",
    avg_kernel_size: int = 0,
    default_width: int = 64,
    default_inhibition_mode: str | None = None,
    stems: tuple[str, ...] = STEMS,
    infer_width: Callable[[dict], int] | None = None,
):
    """Decorator registering a builder ``f(*, num_classes, stem, width, inhibition_mode, inhibition_strength)``.

    Use it where the builder is defined; the module must be imported by
    ``robustbench_pp/models/__init__.py`` (or by the caller, for a model outside the package).

    Args:
        name: unique registered name.
        architecture: family and depth (card field).
        paper: citation (card field).
        first_layer: "conv" or "pushpull".
        avg_kernel_size: pull pooling size (PushPull only).
        default_width: base width when the caller gives none.
        default_inhibition_mode: "trainable" or "fixed" for PushPull models.
        stems: the stems this builder supports.
        infer_width: reads the width from a state_dict (so plain checkpoints need no `width`).

    Raises:
        ValueError: when the name is already registered or a field is invalid.
    """
    if first_layer not in ("conv", "pushpull"):
        raise ValueError(f"`first_layer` must be 'conv' or 'pushpull', got {first_layer!r}")

    def decorate(builder):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered (by {_REGISTRY[name].builder.__module__})")
        _REGISTRY[name] = _Entry(
            name, builder, architecture, first_layer, avg_kernel_size, default_width,
            default_inhibition_mode, paper, tuple(stems), infer_width,
        )
        return builder

    return decorate


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted, optionally filtered by a shell-style pattern (``"resnet*_pp*"``)."""
    names = sorted(_REGISTRY)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; registered: {', '.join(sorted(_REGISTRY))}"
        raise ValueError(f"unknown model {name!r}{hint}")
    return _REGISTRY[name]


def _inhibition_mode(entry: _Entry, requested: str | None) -> str | None:
    """The PushPull inhibition mode a model gets: the request, else the model's default."""
    if entry.first_layer != "pushpull":
        if requested is not None:
            raise ValueError(f"model {entry.name!r} has a plain conv stem; `inhibition_mode`={requested!r} does not apply")
        return None
    mode = requested or entry.default_inhibition_mode
    if mode not in INHIBITION_MODES:
        raise ValueError(f"`inhibition_mode` must be 'fixed' or 'trainable', got {mode!r}")
    return mode


def get_card(
    name: str,
    *,
    num_classes: int = 10,
    stem: str = "cifar",
    width: int | None = None,
    inhibition_mode: str | None = None,
    inhibition_strength: float = 1.0,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
    input_size: int | None = None,
) -> ModelCard:
    """The card a model built with these arguments carries.

    Args:
        name: registered model name.
        num_classes: classifier outputs.
        stem: "cifar" or "imagenet" (one the model supports).
        width: base channel width (None: the model's default).
        inhibition_mode: "fixed" or "trainable" for PushPull models (None: the model's
            default); must be None for plain conv models.
        inhibition_strength: the fixed α (recorded only in "fixed" mode).
        mean, std: input normalisation (None: the stem's default).
        input_size: square input side (None: the stem's).

    Returns:
        The frozen :class:`ModelCard`.

    Raises:
        ValueError: for an unknown name (with suggestions), stem or inhibition mode.
    """
    entry = _entry(name)
    if stem not in entry.stems:
        raise ValueError(f"model {name!r} has no {stem!r} stem (`stem` must be one of {', '.join(entry.stems)})")
    mode = _inhibition_mode(entry, inhibition_mode)
    default_mean, default_std = DEFAULT_NORMALISATION[stem]
    return ModelCard(
        name=name,
        architecture=entry.architecture,
        stem=stem,
        first_layer=entry.first_layer,
        avg_kernel_size=entry.avg_kernel_size,
        inhibition_mode=mode,
        input_size=int(input_size or INPUT_SIZE[stem]),
        mean=tuple(float(v) for v in (mean or default_mean)),
        std=tuple(float(v) for v in (std or default_std)),
        num_classes=int(num_classes),
        width=int(width or entry.default_width),
        paper=entry.paper,
        inhibition_strength=float(inhibition_strength) if mode == "fixed" else None,
    )


def build_from_card(card: ModelCard) -> nn.Module:
    """Build the (randomly initialised) model a card describes and attach the card as ``model.card``."""
    entry = _entry(card.name)
    model = entry.builder(
        num_classes=card.num_classes,
        stem=card.stem,
        width=card.width,
        inhibition_mode=card.inhibition_mode,
        inhibition_strength=card.inhibition_strength if card.inhibition_strength is not None else 1.0,
    )
    model.card = card
    return model


def infer_width(name: str, state_dict: dict) -> int | None:
    """The base width a state_dict was trained with, when the model's builder can tell."""
    entry = _entry(name)
    return entry.infer_width(state_dict) if entry.infer_width else None
