"""Checkpoint input/output that never executes code from a file.

Four kinds load (:func:`load_checkpoint` tells them apart):

- ``project``: this project's format, ``<name>.safetensors`` (weights) beside ``<name>.json``
  (the card: model card, recipe, seed, data, metrics, command line, weights sha256);
- ``lightning``: the original PushPull-Net PyTorch Lightning files (``state_dict`` +
  ``hyper_parameters``), mapped onto our module names (:mod:`robustbench_pp.models.original`);
- ``state_dict``: a plain state_dict (our = torchvision's key names, or the original PushPull-Net
  code's, which :func:`~robustbench_pp.models.create_model` renames), possibly wrapped in ``{"state_dict": ...}`` / ``{"model": ...}`` or
  prefixed ``module.``; torchvision ResNet/AlexNet state_dicts are plain state_dicts too.

``.pt/.pth/.ckpt`` files in the zip format of ``torch.save`` are read by
:mod:`robustbench_pp.models.torch_archive`, which runs no code from the file: objects other
than tensors and plain data (optimizer and scheduler states, augmentation objects, bound
methods) become inert records, and weights come from the state_dict only. Older non-zip files
are read with ``torch.load(weights_only=True)`` and refused when they need more.

A project card is checked before its weights are read: a known ``format_version`` (an
integer), a model card that is valid (:class:`ModelCard`) and agrees with the registered
model its name denotes, and a ``weights`` file that is a regular file inside the card's folder.
Weights holding NaN or infinite values are refused, whatever the kind.

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
import stat
from dataclasses import dataclass, field
from pathlib import Path

import torch

from robustbench_pp.fileio import atomic_path, atomic_write, file_digest
from robustbench_pp.models.original import map_lightning_checkpoint
from robustbench_pp.models.registry import ModelCard, card_disagreements
from robustbench_pp.models.safe_pickle import Opaque, UnsafePickleError, describe
from robustbench_pp.models.torch_archive import is_torch_archive, load_torch_archive
from robustbench_pp.models.weights import CheckpointError, check_finite, classifier_rows, load_weights

__all__ = [
    "CHECKPOINT_FORMAT", "CHECKPOINT_FORMAT_VERSION", "CheckpointError", "LoadedCheckpoint", "atomic_torch_save",
    "card_fields", "classifier_rows", "file_sha256", "load_checkpoint", "load_weights", "map_lightning_checkpoint",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "robustbench_pp-checkpoint"
CHECKPOINT_FORMAT_VERSION = 2
# Model card fields renamed since format version 1: old name -> current name.
_VERSION_1_CARD_NAMES = {"inhibition": "inhibition_mode"}


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
    """Read any supported checkpoint without executing code from it.

    Args:
        path: a project checkpoint (``.safetensors``, its ``.json`` card, or a folder with one
            card), a Lightning ``.ckpt`` or a plain state_dict ``.pt/.pth``.

    Returns:
        A :class:`LoadedCheckpoint` with the weights in our module names.

    Raises:
        CheckpointError: missing/corrupt file, unsafe pickle, a card that contradicts itself or
            points outside its folder, non-finite weights, or an unknown layout.
    """
    path = Path(path)
    if path.is_dir():
        cards = sorted(p for p in path.glob("*.json") if _is_project_card(p))
        if len(cards) != 1:
            raise CheckpointError(f"{path} is a folder with {len(cards)} project checkpoint cards (*.json); pass one file")
        loaded = _load_project(cards[0])
    elif not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    elif path.suffix in (".safetensors", ".json"):
        loaded = _load_project(path.with_suffix(".json"), weights_hint=path if path.suffix == ".safetensors" else None)
    else:
        loaded = _load_torch_file(_regular_file(path, "checkpoint"))
    check_finite(loaded.state_dict, source=str(loaded.path))
    return loaded


def _regular_file(path: Path, what: str) -> Path:
    """``path`` if it is a regular file (never a FIFO, device or socket, which could hang or never end).

    Raises:
        CheckpointError: naming the file and what it is.
    """
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise CheckpointError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        raise CheckpointError(f"{what} {path} is not a regular file")
    return path


def _is_project_card(path: Path) -> bool:
    try:
        return json.loads(_regular_file(path, "card").read_text()).get("format") == CHECKPOINT_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _load_project(card_path: Path, weights_hint: Path | None = None) -> LoadedCheckpoint:
    if not card_path.exists():
        if weights_hint is not None:  # a bare safetensors file: plain weights, the caller names the model
            weights = _regular_file(weights_hint, "weights file")
            return LoadedCheckpoint("state_dict", weights, _read_safetensors(weights), None, {}, file_sha256(weights))
        raise CheckpointError(f"checkpoint card not found: {card_path}")
    document = _read_card_document(_regular_file(card_path, "checkpoint card"))
    try:
        card = ModelCard.from_dict(card_fields(document))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{card_path}: bad 'model' card: {exc}") from None
    disagreements = card_disagreements(card)
    if disagreements:
        raise CheckpointError(f"{card_path}: the model card contradicts itself: " + "; ".join(disagreements)
                              + " (an edited card: re-export the checkpoint)")
    weights_path = _confined_weights(card_path, document.get("weights", card_path.with_suffix(".safetensors").name))
    payload = weights_path.read_bytes()
    digest = hashlib.sha256(payload).hexdigest()
    expected = document.get("weights_sha256")
    if expected and expected != digest:
        raise CheckpointError(
            f"{weights_path} does not match its card {card_path.name} (sha256 {digest[:12]}… != {str(expected)[:12]}…): "
            "the files come from different saves (an interrupted write, or a copied file); re-export the checkpoint"
        )
    info = {k: v for k, v in document.items() if k not in ("model",)}
    return LoadedCheckpoint("project", weights_path, _read_safetensors(weights_path, payload), card, info, digest)


def _confined_weights(card_path: Path, name) -> Path:
    """The card's ``weights`` file: a relative path that stays inside the card's folder (symlinks
    resolved) and names a regular file.

    Raises:
        CheckpointError: an absolute path, a path leaving the folder, a missing file, or a
            FIFO/device/folder.
    """
    folder = card_path.parent.resolve()
    if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise CheckpointError(f"{card_path}: `weights` must name a file beside the card (a relative path inside "
                              f"{card_path.parent}), got {name!r}")
    candidate = card_path.parent / name
    try:
        resolved = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        raise CheckpointError(f"{card_path} names weights {name}, which is missing in {card_path.parent}") from None
    if folder not in resolved.parents:
        raise CheckpointError(f"{card_path}: `weights` {name!r} leads outside the card's folder (to {resolved})")
    return _regular_file(resolved, "weights file")


def _read_card_document(card_path: Path) -> dict:
    """The parsed JSON card, checked to be a project card this version can read."""
    try:
        document = json.loads(card_path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read checkpoint card {card_path}: {exc}") from exc
    if not isinstance(document, dict) or document.get("format") != CHECKPOINT_FORMAT:
        found = document.get("format") if isinstance(document, dict) else None
        raise CheckpointError(f"{card_path} is not a {CHECKPOINT_FORMAT} card (format={found!r})")
    version = document.get("format_version", 1)
    if type(version) is not int or version < 1:
        raise CheckpointError(f"{card_path}: format_version must be a positive integer, got {version!r}")
    if version > CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"{card_path} has format_version {version}; this robustbench_pp reads up to "
            f"{CHECKPOINT_FORMAT_VERSION}: upgrade robustbench_pp"
        )
    if not isinstance(document.get("model"), dict):
        raise CheckpointError(f"{card_path}: 'model' must be the model card (a JSON object)")
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
    obj = _read_torch_file(path)
    sha = file_sha256(path)
    if isinstance(obj, dict) and "state_dict" in obj and "hyper_parameters" in obj:
        state, card, hparams = map_lightning_checkpoint(obj, source=str(path))
        return LoadedCheckpoint("lightning", path, state, card, hparams, sha)
    return LoadedCheckpoint("state_dict", path, _unwrap_state_dict(obj, path), None, {}, sha)


def _read_torch_file(path: Path):
    """The object in a torch file: zip archives by the safe reader, older files by torch's weights-only loader."""
    if is_torch_archive(path):
        try:
            return load_torch_archive(path)
        except (UnsafePickleError, OSError) as exc:
            raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)|got <class '([\w.]+)'>", str(exc))
        needs = f" (it asks for {found.group(1) or found.group(2)})" if found else ""
        raise CheckpointError(
            f"refusing to load {path}: it is not a torch zip archive, and unpickling it needs arbitrary Python "
            f"code{needs}; robustbench_pp never runs code from a checkpoint. If you trust the file, re-save its "
            "weights with torch.save(model.state_dict(), 'weights.pt') (PyTorch >= 1.6) or as safetensors."
        ) from None
    except (RuntimeError, OSError, EOFError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from None


def _unwrap_state_dict(obj, path: Path) -> dict:
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path} is not a state_dict (a dict of tensors, optionally under 'state_dict' or "
                              f"'model'); found {describe(obj) if isinstance(obj, Opaque) else type(obj).__name__}")
    others = [key for key, value in obj.items() if not isinstance(value, torch.Tensor)]
    if others:
        raise CheckpointError(f"{path} is not a state_dict: entry {others[0]!r} is {describe(obj[others[0]])}, "
                              "not a tensor")
    if all(k.startswith("module.") for k in obj):  # saved from DataParallel / DDP
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)
