"""Fitting weights into a model: strict loading that explains a mismatch, and sanity checks.

:class:`CheckpointError` is the error of everything under :mod:`robustbench_pp.models` that
reads weights; messages name the file, the keys and, in backticks, the parameter to change.
"""

from __future__ import annotations

import torch


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not fit the model; the message names file and keys."""


def check_finite(state_dict: dict, *, source: str) -> None:
    """Refuse weights holding NaN or infinite values (a diverged or damaged run).

    Raises:
        CheckpointError: naming the first such tensor and how many values are affected.
    """
    for key, value in state_dict.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel():
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                raise CheckpointError(f"{source}: {key} holds {bad} NaN or infinite value(s) of {value.numel()}: "
                                      "the weights are damaged or come from a diverged run")


def classifier_rows(state_dict: dict) -> tuple[str, int] | None:
    """The last 2-D ``*.weight`` in a state_dict (the classifier) and its number of rows (classes)."""
    for key in reversed(list(state_dict)):
        value = state_dict[key]
        if key.endswith("weight") and isinstance(value, torch.Tensor) and value.ndim == 2:
            return key, int(value.shape[0])
    return None


def load_weights(model: torch.nn.Module, state_dict: dict, *, source: str) -> None:
    """Load weights strictly, explaining a mismatch (keys, shapes, likely cause).

    Raises:
        CheckpointError: listing missing keys, unexpected keys and shape mismatches, with the
            likely cause (wrong `name`, `stem`, `width` or class count).
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    if not (missing or unexpected or shapes):
        model.load_state_dict(state_dict, strict=True)
        return
    card = getattr(model, "card", None)
    about = f"model {card.name} (stem {card.stem}, width {card.width}, {card.num_classes} classes)" if card else "the model"

    def head(items):
        return ", ".join(items[:8]) + (f" … (+{len(items) - 8} more)" if len(items) > 8 else "")

    parts = [f"missing keys [{head(missing)}]" if missing else "",
             f"unexpected keys [{head(unexpected)}]" if unexpected else "",
             f"shape mismatches [{head(shapes)}]" if shapes else ""]
    causes = _likely_causes(own, state_dict, missing, unexpected, shapes)
    raise CheckpointError(
        f"{source} does not fit {about}: " + "; ".join(p for p in parts if p) + ". Likely cause: " + "; ".join(causes)
    )


#: The first convolution's kernel side tells the stem a plain state_dict was built for
#: (ResNets: ``conv1``, AlexNets: ``features.0``).
STEM_BY_KERNEL = {"conv1.weight": {3: "cifar", 7: "imagenet"}, "features.0.weight": {5: "cifar", 11: "imagenet"}}


def stem_of(state: dict) -> str | None:
    """"cifar" or "imagenet" from a state_dict's first convolution; None when it does not say."""
    for key, stems in STEM_BY_KERNEL.items():
        weight = state.get(key)
        if weight is not None and weight.ndim == 4:
            return stems.get(int(weight.shape[-1]))
    return None


def _likely_causes(own: dict, state_dict: dict, missing: list, unexpected: list, shapes: list) -> list[str]:
    """Why a state_dict does not fit a model, most specific first, in the caller's parameter names."""
    causes = []
    first_layer = {"conv1.inhibition", "conv1.bias"}
    if first_layer & set(missing) or first_layer & set(unexpected):
        causes.append("wrong `name`: a PushPull (_ppN) checkpoint and a plain model, or the reverse, or "
                      "trainable vs fixed `inhibition_mode`")
    stem_keys = [k for k in STEM_BY_KERNEL if k in own and k in state_dict]
    if any(state_dict[k].shape[-1] != own[k].shape[-1] for k in stem_keys):
        causes.append("wrong `stem` (the first convolution's kernel size differs)")
    rows = classifier_rows(own)
    if rows and rows[0] in state_dict and state_dict[rows[0]].shape[0] != rows[1]:
        causes.append(f"wrong number of classes: the checkpoint has {state_dict[rows[0]].shape[0]}, "
                      f"the model {rows[1]} (`num_classes`)")
    if shapes and not causes:
        causes.append("wrong `width` or `name` depth (channel counts differ)")
    if (missing or unexpected) and not causes:
        causes.append("wrong `name` (the layer names differ)")
    return causes
