"""A study file (TOML): what to train, generate, evaluate and report, checked before anything runs.

::

    [study]                      # name, results folder, report folder, seeds, augmentations,
    name = "quickstart"          # baseline (a model's label) and reference (see below)
    [train]                      # the `rbpp train` settings shared by every trained model
    dataset = "fashion-mnist"
    [[models]]                   # a registered `name` (trained here), or a `checkpoint`, or a
    name = "resnet18"            # `factory` = "FILE.py:FACTORY" (both evaluated as they are)
    [[generate]]                 # corrupted sets the study makes (`rbpp generate`)
    [[evaluate]]                 # the evaluation sets (`rbpp evaluate`)

``compare`` lists pairs ``[A, B]`` of model labels compared image by image after the report
(``rbpp compare``: paired intervals of B − A, per-cell McNemar tests); without it, a study
with a ``baseline`` compares the baseline with each other model except the reference.
``reference`` normalises mCE: the label of one of the study's models (its run without
augmentation, first seed, on each evaluation set), ``"published:alexnet"`` (AlexNet's
ImageNet-C errors) or a results file. With several ``seeds`` every trained model runs once
per seed and the report shows their mean and spread (the report groups the seeds).
Paths are relative to the working directory, as in a shell at the repository root; ``${VAR}``
and ``${VAR:-default}`` expand environment variables. Every error names the file and line.
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from robustbench_pp.study.toml_lines import locate

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as a package
    import tomli as tomllib

_STR, _INT, _NUM, _BOOL, _STRS, _INTS = "a string", "an integer", "a number", "true or false", \
    "a list of strings", "a list of integers"
_PAIRS = "a list of [A, B] pairs of model labels"

STUDY_KEYS = {"name": _STR, "results": _STR, "report": _STR, "reported": _STRS, "seeds": _INTS,
              "augmentations": _STRS, "baseline": _STR, "reference": _STR, "compare": _PAIRS}
TRAIN_KEYS = {"dataset": _STR, "recipe": _STR, "epochs": _INT, "limit_train": _INT, "limit_test": _INT,
              "eval_every": _INT, "device": _STR, "width": _INT, "stem": _STR, "inhibition": _STR,
              "batch_size": _INT, "lr": _NUM, "weight_decay": _NUM, "schedule": _STR, "jsd": _BOOL,
              "data_root": _STR, "val_root": _STR, "workers": _INT, "threads": _INT, "processes": _INT}
MODEL_KEYS = {"name": _STR, "label": _STR, "checkpoint": _STR, "factory": _STR, "width": _INT, "inhibition": _STR,
              "stem": _STR, "lr": _NUM, "augmentations": _STRS}
GENERATE_KEYS = {"dataset": _STR, "out": _STR, "corruptions": _STRS, "severities": _INTS, "limit": _INT,
                 "seed": _INT, "workers": _INT, "device": _STR, "batch_size": _INT, "source_root": _STR}
EVALUATE_KEYS = {"dataset": _STR, "data_root": _STR, "source_root": _STR, "on_the_fly": _BOOL,
                 "jpeg_roundtrip": _BOOL, "corruptions": _STRS, "severities": _INTS, "limit": _INT,
                 "subset_seed": _INT, "seed": _INT, "batch_size": _INT, "device": _STR, "precision": _STR,
                 "workers": _INT, "allow_mismatch": _BOOL, "processes": _INT}
_TABLES = {"study": STUDY_KEYS, "train": TRAIN_KEYS}
_ARRAYS = {"models": MODEL_KEYS, "generate": GENERATE_KEYS, "evaluate": EVALUATE_KEYS}
_PATH_KEYS = {"results", "report", "reported", "data_root", "val_root", "checkpoint", "factory", "out", "source_root"}
PUBLISHED_PREFIX = "published:"
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class StudyError(ValueError):
    """A study file that cannot run; the message starts with ``FILE:LINE:``."""


@dataclass(frozen=True)
class Entry:
    """One table of the study file: its values and where each is written."""

    table: str
    index: int
    values: dict
    lines: dict  # key -> line; None -> the header's line

    def line(self, key: str | None = None) -> int:
        return self.lines.get(key) or self.lines.get(None) or 1

    def get(self, key: str, default=None):
        return self.values.get(key, default)


@dataclass(frozen=True)
class Study:
    """A checked study file. ``problems`` lists missing data folders (errors unless dry-running)."""

    path: Path
    study: Entry
    train: Entry
    models: tuple[Entry, ...]
    generate: tuple[Entry, ...]
    evaluate: tuple[Entry, ...]
    problems: tuple[str, ...] = field(default_factory=tuple)

    @property
    def name(self) -> str:
        return self.study.get("name") or self.path.stem

    @property
    def results(self) -> Path:
        return Path(self.study.get("results") or f"results/{self.name}")

    @property
    def report(self) -> Path:
        return Path(self.study.get("report") or f"reports/{self.name}")

    @property
    def seeds(self) -> tuple[int | None, ...]:
        return tuple(self.study.get("seeds") or (None,))

    def where(self, entry: Entry, key: str | None = None) -> str:
        return f"{self.path}:{entry.line(key)}"


def _check_type(value, kind: str) -> bool:
    if kind == _STR:
        return isinstance(value, str)
    if kind == _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == _NUM:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == _BOOL:
        return isinstance(value, bool)
    if kind == _STRS:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == _PAIRS:
        return isinstance(value, list) and all(isinstance(v, list) and len(v) == 2 and all(isinstance(x, str) for x in v)
                                               for v in value)
    return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)


def _expand(value: str, where: str, strict: bool, problems: list[str]) -> str:
    def substitute(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        message = f"{where}: environment variable {name} is not set"
        if strict:
            raise StudyError(message)
        problems.append(message)
        return match.group(0)

    return _VARIABLE.sub(substitute, value)


def _entry(path: Path, table: str, index: int, values, keys: dict, positions: dict, strict: bool,
           problems: list[str]) -> Entry:
    lines = {key: line for (t, i, key), line in positions.items() if t == table and i == index}
    entry = Entry(table, index, {}, lines)
    if not isinstance(values, dict):
        raise StudyError(f"{path}:{entry.line()}: [{table}] must be a table")
    for key, value in values.items():
        if key not in keys:
            raise StudyError(f"{path}:{entry.line(key)}: unknown key {key!r} in [{table}]; "
                             f"known keys: {', '.join(keys)}")
        if not _check_type(value, keys[key]):
            raise StudyError(f"{path}:{entry.line(key)}: {table}.{key} must be {keys[key]}, got {value!r}")
        if key in _PATH_KEYS:
            where = f"{path}:{entry.line(key)}"
            value = ([_expand(v, where, strict, problems) for v in value] if isinstance(value, list)
                     else _expand(value, where, strict, problems))
        entry.values[key] = value
    return entry


def parse_study(path: str | os.PathLike, *, strict: bool = True) -> Study:
    """Read a study file and check its shape: known tables and keys, value types, variables.

    The meaning of the values (models, datasets, folders, collisions) is checked by
    :func:`robustbench_pp.study.checks.load_study`.

    Args:
        path: the TOML file.
        strict: an unset environment variable is an error (False: noted in ``problems``).

    Raises:
        StudyError: unreadable TOML, an unknown table or key, a value of the wrong type.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise StudyError(f"{path}: cannot read the study file: {exc.strerror or exc}") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise StudyError(f"{path}: not valid TOML: {exc}") from None
    positions = locate(text)
    problems: list[str] = []
    for key in document:
        if key not in _TABLES and key not in _ARRAYS:
            line = positions.get((key, 0, None)) or positions.get(("", 0, key)) or 1
            raise StudyError(f"{path}:{line}: unknown table {key!r}; known: {', '.join([*_TABLES, *_ARRAYS])}")
    tables = {name: _entry(path, name, 0, document.get(name, {}), keys, positions, strict, problems)
              for name, keys in _TABLES.items()}
    arrays = {}
    for name, keys in _ARRAYS.items():
        items = document.get(name, [])
        if not isinstance(items, list):
            raise StudyError(f"{path}:{positions.get((name, 0, None), 1)}: write each of {name} as [[{name}]]")
        arrays[name] = tuple(_entry(path, name, i, item, keys, positions, strict, problems) for i, item in enumerate(items))
    return Study(path, tables["study"], tables["train"], arrays["models"], arrays["generate"], arrays["evaluate"],
                 problems=tuple(problems))


def factory_defined(spec: str) -> tuple[Path, str] | None:
    """``(file, function)`` of a ``FILE.py:FACTORY`` model, or None for another form."""
    file, _, function = spec.rpartition(":")
    return (Path(file), function) if file.endswith(".py") and function else None


def defines_function(file: Path, function: str) -> bool:
    """Whether a Python file defines ``function`` at its top level (read, never imported)."""
    tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
    return any(isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == function
               or isinstance(node, ast.Assign) and any(getattr(t, "id", None) == function for t in node.targets)
               for node in tree.body)
