"""Checkpoint input/output that never executes pickled code.

Four kinds load (:func:`load_checkpoint` tells them apart):

- ``project``: this project's format, ``<name>.safetensors`` (weights) beside ``<name>.json``
  (the card: model card, recipe, seed, data, metrics, command line, weights sha256);
- ``lightning``: the original PushPull-Net PyTorch Lightning files (``state_dict`` +
  ``hyper_parameters``), mapped onto our module names;
- ``state_dict``: a plain state_dict in our (= torchvision's) key names, possibly wrapped in
  ``{"state_dict": ...}`` / ``{"model": ...}`` or prefixed ``module.``;
- torchvision ResNet/AlexNet state_dicts are plain state_dicts in the same names.

``.pt/.pth/.ckpt`` files are read with ``torch.load(weights_only=True)``: a file whose
unpickling needs arbitrary globals is refused with :class:`CheckpointError`.

Project card versions: 2 names the PushPull mode ``inhibition_mode`` in the model card;
version 1 (cards written before that rename, e.g. ``results/reference/ci-model``) called it
``inhibition`` and is still read (:func:`card_fields`).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from robustbench_pp.fileio import atomic_path, atomic_write, file_digest
from robustbench_pp.models.registry import ModelCard, get_card
from robustbench_pp.preprocessing import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD

CHECKPOINT_FORMAT = "robustbench_pp-checkpoint"
CHECKPOINT_FORMAT_VERSION = 2
# Model card fields renamed since format version 1: old name -> current name.
_VERSION_1_CARD_NAMES = {"inhibition": "inhibition_mode"}


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not fit the model; the message names file and keys."""


@dataclass(frozen=True)
class LoadedCheckpoint:
    """What :func:`load_checkpoint` found in a file.

    Attributes:
        kind: "project", "lightning" or "state_dict".
        path: the file holding the weights.
        state_dict: the weights, in our module names (Lightning names already mapped).
        card: the model card when the file carries one (project and Lightning kinds).
        info: the rest of the project card (recipe, seed, data, metrics, command), or the
            Lightning hyper-parameters.
        sha256: hex digest of the weights file (provenance).
    """

    kind: str
    path: Path
    state_dict: dict
    card: ModelCard | None
    info: dict = field(default_factory=dict)
    sha256: str = ""


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file (provenance of weights files).

    Raises:
        FileNotFoundError: when the file does not exist.
    """
    return file_digest(path, "sha256")


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace`` onto ``path``."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_checkpoint(model: torch.nn.Module, path: str | os.PathLike, *, card: ModelCard, info: dict | None = None) -> Path:
    """Write a project checkpoint: ``<path>.safetensors`` then ``<path>.json`` (both atomic).

    Args:
        model: the model whose ``state_dict`` is saved (moved to CPU, contiguous).
        path: destination; a ``.safetensors`` or ``.json`` suffix is replaced.
        card: the model card (everything needed to rebuild the model).
        info: extra card entries (recipe, seed, data, metrics, command, epoch...).

    Returns:
        The path of the JSON card.
    """
    from safetensors.torch import save

    base = Path(path)
    if base.suffix in (".safetensors", ".json"):
        base = base.with_suffix("")
    weights_path, card_path = base.with_suffix(".safetensors"), base.with_suffix(".json")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    # One metadata key only: safetensors writes metadata from a Rust HashMap whose order varies
    # between calls, and the weights file must be byte-identical for identical weights.
    payload = save(tensors, metadata={"format": CHECKPOINT_FORMAT})
    atomic_write(weights_path, payload)
    document = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "model": card.to_dict(),
        "weights": weights_path.name,
        "weights_sha256": hashlib.sha256(payload).hexdigest(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"torch": torch.__version__, "robustbench_pp": _package_version()},
        **(info or {}),
    }
    atomic_write(card_path, json.dumps(document, indent=2, sort_keys=False) + "\n")
    return card_path


def _package_version() -> str:
    from robustbench_pp._version import __version__

    return __version__


def load_checkpoint(path: str | os.PathLike) -> LoadedCheckpoint:
    """Read any supported checkpoint without executing pickled code.

    Args:
        path: a project checkpoint (``.safetensors``, its ``.json`` card, or a folder with one
            card), a Lightning ``.ckpt`` or a plain state_dict ``.pt/.pth``.

    Returns:
        A :class:`LoadedCheckpoint` with the weights in our module names.

    Raises:
        CheckpointError: missing/corrupt file, unsafe pickle, or unknown layout.
    """
    path = Path(path)
    if path.is_dir():
        cards = sorted(p for p in path.glob("*.json") if _is_project_card(p))
        if len(cards) != 1:
            raise CheckpointError(f"{path} is a folder with {len(cards)} project checkpoint cards (*.json); pass one file")
        return _load_project(cards[0])
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix in (".safetensors", ".json"):
        return _load_project(path.with_suffix(".json"), weights_hint=path if path.suffix == ".safetensors" else None)
    return _load_torch_file(path)


def _is_project_card(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("format") == CHECKPOINT_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _load_project(card_path: Path, weights_hint: Path | None = None) -> LoadedCheckpoint:
    if not card_path.exists():
        if weights_hint is not None:  # a bare safetensors file: plain weights, the caller names the model
            return LoadedCheckpoint("state_dict", weights_hint, _read_safetensors(weights_hint), None, {},
                                    file_sha256(weights_hint))
        raise CheckpointError(f"checkpoint card not found: {card_path}")
    document = _read_card_document(card_path)
    try:
        card = ModelCard.from_dict(card_fields(document))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{card_path}: bad 'model' card: {exc}") from exc
    weights_path = card_path.parent / document.get("weights", card_path.with_suffix(".safetensors").name)
    if not weights_path.exists():
        raise CheckpointError(f"{card_path} names weights {weights_path.name}, which is missing in {card_path.parent}")
    payload = weights_path.read_bytes()
    digest = hashlib.sha256(payload).hexdigest()
    expected = document.get("weights_sha256")
    if expected and expected != digest:
        raise CheckpointError(
            f"{weights_path} does not match its card {card_path.name} (sha256 {digest[:12]}… != {expected[:12]}…): "
            "the files come from different saves (an interrupted write, or a copied file); re-export the checkpoint"
        )
    info = {k: v for k, v in document.items() if k not in ("model",)}
    return LoadedCheckpoint("project", weights_path, _read_safetensors(weights_path, payload), card, info, digest)


def _read_card_document(card_path: Path) -> dict:
    """The parsed JSON card, checked to be a project card this version can read."""
    try:
        document = json.loads(card_path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read checkpoint card {card_path}: {exc}") from exc
    if not isinstance(document, dict) or document.get("format") != CHECKPOINT_FORMAT:
        found = document.get("format") if isinstance(document, dict) else None
        raise CheckpointError(f"{card_path} is not a {CHECKPOINT_FORMAT} card (format={found!r})")
    if document.get("format_version", 0) > CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"{card_path} has format_version {document['format_version']}; this robustbench_pp reads up to "
            f"{CHECKPOINT_FORMAT_VERSION}: upgrade robustbench_pp"
        )
    return document


def _read_safetensors(path: Path, payload: bytes | None = None) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        return load(payload if payload is not None else path.read_bytes())
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"cannot read safetensors file {path}: {exc}") from exc


def card_fields(document: dict) -> dict:
    """The model card fields of a project card document, in the current names.

    Version 1 named the PushPull mode ``inhibition`` (now ``inhibition_mode``, as
    ``inhibition`` is the α of :class:`PushPullConv2d`); a document without a version is
    read as version 1.

    Args:
        document: the parsed JSON card (left unchanged).

    Returns:
        A new dict for :meth:`ModelCard.from_dict`.

    Raises:
        KeyError: when the document has no ``model`` entry.
    """
    fields = dict(document["model"])
    if document.get("format_version", 1) < 2:
        for old, new in _VERSION_1_CARD_NAMES.items():
            if old in fields and new not in fields:
                fields[new] = fields.pop(old)
    return fields


def _load_torch_file(path: Path) -> LoadedCheckpoint:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)|got <class '([\w.]+)'>", str(exc))
        needs = f" (it asks for {found.group(1) or found.group(2)})" if found else ""
        raise CheckpointError(
            f"refusing to load {path}: unpickling it needs arbitrary Python code{needs}. robustbench_pp only "
            "loads weights (torch.load(weights_only=True) or safetensors). If you trust the file, re-save its "
            "weights elsewhere with torch.save(model.state_dict(), 'weights.pt') or as safetensors; for a "
            "Lightning .ckpt whose hyper_parameters are an AttributeDict or Namespace, re-save it with "
            "ckpt['hyper_parameters'] = dict(ckpt['hyper_parameters'])."
        ) from exc
    except (RuntimeError, OSError, EOFError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    sha = file_sha256(path)
    if isinstance(obj, dict) and "state_dict" in obj and "hyper_parameters" in obj:
        state, card, hparams = map_lightning_checkpoint(obj, source=str(path))
        return LoadedCheckpoint("lightning", path, state, card, hparams, sha)
    state = _unwrap_state_dict(obj, path)
    return LoadedCheckpoint("state_dict", path, state, None, {}, sha)


def _unwrap_state_dict(obj, path: Path) -> dict:
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"{path} is not a state_dict (a dict of tensors, optionally under 'state_dict' or 'model'); "
            f"found {type(obj).__name__}"
        )
    if all(k.startswith("module.") for k in obj):  # saved from DataParallel / DDP
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


_LIGHTNING_RENAMES = (
    ("conv1.push_conv.weight", "conv1.weight"),
    ("conv1.pull_inhibition_strength", "conv1.inhibition"),
)


def map_lightning_checkpoint(checkpoint: dict, source: str = "<lightning checkpoint>") -> tuple[dict, ModelCard, dict]:
    """Map an original PushPull-Net Lightning checkpoint onto our ResNet names (spec section 3).

    ``bn.*`` -> ``bn1.*``, ``classifier.*`` -> ``fc.*``, ``conv1.push_conv.weight`` ->
    ``conv1.weight``, ``conv1.pull_inhibition_strength`` -> ``conv1.inhibition``. The plain
    stem of that code has a conv bias that our (torchvision) stem lacks; it is folded exactly
    into the stem BatchNorm: BN(z + b) uses (z + b − μ), so μ' = μ − b gives equal outputs in
    eval mode (in train mode BN subtracts the batch mean, which cancels b anyway).

    Args:
        checkpoint: the loaded dict with ``state_dict`` and ``hyper_parameters``.
        source: name used in error messages.

    Returns:
        ``(state_dict in our names, model card, hyper_parameters)``.

    Raises:
        CheckpointError: unknown architecture, unsupported pooling size, or missing keys.
    """
    hparams = dict(checkpoint["hyper_parameters"])
    state = {k: v for k, v in checkpoint["state_dict"].items() if isinstance(v, torch.Tensor)}
    if state and all(k.startswith("model.") for k in state):  # LightningModule wrapping `self.model`
        state = {k[len("model."):]: v for k, v in state.items()}
    mapped = {_our_key(key): value for key, value in state.items()}
    architecture = re.sub(r"[^a-z0-9]", "", str(hparams.get("model", "")).lower())
    if architecture not in ("resnet18", "resnet34", "resnet50"):
        raise CheckpointError(f"{source}: hyper_parameters['model']={hparams.get('model')!r} is not resnet18/34/50")
    push_pull = bool(hparams.get("use_push_pull", "conv1.inhibition" in mapped or "conv1.push_conv.weight" in state))
    stem = _lightning_stem(mapped, source)
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
    return mapped, card, hparams


def _our_key(key: str) -> str:
    """A key of the original PushPull-Net code in our (torchvision) module names."""
    for old, new in _LIGHTNING_RENAMES:
        if key == old:
            key = new
    if key.startswith("bn."):
        return "bn1." + key[len("bn."):]
    if key.startswith("classifier."):
        return "fc." + key[len("classifier."):]
    return key


def _lightning_stem(mapped: dict, source: str) -> str:
    if "conv1.weight" not in mapped:
        raise CheckpointError(f"{source}: no stem convolution weight (conv1.push_conv.weight or conv1.weight)")
    kernel = int(mapped["conv1.weight"].shape[-1])
    stem = {3: "cifar", 7: "imagenet"}.get(kernel)
    if stem is None:
        raise CheckpointError(f"{source}: stem kernel {kernel}×{kernel} is neither CIFAR (3) nor ImageNet (7)")
    return stem


def _map_pushpull_stem(mapped: dict, hparams: dict, architecture: str, source: str) -> tuple[str, str, float]:
    """Registered name, inhibition mode and fixed α of a PushPull checkpoint; ``mapped`` is adjusted.

    A trainable α is kept as our per-channel vector; a fixed α leaves the state_dict (our
    fixed α is a non-persistent buffer) and becomes the card's ``inhibition_strength``.
    """
    avg = int(hparams.get("avg_kernel_size", 3))
    if avg not in (3, 5):
        raise CheckpointError(f"{source}: avg_kernel_size={avg} has no registered model (only _pp3, _pp5)")
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


def _likely_causes(own: dict, state_dict: dict, missing: list, unexpected: list, shapes: list) -> list[str]:
    """Why a state_dict does not fit a model, most specific first, in the caller's parameter names."""
    causes = []
    first_layer = {"conv1.inhibition", "conv1.bias"}
    if first_layer & set(missing) or first_layer & set(unexpected):
        causes.append("wrong `name`: a PushPull (_ppN) checkpoint and a plain model, or the reverse, or "
                      "trainable vs fixed `inhibition_mode`")
    stem_keys = [k for k in ("conv1.weight", "features.0.weight") if k in own and k in state_dict]
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
