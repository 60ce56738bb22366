"""What a study file means, checked before anything runs: models, augmentations, datasets, data
folders, class counts, references and colliding outputs. Every error names the file and line."""

from __future__ import annotations

import os
import re
from pathlib import Path

from robustbench_pp.study.plan import evaluation_root, generated_root, results_file, runs, train_config
from robustbench_pp.study.spec import PUBLISHED_PREFIX, Entry, Study, StudyError, defines_function, factory_defined, parse_study

_PARAMETER = re.compile(r"`([A-Za-z_]+)`")


def load_study(path: str | os.PathLike, *, strict: bool = True) -> Study:
    """Read and check a study file; nothing is run or written.

    Args:
        path: the TOML file.
        strict: missing data folders and unset variables are errors; False collects them in
            ``problems`` (a dry run shows the plan anyway).

    Raises:
        StudyError: see :func:`~robustbench_pp.study.spec.parse_study` and :func:`check_study`.
    """
    study = parse_study(path, strict=strict)
    problems = [*study.problems, *check_study(study, strict=strict)]
    return Study(**{**study.__dict__, "problems": tuple(problems)})


def check_study(study: Study, *, strict: bool = True) -> list[str]:
    """Check what the values mean; return the missing data folders when not ``strict``.

    Raises:
        StudyError: an unknown model, augmentation, dataset, corruption or choice, a class
            count that differs between training and evaluation, an unknown reference or
            baseline, colliding outputs, or (strict) a missing data folder.
    """
    problems: list[str] = []

    def missing(message: str) -> None:
        if strict:
            raise StudyError(message)
        problems.append(message)

    for entry in (study.train, *study.evaluate):
        if entry.get("processes", 1) < 1:
            raise StudyError(f"{study.where(entry, 'processes')}: processes must be at least 1")
    _check_study_table(study, missing)
    _check_models(study, missing)
    _check_generate(study, missing)
    _check_evaluate(study, missing)
    _check_collisions(study)
    _check_names(study, missing)
    return problems


def _augmentations(study: Study, entry: Entry, key: str) -> None:
    from robustbench_pp.train import AUGMENTATIONS

    for name in entry.get(key) or []:
        if name not in AUGMENTATIONS:
            raise StudyError(f"{study.where(entry, key)}: unknown augmentation {name!r}; "
                             f"choose from {', '.join(AUGMENTATIONS)}")


def _check_study_table(study: Study, missing) -> None:
    _augmentations(study, study.study, "augmentations")
    seeds = study.study.get("seeds")
    if seeds is not None and (not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0):
        raise StudyError(f"{study.where(study.study, 'seeds')}: seeds must be distinct non-negative integers, got {seeds}")
    if not study.evaluate:
        raise StudyError(f"{study.path}:1: the study evaluates nothing: add an [[evaluate]] table")
    for file in study.study.get("reported", []):
        if not Path(file).is_file():
            missing(f"{study.where(study.study, 'reported')}: reported-numbers file {file} not found")
    if Path(study.report).resolve() == Path(study.results).resolve():
        raise StudyError(f"{study.where(study.study, 'report')}: the report folder would be the results folder")


def _check_models(study: Study, missing) -> None:
    from robustbench_pp.models import get_card

    if not study.models:
        raise StudyError(f"{study.path}:1: the study has no models: add [[models]] tables")
    for entry in study.models:
        kinds = [k for k in ("name", "checkpoint", "factory") if entry.get(k)]
        if not kinds or (entry.get("factory") and entry.get("name")):
            raise StudyError(f"{study.where(entry)}: a model needs a registered `name`, a `checkpoint` or a "
                             "`factory` = \"FILE.py:FACTORY\" (a checkpoint may add its `name`)")
        given = entry.get("checkpoint") or entry.get("factory")
        if given:
            extra = [k for k in ("width", "inhibition", "stem", "lr", "augmentations") if k in entry.values]
            if extra:
                raise StudyError(f"{study.where(entry, extra[0])}: {extra[0]} applies to models trained by the study, "
                                 f"not to a given {'checkpoint' if entry.get('checkpoint') else 'factory'}")
        if entry.get("name") and not entry.get("factory"):
            try:
                get_card(entry.get("name"))
            except ValueError as exc:
                raise StudyError(f"{study.where(entry, 'name')}: {exc}") from None
        if entry.get("checkpoint") and not Path(entry.get("checkpoint")).exists():
            missing(f"{study.where(entry, 'checkpoint')}: checkpoint {entry.get('checkpoint')} not found")
        if entry.get("factory"):
            _check_factory(study, entry, missing)
        _augmentations(study, entry, "augmentations")
    trained = [run for run in runs(study) if run.trained_here]
    if trained:
        _check_training(study, trained, missing)


def _check_factory(study: Study, entry: Entry, missing) -> None:
    spec = entry.get("factory")
    parsed = factory_defined(spec)
    if parsed is None:
        if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", spec):
            raise StudyError(f"{study.where(entry, 'factory')}: factory must be FILE.py:FACTORY or "
                             f"package.module:FACTORY, got {spec!r}")
        return
    file, function = parsed
    if not file.is_file():
        missing(f"{study.where(entry, 'factory')}: factory file {file} not found")
    elif not defines_function(file, function):
        raise StudyError(f"{study.where(entry, 'factory')}: {file} defines no {function}")


def _check_training(study: Study, trained, missing) -> None:
    from robustbench_pp.datasets.sources import fashion_mnist_root
    from robustbench_pp.train import FOLDER_DATASETS

    train = study.train
    if not train.get("dataset"):
        raise StudyError(f"{study.where(trained[0].entry)}: {trained[0].label} is trained here: give [train] dataset")
    for run in trained:
        try:
            train_config(study, run)
        except ValueError as exc:
            named = _PARAMETER.findall(str(exc))
            key = next((k for k in named if k in train.values), None)
            where = study.where(train, key) if key else study.where(run.entry)
            raise StudyError(f"{where}: {exc}") from None
    dataset, root = train.get("dataset"), train.get("data_root")
    if dataset == "fashion-mnist":
        folder = Path(root) if root else fashion_mnist_root()
        if not folder.is_dir():
            missing(f"{study.where(train, 'data_root' if root else 'dataset')}: Fashion-MNIST not found in {folder}; "
                    "install Debian's dataset-fashion-mnist or set FASHION_MNIST_ROOT")
    elif not root or not Path(root).is_dir():
        missing(f"{study.where(train, 'data_root' if root else 'dataset')}: the {dataset} training data folder "
                f"{root or '(none given)'} not found; set [train] data_root")
    if dataset in FOLDER_DATASETS:
        from robustbench_pp.datasets import get_dataset

        val = get_dataset(FOLDER_DATASETS[dataset]).resolve_source_root(train.get("val_root"))
        if not val.is_dir():
            missing(f"{study.where(train, 'val_root' if train.get('val_root') else 'dataset')}: the validation "
                    f"folder {val} not found; set [train] val_root or IMAGENET_VAL_ROOT")


def _dataset_spec(study: Study, entry: Entry):
    from robustbench_pp.datasets import get_dataset

    if not entry.get("dataset"):
        raise StudyError(f"{study.where(entry)}: [[{entry.table}]] needs a dataset")
    try:
        return get_dataset(entry.get("dataset"))
    except ValueError as exc:
        raise StudyError(f"{study.where(entry, 'dataset')}: {exc}") from None


def _corruptions(study: Study, entry: Entry, groups: bool) -> None:
    from robustbench_pp.names import ALL_CORRUPTIONS, SEVERITIES

    allowed = {*ALL_CORRUPTIONS, *(("all", "benchmark", "extra") if groups else ())}
    for name in entry.get("corruptions") or []:
        if name not in allowed:
            raise StudyError(f"{study.where(entry, 'corruptions')}: unknown corruption {name!r}")
    for severity in entry.get("severities") or []:
        if severity not in SEVERITIES:
            raise StudyError(f"{study.where(entry, 'severities')}: severities are 1..5, got {severity}")


def _check_generate(study: Study, missing) -> None:
    for entry in study.generate:
        spec = _dataset_spec(study, entry)
        _corruptions(study, entry, groups=True)
        source = spec.resolve_source_root(entry.get("source_root"))
        if not source.is_dir():
            missing(f"{study.where(entry, 'source_root' if entry.get('source_root') else 'dataset')}: the clean "
                    f"source of {spec.name}, {source}, not found")


def _check_evaluate(study: Study, missing) -> None:
    from robustbench_pp.train.data import NUM_CLASSES

    trained = [run for run in runs(study) if run.trained_here]
    for entry in study.evaluate:
        spec = _dataset_spec(study, entry)
        _corruptions(study, entry, groups=False)
        if trained and NUM_CLASSES[study.train.get("dataset")] != spec.num_classes:
            raise StudyError(f"{study.where(entry, 'dataset')}: {spec.name} has {spec.num_classes} classes but the "
                             f"models are trained on {study.train.get('dataset')} "
                             f"({NUM_CLASSES[study.train.get('dataset')]} classes)")
        if entry.get("precision") not in (None, "fp32", "bf16", "fp16"):
            raise StudyError(f"{study.where(entry, 'precision')}: precision is fp32, bf16 or fp16")
        if entry.get("on_the_fly"):
            if entry.get("data_root"):
                raise StudyError(f"{study.where(entry, 'on_the_fly')}: on_the_fly and data_root exclude each other")
            source = spec.resolve_source_root(entry.get("source_root"))
            if not source.is_dir():
                missing(f"{study.where(entry, 'on_the_fly')}: the clean source of {spec.name}, {source}, not found")
        else:
            root = evaluation_root(study, entry)
            made = root is not None and any(str(generated_root(g)) == root for g in study.generate)
            folder = Path(root) if root else spec.resolve_data_root(None)
            if not made and not folder.is_dir():
                missing(f"{study.where(entry, 'data_root' if entry.get('data_root') else 'dataset')}: the data of "
                        f"{spec.name}, {folder}, not found (set data_root, on_the_fly, or add a [[generate]])")


def _collide(study: Study, what: str, first: Entry, second: Entry, key: str | None) -> StudyError:
    return StudyError(f"{study.where(second, key)}: {what} collides with {study.path}:{first.line(key)}")


def _check_collisions(study: Study) -> None:
    seen: dict[str, Entry] = {}
    for run in runs(study):
        if run.label in seen:
            key = next((k for k in ("label", "name", "checkpoint", "factory") if run.entry.get(k)), None)
            raise _collide(study, f"run {run.label!r} (its checkpoint and results files)", seen[run.label], run.entry, key)
        seen[run.label] = run.entry
    datasets: dict[str, Entry] = {}
    for entry in study.evaluate:
        if entry.get("dataset") in datasets:
            raise _collide(study, f"evaluation set {entry.get('dataset')} (results files)",
                           datasets[entry.get("dataset")], entry, "dataset")
        datasets[entry.get("dataset")] = entry
    folders: dict[Path, Entry] = {}
    for entry in study.generate:
        folder = generated_root(entry).resolve()
        if folder in folders:
            raise _collide(study, f"generated set {folder}", folders[folder], entry, "dataset")
        folders[folder] = entry
    outputs = {results_file(study, run, e.get("dataset")).resolve() for run in runs(study) for e in study.evaluate}
    for entry in study.evaluate:
        if entry.get("data_root") and Path(entry.get("data_root")).resolve() in outputs:
            raise StudyError(f"{study.where(entry, 'data_root')}: data_root is one of the study's results files")


def _check_names(study: Study, missing) -> None:
    labels = {run.label for run in runs(study)} | {e.get("name") for e in study.models if e.get("name")} \
        | {e.get("label") for e in study.models if e.get("label")}
    baseline = study.study.get("baseline")
    if baseline is not None and baseline not in labels:
        raise StudyError(f"{study.where(study.study, 'baseline')}: baseline {baseline!r} is none of the study's models "
                         f"({', '.join(sorted(labels))})")
    for pair in study.study.get("compare", []):
        unknown = [label for label in pair if label not in labels]
        if unknown or pair[0] == pair[1]:
            raise StudyError(f"{study.where(study.study, 'compare')}: compare {pair!r} needs two different models "
                             f"of the study ({', '.join(sorted(labels))})")
    reference = study.study.get("reference")
    if reference is None or reference in labels:
        return
    if reference.startswith(PUBLISHED_PREFIX):
        if reference != f"{PUBLISHED_PREFIX}alexnet":
            raise StudyError(f"{study.where(study.study, 'reference')}: the published reference is "
                             f"{PUBLISHED_PREFIX}alexnet (AlexNet's ImageNet-C errors)")
    elif reference.endswith(".jsonl"):
        if not Path(reference).is_file():
            missing(f"{study.where(study.study, 'reference')}: reference results file {reference} not found")
    else:
        raise StudyError(f"{study.where(study.study, 'reference')}: reference {reference!r} is none of the study's "
                         f"models, {PUBLISHED_PREFIX}alexnet or a results file (*.jsonl)")
