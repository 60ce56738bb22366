"""``create_model``: build a registered model, optionally from a checkpoint of any supported kind."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from torch import nn

from robustbench_pp.models.checkpoints import LoadedCheckpoint, load_checkpoint
from robustbench_pp.models.original import map_original_state_dict, uses_original_names
from robustbench_pp.models.weights import CheckpointError, classifier_rows, load_weights, stem_of
from robustbench_pp.models.registry import ModelCard, build_from_card, get_card, infer_width

_DEFAULT_CLASSES = {"cifar": 10, "imagenet": 1000}


@dataclass(frozen=True)
class ModelRequest:
    """What the caller of :func:`create_model` asked for (None: not given, decide from elsewhere)."""

    name: str | None = None
    num_classes: int | None = None
    stem: str | None = "cifar"  # "cifar" is the default, not a choice: only another value can clash
    width: int | None = None
    inhibition_mode: str | None = None

    @property
    def explicit_stem(self) -> str | None:
        """The stem when the caller chose one other than the default."""
        return self.stem if self.stem not in (None, "cifar") else None


def create_model(
    name: str | None = None,
    *,
    num_classes: int | None = None,
    stem: str | None = "cifar",
    checkpoint: str | os.PathLike | None = None,
    width: int | None = None,
    inhibition_mode: str | None = None,
) -> nn.Module:
    """Build a registered model, random or with weights from a checkpoint.

    The model is returned as built (train mode); callers call ``.eval()``. It carries
    ``model.card`` (a frozen :class:`ModelCard`) and, when loaded from a file,
    ``model.checkpoint`` (the :class:`~robustbench_pp.models.checkpoints.LoadedCheckpoint`
    without its tensors: kind, path, sha256, info).

    Args:
        name: registered name; optional when the checkpoint carries a card (project and
            Lightning checkpoints), where a disagreeing name is an error.
        num_classes: classifier outputs; default from the checkpoint, else 10 (cifar stem)
            or 1000 (imagenet stem).
        stem: "cifar" or "imagenet". With a checkpoint, the checkpoint decides (a project or
            Lightning card, or the kernel size of a plain state_dict's first conv) and a
            different explicit stem is an error.
        checkpoint: path of a checkpoint of any kind :func:`load_checkpoint` reads; a plain
            state_dict in the original PushPull-Net code's key names is renamed to ours.
        width: base channel width (ResNets and the CIFAR AlexNet); default 64 or the
            checkpoint's.
        inhibition_mode: "fixed" or "trainable" for PushPull models (default trainable, or
            what a plain state_dict implies).

    Returns:
        The ``nn.Module``.

    Raises:
        ValueError: unknown name (with suggestions), or arguments disagreeing with the card;
            messages name the parameters in backticks (`name`, `stem`, `width`, ...).
        CheckpointError: unreadable/unsafe file or weights that do not fit (names the keys).

    Example:
        >>> model = create_model("resnet18_pp3", num_classes=10, width=8).eval()
        >>> model.card.first_layer
        'pushpull'
    """
    request = ModelRequest(name, num_classes, stem, width, inhibition_mode)
    if checkpoint is None:
        return build_from_card(_card_for_random(request))
    loaded = load_checkpoint(checkpoint)
    if loaded.card is None and uses_original_names(loaded.state_dict):  # the PushPull-Net code's key names
        loaded = dataclasses.replace(loaded, state_dict=map_original_state_dict(loaded.state_dict, str(loaded.path)),
                                     info={**loaded.info, "key_names": "pushpull-net"})
    card = _check_card(loaded, request) if loaded.card is not None else _card_for_plain(loaded, request)
    model = build_from_card(card)
    load_weights(model, loaded.state_dict, source=str(loaded.path))
    model.checkpoint = dataclasses.replace(loaded, state_dict={})  # provenance without a second copy of the weights
    return model


def _card_for_random(request: ModelRequest) -> ModelCard:
    if request.name is None:
        raise ValueError("create_model needs a model `name` or a `checkpoint`")
    stem = request.stem or "cifar"
    num_classes = request.num_classes if request.num_classes is not None else _DEFAULT_CLASSES.get(stem, 10)
    return get_card(request.name, num_classes=num_classes, stem=stem, width=request.width,
                    inhibition_mode=request.inhibition_mode)


def _check_card(loaded: LoadedCheckpoint, request: ModelRequest) -> ModelCard:
    """The checkpoint's own card, after checking that the request does not contradict it."""
    card = loaded.card
    disagreements = [
        f"{label} {given!r} but the checkpoint card says {actual!r}"
        for label, given, actual in (
            ("name", request.name, card.name),
            ("num_classes", request.num_classes, card.num_classes),
            ("width", request.width, card.width),
            ("inhibition_mode", request.inhibition_mode, card.inhibition_mode),
        )
        if given is not None and given != actual
    ]
    if disagreements:
        raise ValueError(
            f"{loaded.path}: you asked for " + "; ".join(disagreements)
            + ". Leave those out (the card rebuilds the model) or pick the matching checkpoint."
        )
    if request.explicit_stem and request.explicit_stem != card.stem:
        raise ValueError(f"{loaded.path}: you asked for `stem` {request.stem!r} but the checkpoint card says {card.stem!r}")
    return card


def _card_for_plain(loaded: LoadedCheckpoint, request: ModelRequest) -> ModelCard:
    """The card of a plain state_dict: the request, completed from the weights' shapes."""
    if request.name is None:
        raise ValueError(
            f"{loaded.path} is a plain state_dict without a model card: pass the registered model name "
            "(`name`), e.g. resnet18 or resnet18_pp3"
        )
    state = loaded.state_dict
    stem = _plain_stem(state, request, source=str(loaded.path))
    num_classes = request.num_classes
    if num_classes is None:
        rows = classifier_rows(state)
        num_classes = rows[1] if rows else _DEFAULT_CLASSES[stem]
    width = request.width if request.width is not None else _inferred_width(request.name, state)
    mode = request.inhibition_mode
    if mode is None and "conv1.inhibition" not in state and get_card(request.name, stem=stem).first_layer == "pushpull":
        mode = "fixed"  # no trainable α saved: the fixed α = 1 variant
    return get_card(request.name, num_classes=num_classes, stem=stem, width=width, inhibition_mode=mode)


def _plain_stem(state: dict, request: ModelRequest, *, source: str) -> str:
    inferred = stem_of(state)
    if request.explicit_stem and inferred and request.explicit_stem != inferred:
        raise CheckpointError(
            f"{source}: its first convolution is a {inferred}-stem kernel but you asked for `stem` {request.stem}"
        )
    return inferred or request.stem or "cifar"


def _inferred_width(name: str, state: dict) -> int | None:
    try:
        return infer_width(name, state)
    except ValueError:  # an unknown name: get_card reports it with suggestions
        return None
