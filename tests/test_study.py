"""rbpp study: line-numbered errors before anything runs, the plan, re-runs, kill -9, shards, seeds."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from robustbench_pp.cli import main
from robustbench_pp.study.toml_lines import locate
from tests._fixtures import tiny_fashion_mnist

REPO = Path(__file__).resolve().parents[1]

TINY = """\
[study]
name = "tiny"
results = "results/tiny"
report = "reports/tiny"
baseline = "resnet18"
reference = "alexnet"
{study_extra}
[train]
dataset = "fashion-mnist"
epochs = {epochs}
limit_train = 100
limit_test = 20
batch_size = 25
width = 2
device = "cpu"

[[models]]
name = "alexnet"
width = 4
{models_extra}
[[models]]
name = "resnet18"

[[generate]]
dataset = "fashion-mnist-c"
out = "corruptions/tiny"
corruptions = ["benchmark"]
limit = 20
seed = 0
workers = 1

[[evaluate]]
dataset = "fashion-mnist-c"
device = "cpu"
"""


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A working directory with a tiny Fashion-MNIST (FASHION_MNIST_ROOT) and the study's relative paths."""
    root = tiny_fashion_mnist(tmp_path / "fmnist", train=200, test=60)
    monkeypatch.setenv("FASHION_MNIST_ROOT", str(root))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def _write(path: Path, *, epochs: int = 1, study_extra: str = "", models_extra: str = "", replace=()) -> Path:
    text = TINY.format(epochs=epochs, study_extra=study_extra, models_extra=models_extra)
    for old, new in replace:
        assert old in text, old
        text = text.replace(old, new)
    path.write_text(text)
    return path


def _line_of(path: Path, fragment: str, occurrence: int = 1) -> int:
    hits = [n for n, line in enumerate(path.read_text().splitlines(), start=1) if fragment in line]
    return hits[occurrence - 1]


def test_locate_finds_headers_keys_and_array_tables():
    text = '[study]\nname = "x"\nseeds = [\n  0,\n  1,\n]\n\n[[models]]\nname = "a"\n[[models]]\n"name" = "b"\nwidth = 4\n'
    lines = locate(text)
    assert lines[("study", 0, "name")] == 2 and lines[("study", 0, "seeds")] == 3
    assert lines[("models", 0, None)] == 8 and lines[("models", 1, "name")] == 11 and lines[("models", 1, "width")] == 12
    assert ("study", 0, "0") not in lines  # array items are not keys


@pytest.mark.parametrize(
    "case, replace, fragment, occurrence, message",
    [
        ("unknown key", [("epochs = 1", "epoch = 1")], "epoch = 1", 1, "unknown key 'epoch' in [train]"),
        ("unknown model", [('name = "resnet18"', 'name = "resnet81"')], 'name = "resnet81"', 1, "did you mean"),
        ("unknown augmentation", [('baseline = "resnet18"', 'baseline = "resnet18"\naugmentations = ["none", "cutmix"]')],
         "augmentations", 1, "unknown augmentation 'cutmix'"),
        ("unknown dataset", [('dataset = "fashion-mnist-c"\ndevice', 'dataset = "fashion-mnist-k"\ndevice')],
         'dataset = "fashion-mnist-k"', 1, "unknown dataset 'fashion-mnist-k'"),
        ("missing data folder", [('dataset = "fashion-mnist-c"\ndevice', 'dataset = "fashion-mnist-c"\ndata_root = "no/such"\ndevice')],
         'data_root = "no/such"', 1, "not found"),
        ("colliding outputs", [('name = "resnet18"', 'name = "alexnet"')], 'name = "alexnet"', 2,
         "run 'alexnet' (its checkpoint and results files) collides with"),
        ("class count", [('dataset = "fashion-mnist-c"\ndevice', 'dataset = "cifar100-c"\non_the_fly = true\ndevice')],
         'dataset = "cifar100-c"', 1, "has 100 classes but the models are trained on fashion-mnist"),
        ("bad value", [("limit_train = 100", "limit_train = -3")], "limit_train", 1, "limit"),
        ("unknown baseline", [('baseline = "resnet18"', 'baseline = "resnet50"')], "baseline", 1, "none of the study's models"),
        ("bad comparison", [('baseline = "resnet18"', 'baseline = "resnet18"\ncompare = [["resnet18", "vgg"]]')],
         "compare", 1, "needs two different models of the study"),
    ],
)
def test_a_bad_study_names_its_line_and_runs_nothing(workdir, case, replace, fragment, occurrence, message):
    study = _write(workdir / "bad.toml", replace=replace)
    result = CliRunner().invoke(main, ["study", str(study)])
    line = _line_of(study, fragment, occurrence)
    assert result.exit_code == 1, (case, result.output)
    assert f"bad.toml:{line}:" in result.output and message in result.output, (case, result.output)
    assert "Traceback" not in result.output and not (workdir / "results").exists() and not (workdir / "corruptions").exists()


def test_invalid_toml_and_bad_shard_are_refused(workdir):
    broken = workdir / "broken.toml"
    broken.write_text('[study]\nname = "x\n')
    result = CliRunner().invoke(main, ["study", str(broken)])
    assert result.exit_code == 1 and "not valid TOML" in result.output and "line 2" in result.output
    study = _write(workdir / "ok.toml")
    result = CliRunner().invoke(main, ["study", str(study), "--shard", "2/2"])
    assert result.exit_code == 2 and "need 0 <= i < n" in result.output


def test_dry_run_prints_every_step_as_a_command(workdir):
    study = _write(workdir / "tiny.toml", study_extra="seeds = [0, 1]")
    result = CliRunner().invoke(main, ["study", str(study), "--dry-run"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("[")]
    assert len(lines) == 4 + 1 + 4 + 2  # 2 models x 2 seeds trained, 1 generated set, 4 evaluations, 2 reports
    assert "[run   ] rbpp train --model resnet18 --dataset fashion-mnist --epochs 1" in result.output
    assert "--seed 1 --out results/tiny/checkpoints/resnet18-s1 --quiet" in result.output
    assert "--group-seeds" in result.output and not (workdir / "results").exists()
    shard = CliRunner().invoke(main, ["study", str(study), "--dry-run", "--shard", "1/2"])
    assert [line for line in shard.output.splitlines() if line.startswith("[")] == [
        line for line in lines if "-s1" in line and "report" not in line]


def test_the_paper_grid_dry_run_lists_twelve_trainings(monkeypatch):
    monkeypatch.chdir(REPO)
    result = CliRunner().invoke(main, ["study", "studies/pushpull-net-imagenet.toml", "--dry-run"])
    assert result.exit_code == 0, result.output
    trainings = [line for line in result.output.splitlines() if " train " in line]
    assert len(trainings) == 12 and all("torchrun --standalone --nproc-per-node 8" in t for t in trainings)
    for model in ("resnet50", "resnet50_pp3", "resnet50_pp5"):
        for augment in ("autoaugment", "augmix", "prime"):
            assert any(f"--model {model} " in t and f"--augment {augment} " in t for t in trainings)
        assert any(f"--model {model} " in t and "--augment" not in t for t in trainings)
    assert all("--dataset imagenet --recipe pushpull" in t for t in trainings)
    assert result.output.count("rbpp evaluate") == 12 and "--reference alexnet" in result.output
    cifar = CliRunner().invoke(main, ["study", "studies/pushpull-net-cifar10.toml", "--dry-run"])
    assert cifar.exit_code == 0 and cifar.output.count(" train ") == 13  # 12 + the AlexNet normaliser


def test_a_reference_named_by_run_label_gets_that_runs_results_file_in_the_report(workdir):
    from robustbench_pp.study import build_plan, load_study

    study = _write(workdir / "tiny.toml", study_extra='augmentations = ["none", "augmix"]',
                   replace=[('reference = "alexnet"', 'reference = "resnet18-augmix"')])
    reports = [s for s in build_plan(load_study(study, strict=False)) if s.args[0] == "report"]
    assert len(reports) == 2
    for step in reports:
        position = step.args.index("--reference")
        assert step.args[position + 1] == "results/tiny/resnet18-augmix__fashion-mnist-c.jsonl", step.args


def test_the_study_command_builds_its_plan_once(workdir, monkeypatch):
    import robustbench_pp.study as package
    from robustbench_pp.study import plan

    executing = sys.modules["robustbench_pp.study.execute"]
    built = []

    def counted(study):
        built.append(study)
        return plan.build_plan(study)

    for module in (package, executing):
        monkeypatch.setattr(module, "build_plan", counted)
    result = CliRunner().invoke(main, ["study", str(_write(workdir / "tiny.toml")), "--report-only"])
    assert result.exit_code == 1 and "not done yet" in result.output, result.output
    assert len(built) == 1


def _files(work: Path) -> dict[str, str]:
    out = {}
    for path in sorted((work / "results").rglob("*")):
        if path.is_file() and path.suffix in (".safetensors", ".jsonl"):
            out[str(path.relative_to(work))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _cells(work: Path) -> dict:
    """Per results file: cell -> (correct, total, correct bits): what a run measured, without timestamps."""
    from robustbench_pp.results import read_records

    return {str(p.relative_to(work)): {r.cell: (r.n_correct, r.n_total, r.extra.get("correct_bits")) for r in read_records(p)}
            for p in sorted((work / "results").glob("tiny/*.jsonl"))}


@pytest.mark.slow
def test_the_study_compares_models_image_by_image_after_the_report(workdir):
    extra = '[[models]]\nname = "resnet18_pp3"\n'
    default = CliRunner().invoke(main, ["study", str(_write(workdir / "a.toml", models_extra=extra, study_extra="seeds = [0, 1]")),
                                        "--dry-run"])
    compares = [line for line in default.output.splitlines() if "rbpp compare" in line]
    assert default.exit_code == 0 and len(compares) == 1, default.output  # the baseline vs each model but the reference
    assert ("results/tiny/resnet18-s0__fashion-mnist-c.jsonl results/tiny/resnet18_pp3-s0__fashion-mnist-c.jsonl "
            "--reference results/tiny/alexnet-s0__fashion-mnist-c.jsonl --cells significant") in compares[0]
    chosen = CliRunner().invoke(main, ["study", str(_write(workdir / "b.toml", models_extra=extra,
                                                           study_extra='compare = [["resnet18_pp3", "alexnet"]]')),
                                       "--dry-run"])
    compares = [line for line in chosen.output.splitlines() if "rbpp compare" in line]
    assert len(compares) == 1 and "resnet18_pp3__fashion-mnist-c.jsonl results/tiny/alexnet__" in compares[0]


def test_a_second_run_only_renders_the_report(workdir):
    study = _write(workdir / "tiny.toml")
    first = CliRunner().invoke(main, ["study", str(study)])
    assert first.exit_code == 0, first.output
    assert (workdir / "reports/tiny/index.html").exists() and "| fashion-mnist-c | resnet18 |" in first.output
    before = _files(workdir)
    assert len(before) == 4  # 2 checkpoints, 2 results files
    second = CliRunner().invoke(main, ["study", str(study)])
    assert second.exit_code == 0, second.output
    commands = [line for line in second.output.splitlines() if line.startswith("$ ")]
    assert len(commands) == 2 and all(c.startswith("$ rbpp report") for c in commands)
    assert "2 command(s) run, 5 step(s) already done" in second.output
    assert _files(workdir) == before
    leaderboard = (workdir / "reports/tiny/leaderboard.csv").read_text()
    assert "alexnet" in leaderboard and "resnet18" in leaderboard


def _study_process(work: Path, study: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "robustbench_pp.cli", "study", str(study)], cwd=work, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _kill_when(process: subprocess.Popen, ready, what: str) -> None:
    deadline = time.time() + 300
    while not ready() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, f"the study ended before {what}: {process.stderr.read().decode()[-2000:]}"
    process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.mark.slow
def test_a_study_killed_twice_resumes_to_the_results_of_an_uninterrupted_one(workdir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    killed, straight = workdir, tmp_path / "straight"
    straight.mkdir()
    study = _write(killed / "tiny.toml", epochs=3)
    _write(straight / "tiny.toml", epochs=3)
    first_state = killed / "results/tiny/checkpoints/alexnet/train_state.pt"
    process = _study_process(killed, study, env)
    _kill_when(process, first_state.exists, "the first epoch was saved")  # mid-training
    results = killed / "results/tiny/alexnet__fashion-mnist-c.jsonl"
    process = _study_process(killed, study, env)
    _kill_when(process, lambda: results.exists() and results.stat().st_size > 0, "an evaluation started")
    assert _study_process(killed, study, env).wait() == 0
    assert _study_process(straight, straight / "tiny.toml", env).wait() == 0
    def weights(work):
        return {name: digest for name, digest in _files(work).items() if name.endswith(".safetensors")}

    assert weights(killed) == weights(straight) and len(weights(killed)) == 2  # byte-identical checkpoints
    assert _cells(killed) == _cells(straight) and len(_cells(killed)) == 2
    assert (killed / "reports/tiny/leaderboard.csv").read_text() == (straight / "reports/tiny/leaderboard.csv").read_text()


@pytest.mark.slow
def test_shards_seeds_and_report_only(workdir):
    study = _write(workdir / "tiny.toml", study_extra="seeds = [0, 1]", models_extra='augmentations = ["none"]')
    runner = CliRunner()
    early = runner.invoke(main, ["study", str(study), "--shard", "1/2"])  # runs alexnet-s1, resnet18-s1
    assert early.exit_code == 1 and "wait for data that shard 0 generates" in early.output, early.output
    assert (workdir / "results/tiny/checkpoints/resnet18-s1/model.json").exists()  # its trainings ran
    refused = runner.invoke(main, ["study", str(study), "--report-only"])
    assert refused.exit_code == 1 and "not done yet" in refused.output and not (workdir / "reports").exists()
    assert runner.invoke(main, ["study", str(study), "--shard", "0/2"]).exit_code == 0
    assert runner.invoke(main, ["study", str(study), "--shard", "1/2"]).exit_code == 0
    final = runner.invoke(main, ["study", str(study), "--report-only"])
    assert final.exit_code == 0, final.output
    board = json.loads((workdir / "reports/tiny/leaderboard.json").read_text())
    measured = {row["label"]: row for row in board["rows"] if row["source"] == "measured"}
    assert measured["resnet18"]["seeds"] == 2 and measured["alexnet"]["seeds"] == 2
    assert measured["resnet18"]["clean_error_seed_sd"] is not None
    assert measured["resnet18"]["within_run_halfwidth"] > 0
