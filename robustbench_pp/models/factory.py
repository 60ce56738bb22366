"""``create_model``: build a registered model, optionally from a checkpoint of any supported kind."""

from __future__ import annotations

import os

from torch import nn

from robustbench_pp.models.checkpoints import CheckpointError, classifier_rows, load_checkpoint, load_weights
from robustbench_pp.models.registry import ModelCard, build_from_card, get_card, infer_width

_DEFAULT_CLASSES = {"cifar": 10, "imagenet": 1000}


def create_model(
    name: str | None = None,
    *,
    num_classes: int | None = None,
    stem: str | None = "cifar",
    checkpoint: str | os.PathLike | None = None,
    width: int | None = None,
    inhibition: str | None = None,
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
        checkpoint: path of a checkpoint of any kind :func:`load_checkpoint` reads.
        width: base channel width (ResNets and the CIFAR AlexNet); default 64 or the
            checkpoint's.
        inhibition: "fixed" or "trainable" for PushPull models (default trainable, or what a
            plain state_dict implies).

    Returns:
        The ``nn.Module``.

    Raises:
        ValueError: unknown name (with suggestions), or arguments disagreeing with the card.
        CheckpointError: unreadable/unsafe file or weights that do not fit (names the keys).

    Example:
        >>> model = create_model("resnet18_pp3", num_classes=10, width=8).eval()
        >>> model.card.first_layer
        'pushpull'
    """
    if checkpoint is None:
        if name is None:
            raise ValueError("create_model needs a model name or a checkpoint")
        stem = stem or "cifar"
        if num_classes is None:
            num_classes = _DEFAULT_CLASSES.get(stem, 10)
        card = get_card(name, num_classes=num_classes, stem=stem, width=width, inhibition=inhibition)
        return build_from_card(card)

    loaded = load_checkpoint(checkpoint)
    state = loaded.state_dict
    if loaded.card is not None:
        card = loaded.card
        disagreements = [
            f"{label} {given!r} but the checkpoint card says {actual!r}"
            for label, given, actual in (
                ("name", name, card.name),
                ("num_classes", num_classes, card.num_classes),
                ("width", width, card.width),
                ("inhibition", inhibition, card.inhibition),
            )
            if given is not None and given != actual
        ]
        if disagreements:
            raise ValueError(
                f"{loaded.path}: you asked for " + "; ".join(disagreements)
                + ". Drop the flag (the card rebuilds the model) or pick the matching checkpoint."
            )
        # The stem default "cifar" is not a user choice; only flag an explicit imagenet/cifar clash
        # when the card disagrees and the caller did not leave the default.
        if stem not in (None, "cifar") and stem != card.stem:
            raise ValueError(f"{loaded.path}: you asked for stem {stem!r} but the checkpoint card says {card.stem!r}")
    else:
        if name is None:
            raise ValueError(
                f"{loaded.path} is a plain state_dict without a model card: pass the registered model name "
                "(--model), e.g. resnet18 or resnet18_pp3"
            )
        card = _card_for_plain(name, state, num_classes, stem, width, inhibition, source=str(loaded.path))
    model = build_from_card(card)
    load_weights(model, state, source=str(loaded.path))
    model.checkpoint = type(loaded)(loaded.kind, loaded.path, {}, loaded.card, loaded.info, loaded.sha256)
    return model


def _card_for_plain(name, state, num_classes, stem, width, inhibition, *, source) -> ModelCard:
    inferred_stem = _stem_of(state)
    if stem is not None and stem != "cifar" and inferred_stem and stem != inferred_stem:
        raise CheckpointError(
            f"{source}: its first convolution is a {inferred_stem}-stem kernel but you asked for --stem {stem}"
        )
    stem = inferred_stem or stem or "cifar"
    rows = classifier_rows(state)
    if num_classes is None:
        num_classes = rows[1] if rows else _DEFAULT_CLASSES[stem]
    if width is None:
        try:
            width = infer_width(name, state)
        except ValueError:
            width = None
    if inhibition is None and "conv1.inhibition" not in state:
        probe = get_card(name, stem=stem)
        if probe.first_layer == "pushpull":
            inhibition = "fixed"  # no trainable α saved: the fixed α = 1 variant
    return get_card(name, num_classes=num_classes, stem=stem, width=width, inhibition=inhibition)


def _stem_of(state: dict) -> str | None:
    weight = state.get("conv1.weight")
    if weight is not None and weight.ndim == 4:
        return {3: "cifar", 7: "imagenet"}.get(int(weight.shape[-1]))
    weight = state.get("features.0.weight")
    if weight is not None and weight.ndim == 4:
        return {5: "cifar", 11: "imagenet"}.get(int(weight.shape[-1]))
    return None
