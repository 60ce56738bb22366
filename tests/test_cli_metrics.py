"""``rbpp --help``, ``--version`` and ``rbpp metrics`` through click's runner."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from _records import full_run
from robustbench_pp import __version__, results
from robustbench_pp.cli import main


@pytest.fixture
def runs(tmp_path):
    paths = {}
    for name, scale, clean in (("model", 0.05, 0.05), ("alexnet", 0.1, 0.2), ("baseline", 0.06, 0.06)):
        paths[name] = tmp_path / f"{name}.jsonl"
        results.append_records(paths[name], full_run(error_of=lambda c, s, k=scale: k * s, clean_error=clean, model=name))
    return paths


def test_help_and_version():
    runner = CliRunner()
    out = runner.invoke(main, ["--help"])
    assert out.exit_code == 0 and "metrics" in out.output
    out = runner.invoke(main, ["--version"])
    assert out.exit_code == 0 and __version__ in out.output


def test_metrics_with_reference_and_baseline_json(runs):
    out = CliRunner().invoke(
        main, ["metrics", str(runs["model"]), "--reference", str(runs["alexnet"]), "--baseline", str(runs["baseline"]), "--json"]
    )
    assert out.exit_code == 0, out.output
    payload = json.loads(out.output)
    assert payload["mce"] == pytest.approx(0.5)
    assert payload["unnormalized_mean_error"] == pytest.approx(0.15)
    # baseline: clean 0.06, mCE 0.06*3/0.3 = 0.6; model: 0.05, 0.5 -> R_net = 100*(0.01+0.1)/(0.12)
    assert payload["r_net"] == pytest.approx(100 * 0.11 / 0.12)
    assert payload["reference"].startswith("alexnet")


def test_metrics_table_without_reference_explains_missing_mce(runs):
    out = CliRunner().invoke(main, ["metrics", str(runs["model"])])
    assert out.exit_code == 0, out.output
    assert "unnormalised mean error (%)  15.00" in out.output
    assert "mCE (%)" in out.output and "no reference for fashion-mnist-c" in out.output


def test_metrics_bad_inputs_exit_non_zero(runs, tmp_path):
    runner = CliRunner()
    out = runner.invoke(main, ["metrics", str(runs["model"]), "--reference", "alexnet"])
    assert out.exit_code == 1 and "do not apply to fashion-mnist-c" in out.output
    out = runner.invoke(main, ["metrics", str(tmp_path / "nope.jsonl")])
    assert out.exit_code == 1 and "not found" in out.output
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{}\n")
    out = runner.invoke(main, ["metrics", str(broken)])
    assert out.exit_code == 1 and "broken.jsonl:1: not a robustbench_pp cell record" in out.output
    partial = tmp_path / "partial.jsonl"
    results.append_records(partial, full_run()[:10])
    out = runner.invoke(main, ["metrics", str(partial)])
    assert out.exit_code == 1 and "missing 66 corruption cell(s)" in out.output
