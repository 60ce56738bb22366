"""Models from outside the registry: a user's own ``nn.Module``, torchvision and timm
architectures, and models that other packages register through an entry point.

``rbpp evaluate --model`` (and :func:`build_external`) accepts, besides a registered name:

- ``PATH.py:FACTORY``: a function in a Python file (the file is imported: it is your code);
- ``package.module:FACTORY``: a function in an importable module;
- ``torchvision/NAME``: ``torchvision.models.get_model(NAME, weights=None, num_classes=...)``;
- ``timm/NAME``: ``timm.create_model(NAME, pretrained=False, num_classes=...)`` (optional
  extra ``robustbench_pp[timm]``);
- ``NAME`` of an entry point in the group ``robustbench_pp.models`` (a package declares
  ``NAME = "package.module:FACTORY"`` under ``[project.entry-points."robustbench_pp.models"]``).

A factory is called with no arguments, or with ``num_classes`` when it accepts it, and must
return an ``nn.Module`` mapping a normalised float N×3×H×W batch to N×classes logits. Weights
come from the factory itself or from a local checkpoint (read without running code from it);
nothing is ever downloaded. The model gets an :class:`ExternalCard`: its name, where it comes
from, its preprocessing (given, else the model family's, else the dataset's usual) and a
sha256 of its state_dict, which is the identity of the weights in the results.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import hashlib
import importlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from robustbench_pp.models.checkpoints import load_checkpoint
from robustbench_pp.models.registry import ModelCard, get_card, list_models, normalisation_problems
from robustbench_pp.models.weights import load_weights
from robustbench_pp.preprocessing import IMAGENET_MEAN, IMAGENET_STD

#: The entry-point group through which other packages add models.
ENTRY_POINT_GROUP = "robustbench_pp.models"
FAMILIES = ("torchvision", "timm")


@dataclass(frozen=True)
class Preprocessing:
    """What a model expects: square input side and per-channel normalisation, and who said so."""

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    origin: str  # "given", "torchvision (ImageNet)", "timm pretrained_cfg", "dataset fashion-mnist-c"...


@dataclass(frozen=True)
class ExternalCard:
    """The card of a model built outside the registry (the runner reads the same fields as
    from a :class:`~robustbench_pp.models.registry.ModelCard`).

    Attributes:
        name: the label recorded in results (``my_net.py:build``, ``torchvision/resnet18``).
        source: "file", "module", "torchvision", "timm", "entry point" or "python" (evaluate_model).
        target: what was built (the factory's path, or the module's class).
        num_classes, input_size, mean, std: as on a ModelCard.
        state_dict_sha256: sha256 of the state_dict (names, dtypes, shapes, bytes).
        preprocessing_origin: where input size and normalisation came from (not identity).
    """

    name: str
    source: str
    target: str
    num_classes: int
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    state_dict_sha256: str
    preprocessing_origin: str = "given"

    def to_dict(self) -> dict:
        """The identity fields as a JSON-ready dict: the target's path (which differs between
        machines) and the preprocessing origin are left out; the weights are in the digest."""
        return {"name": self.name, "source": self.source, "num_classes": self.num_classes,
                "input_size": self.input_size, "mean": list(self.mean), "std": list(self.std),
                "state_dict_sha256": self.state_dict_sha256}

    def describe(self) -> str:
        """One line: name, source, input size and normalisation, and where they come from."""
        return (f"model {self.name} ({self.source}): input {self.input_size}x{self.input_size} px, "
                f"mean {tuple(round(v, 4) for v in self.mean)}, std {tuple(round(v, 4) for v in self.std)} "
                f"[{self.preprocessing_origin}]")


def state_dict_sha256(model: nn.Module) -> str:
    """sha256 of a model's state_dict: every key with its dtype, shape and bytes, in key order."""
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        if not isinstance(value, torch.Tensor):
            digest.update(f"{key}={value!r}\n".encode())
            continue
        tensor = value.detach().to("cpu").contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def preprocessing(mean=None, std=None, input_size=None, *, defaults: Preprocessing) -> Preprocessing:
    """The given values, completed from ``defaults``.

    Raises:
        ValueError: a mean/std without 3 finite values (std positive) or a non-positive size,
            naming `mean`, `std` or `input_size`.
    """
    values = {}
    for label, value, default in (("mean", mean, defaults.mean), ("std", std, defaults.std)):
        try:
            values[label] = default if value is None else tuple(float(v) for v in value)
        except (TypeError, ValueError):
            raise ValueError(f"`{label}` must be 3 numbers (one per RGB channel), got {value!r}") from None
    size = defaults.input_size if input_size is None else input_size
    problems = normalisation_problems(values["mean"], values["std"])
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        problems.append(f"`input_size` must be a positive integer, got {size!r}")
    if problems:
        raise ValueError("; ".join(problems))
    normalisation = {0: defaults.origin, 1: f"partly given, else {defaults.origin}", 2: "given"}[
        (mean is not None) + (std is not None)]
    sizing = defaults.origin if input_size is None else "given"
    origin = normalisation if normalisation == sizing else f"mean/std {normalisation}; input size {sizing}"
    return Preprocessing(int(size), values["mean"], values["std"], origin)


def card_for(model: nn.Module, *, name: str, source: str, target: str, num_classes: int,
             prep: Preprocessing) -> ExternalCard:
    """The :class:`ExternalCard` of a built model (hashes its state_dict)."""
    return ExternalCard(name=name, source=source, target=target, num_classes=int(num_classes),
                        input_size=prep.input_size, mean=prep.mean, std=prep.std,
                        state_dict_sha256=state_dict_sha256(model), preprocessing_origin=prep.origin)


# ---- which --model strings are external, and how they build -------------------------------------


def entry_points() -> dict:
    """Entry points of the group ``robustbench_pp.models`` by name (installed packages' models)."""
    from importlib.metadata import entry_points as installed

    return {ep.name: ep for ep in installed(group=ENTRY_POINT_GROUP)}


def is_external(name: str) -> bool:
    """Whether a model name is one of this module's forms (a registered name is not)."""
    if name in list_models():
        return False
    return (":" in name or name.endswith(".py") or name.startswith(tuple(f"{family}/" for family in FAMILIES))
            or name in entry_points())


def build_external(name: str, *, num_classes: int, defaults: Preprocessing, mean=None, std=None,
                   input_size=None, checkpoint=None) -> nn.Module:
    """Build a model given in one of the external forms; it carries ``model.card`` (an ExternalCard).

    Args:
        name: ``PATH.py:FACTORY``, ``package.module:FACTORY``, ``torchvision/NAME``,
            ``timm/NAME`` or an entry-point name.
        num_classes: classifier outputs (passed to factories that accept ``num_classes``).
        defaults: the dataset's usual preprocessing, used where neither the caller nor the
            model family (torchvision, timm) says otherwise.
        mean, std, input_size: explicit preprocessing.
        checkpoint: a local file whose state_dict replaces the weights (any kind
            :func:`~robustbench_pp.models.load_checkpoint` reads; strict key and shape match).

    Returns:
        The module in eval mode, with the factory's (or the checkpoint's) weights; with a
        checkpoint it also carries ``model.checkpoint`` (kind, path, sha256; no tensors).

    Raises:
        ValueError: a file, module, function or architecture that does not exist, a factory
            that fails or returns no ``nn.Module``, timm not installed; the message names it.
    """
    if name.startswith("torchvision/"):
        model, family_defaults, source, target = _torchvision(name.split("/", 1)[1], num_classes)
    elif name.startswith("timm/"):
        model, family_defaults, source, target = _timm(name.split("/", 1)[1], num_classes)
    else:
        factory, source, target = _factory(name)
        model, family_defaults = _call_factory(factory, target, num_classes), defaults
    prep = preprocessing(mean, std, input_size, defaults=family_defaults)
    model = model.eval()
    if checkpoint is not None:
        loaded = load_checkpoint(checkpoint)
        load_weights(model, loaded.state_dict, source=str(loaded.path))
        model.checkpoint = dataclasses.replace(loaded, state_dict={})
    model.card = card_for(model, name=label_of(name), source=source, target=target, num_classes=num_classes, prep=prep)
    return model


def label_of(name: str) -> str:
    """The name results record: a file factory by its file name (``my_net.py:build``)."""
    if ":" in name and name.rsplit(":", 1)[0].endswith(".py"):
        path, factory = name.rsplit(":", 1)
        return f"{Path(path).name}:{factory}"
    return name


def _factory(name: str) -> tuple[Callable, str, str]:
    """The factory function a name denotes, its source kind and its full target."""
    if ":" not in name and name.endswith(".py"):
        raise ValueError(f"`model` {name} names a file: add the function that builds the model, {name}:FACTORY")
    if ":" not in name:
        point = entry_points().get(name)
        if point is None:
            raise ValueError(f"unknown model {name!r}")
        try:
            return point.load(), f"entry point of {_distribution(point)}", point.value
        except Exception as exc:  # a plugin's import error, reported as one line
            raise ValueError(f"model entry point {name} ({point.value}) cannot be loaded: "
                             f"{type(exc).__name__}: {exc}") from None
    where, function = name.rsplit(":", 1)
    if where.endswith(".py"):
        module, source, target = _import_file(Path(where)), "file", f"{Path(where).resolve()}:{function}"
    else:
        module, source, target = _import_module(where), "module", name
    factory = getattr(module, function, None)
    if factory is None or not callable(factory):
        candidates = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]
        close = difflib.get_close_matches(function, candidates, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        what = "no function" if factory is None else "an attribute, not a function,"
        raise ValueError(f"{where} has {what} {function!r}{hint}")
    return factory, source, target


def _distribution(point) -> str:
    dist = getattr(point, "dist", None)
    return getattr(dist, "name", None) or point.module


def _import_file(path: Path):
    if not path.is_file():
        raise ValueError(f"model file {path} not found")
    module_name = "rbpp_user_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    folder = str(path.resolve().parent)
    added = folder not in sys.path
    if added:  # sibling imports work as with `python PATH.py`
        sys.path.insert(0, folder)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise ValueError(f"importing model file {path} failed: {type(exc).__name__}: {exc}") from None
    finally:
        if added:
            sys.path.remove(folder)
    return module


def _import_module(name: str):
    try:
        return importlib.import_module(name)
    except Exception as exc:
        raise ValueError(f"cannot import model module {name!r}: {type(exc).__name__}: {exc}") from None


def _accepts_num_classes(factory: Callable) -> bool:
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "num_classes" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _call_factory(factory: Callable, target: str, num_classes: int) -> nn.Module:
    try:
        model = factory(num_classes=num_classes) if _accepts_num_classes(factory) else factory()
    except Exception as exc:
        raise ValueError(f"model factory {target} raised {type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise ValueError(f"model factory {target} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _imagenet_defaults(origin: str, size: int = 224) -> Preprocessing:
    return Preprocessing(size, IMAGENET_MEAN, IMAGENET_STD, origin)


def _torchvision(arch: str, num_classes: int):
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if arch not in known:
        close = difflib.get_close_matches(arch, known, n=3, cutoff=0.5)
        raise ValueError(f"unknown torchvision classification model {arch!r}"
                         + (f"; did you mean {', '.join(close)}?" if close else ""))
    try:
        model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
    except Exception as exc:
        raise ValueError(f"torchvision/{arch} cannot be built with {num_classes} classes: {exc}") from None
    target = f"torchvision.models.{arch} (torchvision {torchvision.__version__})"
    return model, _imagenet_defaults("torchvision (ImageNet)"), "torchvision", target


def _timm(arch: str, num_classes: int):
    try:
        import timm
    except ImportError:
        raise ValueError(f"`model` timm/{arch} needs timm, which is not installed: "
                         "pip install 'robustbench_pp[timm]'") from None
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=3, cutoff=0.6)
        raise ValueError(f"unknown timm model {arch!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))
    try:  # pretrained=False: timm never downloads weights
        model = timm.create_model(arch, pretrained=False, num_classes=num_classes)
    except Exception as exc:
        raise ValueError(f"timm/{arch} cannot be built with {num_classes} classes: {exc}") from None
    config = getattr(model, "pretrained_cfg", None) or {}
    size = config.get("input_size", (3, 224, 224))[-1]
    defaults = Preprocessing(int(size), tuple(config.get("mean", IMAGENET_MEAN)), tuple(config.get("std", IMAGENET_STD)),
                             "timm pretrained_cfg")
    return model, defaults, "timm", f"timm.{arch} (timm {timm.__version__})"


def check_output(model: nn.Module, card, device: torch.device) -> None:
    """Run two blank images through the model and check it returns N×classes logits.

    Raises:
        ValueError: the forward pass fails, or returns something other than a
            2×``num_classes`` tensor (naming the model and what it returned).
    """
    probe = torch.zeros((2, 3, card.input_size, card.input_size), device=device)
    try:
        with torch.inference_mode():
            out = model(probe)
    except Exception as exc:
        raise ValueError(f"model {card.name} fails on a 2x3x{card.input_size}x{card.input_size} batch: "
                         f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if shape != (2, card.num_classes):
        raise ValueError(f"model {card.name} returns {shape} for 2 images; expected (2, {card.num_classes}): "
                         "logits, one column per class of the dataset")


# ---- the catalogue of `rbpp models` --------------------------------------------------------------


@dataclass(frozen=True)
class CatalogEntry:
    """One model `rbpp models` lists: its name, where it comes from, and its card when registered."""

    name: str
    source: str
    card: ModelCard | None = None
    target: str | None = None


def catalog(pattern: str | None = None, *, stem: str = "cifar") -> list[CatalogEntry]:
    """Every model usable by name: registered ones (with their card for ``stem``) and entry
    points; torchvision/timm architectures when the pattern starts with their prefix
    (``"torchvision/*"``), so that a plain listing stays short."""
    entries = [CatalogEntry(name, "robustbench_pp", get_card(name, stem=stem)) for name in list_models(pattern)]
    registered = set(list_models())
    for name, point in sorted(entry_points().items()):
        if (pattern is None or fnmatch.fnmatch(name, pattern)) and name not in registered:
            entries.append(CatalogEntry(name, f"entry point of {_distribution(point)}", target=point.value))
    family = next((f for f in FAMILIES if pattern and pattern.startswith(f"{f}/")), None)
    if family is not None:  # only then import the family's package (timm takes seconds)
        names = family_models(family).get(family, [])
        entries += [CatalogEntry(f"{family}/{n}", family) for n in names if fnmatch.fnmatch(f"{family}/{n}", pattern)]
    return entries


def family_models(family: str | None = None) -> dict[str, list[str]]:
    """The architectures of torchvision and (when installed) timm, by family; only ``family``'s
    when given."""
    out = {}
    if family in (None, "torchvision"):
        import torchvision

        out["torchvision"] = list(torchvision.models.list_models(module=torchvision.models))
    if family in (None, "timm"):
        try:
            import timm
        except ImportError:
            return out
        out["timm"] = list(timm.list_models())
    return out
