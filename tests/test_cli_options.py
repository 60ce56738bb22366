"""Numbers are checked where they enter (issue 12, item 1): every numeric option of every
``rbpp`` command has a range or a custom type, and the library checks the counts it takes."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from robustbench_pp.arguments import resolve_device, whole_number
from robustbench_pp.cli import main


def _commands(group: click.Group, prefix: str = "rbpp"):
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from _commands(command, f"{prefix} {name}")
        else:
            yield f"{prefix} {name}", command


def _numeric_params():
    for name, command in _commands(main):
        for param in command.params:
            if isinstance(param.type, (click.types.IntParamType, click.types.FloatParamType)):
                yield f"{name} {param.opts[0]}", param


NUMERIC = list(_numeric_params())
# A small, fast generation, should a bad value ever get through the boundary.
GENERATE = ["generate", "fashion-mnist-c", "--limit", "20", "--corruptions", "brightness", "--severities", "1"]


def test_the_walk_finds_the_commands_numeric_options():
    names = {name for name, _ in NUMERIC}
    assert {"rbpp generate --batch-size", "rbpp evaluate --limit", "rbpp check --tolerance-cell"} <= names


@pytest.mark.parametrize("name,param", NUMERIC, ids=[name for name, _ in NUMERIC])
def test_every_numeric_option_is_bounded(name, param):
    """A bare ``type=int``/``float`` (or a default that makes click infer one) lets -4, 0 or
    nan through to the library; every numeric option needs a range or a custom type."""
    kind = param.type
    assert isinstance(kind, (click.IntRange, click.FloatRange)), f"{name}: {kind!r} has no range"
    assert kind.min is not None or kind.max is not None, f"{name}: a range without bounds"
    if isinstance(kind, click.FloatRange):
        for value in ("nan", "inf", "-inf"):
            with pytest.raises(click.BadParameter):
                kind.convert(value, param, None)


@pytest.mark.parametrize("args", [
    [*GENERATE, "--batch-size", "-4"],
    [*GENERATE, "--batch-size", "0"],
    [*GENERATE, "--workers", "-1"],
    [*GENERATE, "--limit", "0"],
    [*GENERATE, "--seed", "-1"],
    ["evaluate", "--dataset", "fashion-mnist-c", "--model", "resnet18", "--workers", "-1"],
    ["evaluate", "--dataset", "fashion-mnist-c", "--model", "resnet18", "--batch-size", "-4"],
    ["evaluate", "--dataset", "fashion-mnist-c", "--model", "resnet18", "--batch-size", "0"],
    ["evaluate", "--dataset", "fashion-mnist-c", "--model", "resnet18", "--batch-size", "many"],
    ["evaluate", "--dataset", "fashion-mnist-c", "--model", "resnet18", "--limit", "-5"],
    ["check", "a.jsonl", "--against", "b.jsonl", "--tolerance-cell", "nan"],
    ["check", "a.jsonl", "--against", "b.jsonl", "--tolerance-mce", "-0.1"],
    ["train", "--model", "resnet18", "--out", "x", "--data-root", "nowhere", "--lr", "nan"],
    ["corrupt-gallery", "--image", "a.png", "--out", "b.png", "--dpi", "0"],
])
def test_bad_numbers_fail_at_the_boundary_with_exit_2(args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "Invalid value for" in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_evaluate_batch_size_takes_auto_or_a_positive_count():
    option = next(p for p in main.commands["evaluate"].params if p.name == "batch_size")
    assert option.type.convert("auto", option, None) == "auto"
    assert option.type.convert("64", option, None) == 64


@pytest.mark.parametrize("value", [-4, 0, 2.5, True, "8", None])
def test_library_counts_are_whole_positive_numbers(value):
    with pytest.raises(ValueError, match="`batch_size` must be a whole number of at least 1"):
        whole_number("batch_size", value)
    assert whole_number("batch_size", None, optional=True) is None
    assert whole_number("workers", 0, minimum=0) == 0


@pytest.mark.parametrize("device,message", [
    ("tpu", "is not a device"),
    ("meta", "is not supported"),
    ("cuda:99", "cuda"),
])
def test_devices_are_checked_with_a_message(device, message):
    with pytest.raises(ValueError, match=message):
        resolve_device(device)
    assert resolve_device("cpu").type == "cpu"
