"""A study's plan: every step as an ordinary ``rbpp`` command line, and whether it is done.

The grid: each trained model × augmentation × seed is a *run* with a label (the model's
``label`` or name, ``-<augmentation>`` unless none, ``-s<seed>`` when the study has several
seeds); checkpoint and factory models are one run each. A run's files:
``<results>/checkpoints/<label>/model.json`` and ``<results>/<label>__<dataset>.jsonl``.

Steps, in order: ``train`` (runs trained here), ``generate`` (corrupted sets the study
makes), ``evaluate`` (each run on each evaluation set), ``report``. A step is *done* when its
output is complete (a checkpoint card marked complete and trained with these settings; a
generated set with every requested cell; a results file with every cell of the data), so a
re-run does only what is missing, resuming interrupted steps. Command lines are built from
parameter names (``batch_size`` becomes the option batch-size, click's convention).
A step with ``processes`` > 1 runs under ``torchrun`` (DistributedDataParallel training,
sharded evaluation).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from robustbench_pp.study.spec import PUBLISHED_PREFIX, Entry, Study, StudyError, factory_defined

DONE, RUN, RESUME, BLOCKED = "done", "run", "resume", "blocked"
#: Study keys whose command-line parameter has another name, per command.
_RENAMED = {"generate": {"source_root": "source"}}


def flag(parameter: str) -> str:
    """The rbpp option of a library parameter: ``limit_train`` -> two dashes and ``limit-train``."""
    return "-" * 2 + parameter.replace("_", "-")


def _options(values: dict, command: str, skip: tuple[str, ...] = ()) -> list[str]:
    args: list[str] = []
    for key, value in values.items():
        if key in skip:
            continue
        name = _RENAMED.get(command, {}).get(key, key)
        if isinstance(value, bool):
            args += [flag(name)] if value else ([flag(f"no_{name}")] if name == "jsd" else [])
        elif isinstance(value, list):
            args += [flag(name), ",".join(str(v) for v in value)]
        else:
            args += [flag(name), str(value)]
    return args


@dataclass(frozen=True)
class Run:
    """One cell of the grid: a model (trained here or given), its augmentation and seed."""

    label: str
    entry: Entry
    augment: str
    seed: int | None
    trained_here: bool
    checkpoint: str | None  # the checkpoint `rbpp evaluate` gets

    @property
    def name(self) -> str | None:
        return self.entry.get("name")


@dataclass(frozen=True)
class Step:
    """One rbpp command of the plan and its state (done, run, resume or blocked)."""

    kind: str  # train | generate | evaluate | report
    args: tuple[str, ...]
    line: int  # where the study file defines it
    status: str = RUN
    run: str | None = None  # the run label (the unit of a shard), None for shared steps
    needs: str | None = None  # the generated set an evaluation reads, when the study makes it
    processes: int = 1  # > 1: launched by torchrun on this many processes
    key_lines: tuple[tuple[str, int], ...] = ()  # study key -> line of the values in the command

    def line_of_option(self, option: str) -> int:
        """The study-file line that set a command-line option (given with its dashes), else the step's."""
        key = option.lstrip("-").replace("-", "_")
        return dict(self.key_lines).get(key, self.line)

    @property
    def launcher(self) -> tuple[str, ...]:
        """The torchrun prefix of the command (empty for one process)."""
        if self.processes <= 1:
            return ()
        return ("torchrun", flag("standalone"), flag("nproc_per_node"), str(self.processes), "-m",
                "robustbench_pp.cli")

    @property
    def pending(self) -> bool:
        return self.status != DONE


def run_label(entry: Entry, augment: str, seed: int | None, seeded: bool) -> str:
    """A run's label: the model's label or name, ``-<augmentation>`` unless none, ``-s<seed>`` if ``seeded``."""
    base = entry.get("label") or entry.get("name")
    if base is None and entry.get("factory"):
        base = entry.get("factory").rpartition(":")[2]
    if base is None:
        base = Path(entry.get("checkpoint")).stem
    label = base if augment == "none" else f"{base}-{augment}"
    return f"{label}-s{seed}" if seeded else label


def runs(study: Study) -> list[Run]:
    """The grid's runs in study order: per model entry, augmentations, then seeds."""
    out = []
    for entry in study.models:
        if entry.get("checkpoint") or entry.get("factory"):
            out.append(Run(run_label(entry, "none", None, False), entry, "none", None, False, entry.get("checkpoint")))
            continue
        for augment in entry.get("augmentations") or study.study.get("augmentations") or ["none"]:
            for seed in study.seeds:
                label = run_label(entry, augment, seed, len(study.seeds) > 1)
                card = study.results / "checkpoints" / label / "model.json"
                out.append(Run(label, entry, augment, seed, True, str(card)))
    return out


def results_file(study: Study, run: Run, dataset: str) -> Path:
    return study.results / f"{run.label}__{dataset}.jsonl"


def generated_root(entry: Entry) -> Path:
    return Path(entry.get("out") or "corruptions") / entry.get("dataset")


def evaluation_root(study: Study, entry: Entry) -> str | None:
    """The evaluation set's folder: given, or the one a [[generate]] of the study writes."""
    if entry.get("data_root") or entry.get("on_the_fly"):
        return entry.get("data_root")
    made = [g for g in study.generate if g.get("dataset") == entry.get("dataset")]
    return str(generated_root(made[0])) if made else None


def train_values(study: Study, run: Run) -> dict:
    """The `rbpp train` parameters of a run (study keys, in the order the command gets them)."""
    values = {"model": run.name, "dataset": study.train.get("dataset")}
    values.update({k: v for k, v in study.train.values.items() if k not in ("dataset", "processes")})
    values.update({k: v for k, v in run.entry.values.items() if k in ("width", "inhibition", "stem", "lr")})
    if run.augment != "none":
        values["augment"] = run.augment
    if run.seed is not None:
        values["seed"] = run.seed
    values["out"] = str(Path(run.checkpoint).parent)
    return values


def train_config(study: Study, run: Run):
    """The resolved :class:`~robustbench_pp.train.TrainConfig` of a run (raises ValueError on bad values)."""
    from robustbench_pp.train import TrainConfig

    values = train_values(study, run)
    values["inhibition_mode"] = values.pop("inhibition", None)
    return TrainConfig(**values).resolved()


def _train_step(study: Study, run: Run) -> Step:
    from robustbench_pp.train.config import resume_conflicts

    folder = Path(run.checkpoint).parent
    args = ["train", *_options(train_values(study, run), "train"), flag("quiet")]
    card_path, status = Path(run.checkpoint), RUN
    if card_path.exists():
        card = json.loads(card_path.read_text())
        changed = resume_conflicts(card.get("train_config", {}), train_config(study, run))
        if changed:
            raise StudyError(f"{study.where(run.entry)}: {folder} was trained with other settings ("
                             + ", ".join(f"{k} {a!r} there, {b!r} here" for k, (a, b) in changed.items())
                             + "); delete the folder to retrain it or change the study")
        status = DONE if card.get("complete") else RUN
    if status != DONE and (folder / "train_state.pt").exists():
        args.append(flag("resume"))
        status = RESUME
    lines = {**study.train.lines, **run.entry.lines}
    return Step("train", tuple(args), run.entry.line(), status, run.label, processes=study.train.get("processes", 1),
                key_lines=tuple((k, v) for k, v in lines.items() if k))


def _generate_step(entry: Entry) -> Step:
    args = ["generate", entry.get("dataset"), *_options(entry.values, "generate", skip=("dataset",)), flag("quiet")]
    if entry.get("out") is None:
        args[2:2] = [flag("out"), "corruptions"]
    status = DONE if _generated(entry) else RUN
    return Step("generate", tuple(args), entry.line(), status,
                key_lines=tuple((_RENAMED["generate"].get(k, k), v) for k, v in entry.lines.items() if k))


def _generated(entry: Entry) -> bool:
    """Whether the set a [[generate]] asks for is complete with its seed and size."""
    from robustbench_pp.datasets import open_corrupted
    from robustbench_pp.names import ALL_CORRUPTIONS, CORRUPTIONS, EXTRA_CORRUPTIONS, SEVERITIES

    root = generated_root(entry)
    if not (root / "manifest.json").exists():
        return False
    groups = {"all": ALL_CORRUPTIONS, "benchmark": CORRUPTIONS, "extra": EXTRA_CORRUPTIONS}
    names = [n for item in (entry.get("corruptions") or ["all"]) for n in groups.get(item, (item,))]
    wanted = {(name, s) for name in names for s in (entry.get("severities") or SEVERITIES)}
    try:
        data = open_corrupted(entry.get("dataset"), data_root=root, source_root=entry.get("source_root"))
    except (ValueError, OSError):
        return False
    size_ok = entry.get("limit") is None or data.num_images == min(entry.get("limit"), data.spec.num_images)
    return data.seed == entry.get("seed", 0) and size_ok and wanted <= set(data.available_cells())


def _expected_cells(study: Study, entry: Entry, cache: dict) -> set | None:
    """The cells `rbpp evaluate` would write on this evaluation set (None: its data is not there yet)."""
    key = entry.get("dataset")
    if key not in cache:
        from robustbench_pp.datasets import open_corrupted
        from robustbench_pp.evaluate.runner import plan_cells

        try:
            data = open_corrupted(key, data_root=evaluation_root(study, entry), source_root=entry.get("source_root"),
                                  on_the_fly=bool(entry.get("on_the_fly")), seed=entry.get("seed", 0))
            cache[key] = set(plan_cells(data.available_cells(), entry.get("corruptions"), entry.get("severities")))
        except (ValueError, OSError):
            cache[key] = None
    return cache[key]


def _evaluate_step(study: Study, run: Run, entry: Entry, cache: dict) -> Step:
    from robustbench_pp import results

    dataset, out = entry.get("dataset"), results_file(study, run, entry.get("dataset"))
    args = ["evaluate"]
    if run.checkpoint:
        args += [flag("checkpoint"), run.checkpoint]
    if run.entry.get("factory") or (run.name and not run.trained_here):
        args += [flag("model"), run.entry.get("factory") or run.name]
    values, root = dict(entry.values), evaluation_root(study, entry)
    if "data_root" not in values and root:
        values["data_root"] = root
    args += [flag("dataset"), dataset, *_options(values, "evaluate", skip=("dataset", "processes")), flag("out"),
             str(out), flag("quiet")]
    processes = entry.get("processes", 1)
    key_lines = tuple((k, v) for k, v in entry.lines.items() if k)
    made = [g for g in study.generate if g.get("dataset") == dataset and not entry.get("data_root")]
    needs = dataset if made else None
    if not out.exists():
        return Step("evaluate", tuple(args), entry.line(), RUN, run.label, needs, processes, key_lines)
    expected = _expected_cells(study, entry, cache)
    try:
        records = results.read_records(out)
    except (ValueError, OSError):
        records = []
    done = expected is not None and expected <= {r.cell for r in records}
    if done and run.trained_here:
        card = json.loads(Path(run.checkpoint).read_text()) if Path(run.checkpoint).exists() else {}
        if records and records[0].provenance.get("checkpoint_sha256") != card.get("weights_sha256"):
            raise StudyError(f"{study.where(entry)}: {out} was evaluated from another checkpoint than "
                             f"{run.checkpoint}; delete it to evaluate again")
    return Step("evaluate", (*args, flag("resume")) if not done else tuple(args), entry.line(),
                DONE if done else RESUME, run.label, needs, processes, key_lines)


def _reference_args(study: Study, grid: list[Run]) -> list[str]:
    reference = study.study.get("reference")
    if reference is None:
        return []
    if reference.startswith(PUBLISHED_PREFIX):
        return [flag("reference"), reference[len(PUBLISHED_PREFIX):]]
    chosen = _run_of(grid, reference)
    if chosen is None:
        return [flag("reference"), reference]
    return [a for e in study.evaluate for a in (flag("reference"), str(results_file(study, chosen, e.get("dataset"))))]


def report_steps(study: Study, grid: list[Run]) -> list[Step]:
    """`rbpp report` as HTML into the report folder, then as Markdown on the terminal."""
    files = [str(results_file(study, run, e.get("dataset"))) for run in grid for e in study.evaluate]
    common = list(files)
    if study.study.get("baseline"):
        common += [flag("baseline"), study.study.get("baseline")]
    common += _reference_args(study, grid)
    if len(study.seeds) > 1:
        common.append(flag("group_seeds"))
    line = study.study.line("report")
    html = ["report", *common, *[a for f in study.study.get("reported", []) for a in (flag("reported"), f)],
            flag("out"), str(study.report)]
    steps = [Step("report", tuple(html), line), Step("report", ("report", *common, flag("format"), "markdown"), line)]
    return steps + after_report_steps(study, grid)


def after_report_steps(study: Study, grid: list[Run]) -> list[Step]:
    """The paired comparisons printed after the report (``rbpp compare`` on the same images).

    The study's ``compare`` pairs, else the baseline against every other model but the
    reference; per evaluation set, the runs without augmentation and of the first seed.
    """
    pairs = [tuple(pair) for pair in study.study.get("compare", [])]
    baseline, reference = study.study.get("baseline"), study.study.get("reference")
    if not pairs and baseline is not None and _run_of(grid, baseline) is not None:
        skip = {run.label for run in (_run_of(grid, baseline), _run_of(grid, reference or "")) if run is not None}
        pairs = [(baseline, run.label) for run in grid
                 if run.augment == "none" and run.seed in (None, study.seeds[0]) and run.label not in skip]
    line = study.study.line("compare") if study.study.get("compare") else study.study.line("baseline")
    steps = []
    for entry in study.evaluate:
        dataset = entry.get("dataset")
        for a, b in pairs:
            first, second = _run_of(grid, a), _run_of(grid, b)
            if first is None or second is None:
                continue
            files = [str(results_file(study, run, dataset)) for run in (first, second)]
            steps.append(Step("report", ("compare", *files, *_reference_for(study, grid, dataset),
                                         flag("cells"), "significant"), line))
    return steps


def _reference_for(study: Study, grid: list[Run], dataset: str) -> list[str]:
    """``--reference`` of a comparison on one evaluation set (the reference model's run on it)."""
    reference = study.study.get("reference")
    if reference is None:
        return []
    if reference.startswith(PUBLISHED_PREFIX):
        return [flag("reference"), reference[len(PUBLISHED_PREFIX):]]
    chosen = _run_of(grid, reference)
    return [flag("reference"), reference if chosen is None else str(results_file(study, chosen, dataset))]


def _run_of(grid: list[Run], label: str) -> Run | None:
    """The run a model label names: that run, or the model's run without augmentation (first seed)."""
    exact = [run for run in grid if run.label == label]
    if exact:
        return exact[0]
    return next((run for run in grid if label in (run.entry.get("label"), run.name) and run.augment == "none"), None)


def build_plan(study: Study) -> list[Step]:
    """Every step of the study in order, each with its state on disk now.

    Raises:
        StudyError: a checkpoint trained with other settings than the study's, or results
            evaluated from another checkpoint (stale outputs are never silently reused).
    """
    grid = runs(study)
    cache: dict = {}
    steps = [_train_step(study, run) for run in grid if run.trained_here]
    steps += [_generate_step(entry) for entry in study.generate]
    steps += [_evaluate_step(study, run, entry, cache) for run in grid for entry in study.evaluate]
    return steps + report_steps(study, grid)


def shard_steps(steps: list[Step], grid_labels: list[str], index: int, count: int) -> list[Step]:
    """Shard ``index`` of ``count``: the train and evaluate steps of runs index, index+count, ...

    Generation steps go to shard 0; report steps to none (``report_only`` renders at the end).
    """
    mine = {label for position, label in enumerate(grid_labels) if position % count == index}
    return [s for s in steps if (s.run in mine) or (s.kind == "generate" and index == 0)]


__all__ = ["BLOCKED", "DONE", "RESUME", "RUN", "Run", "Step", "build_plan", "factory_defined", "flag", "results_file",
           "runs", "shard_steps", "train_config"]
