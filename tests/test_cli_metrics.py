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
    assert payload["r_net_mce"] == pytest.approx(100 * 0.11 / 0.12)
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


def test_metrics_and_report_print_the_same_r_net_values_under_the_same_names(runs, tmp_path):
    from robustbench_pp.metrics import R_NET_LABELS

    runner = CliRunner()
    common = ["--reference", str(runs["alexnet"])]
    table = runner.invoke(main, ["metrics", str(runs["model"]), *common, "--baseline", str(runs["baseline"])])
    assert table.exit_code == 0, table.output
    printed = dict(line.rsplit("  ", 1) for line in table.output.splitlines() if line.startswith("R_net from"))
    printed = {label.strip(): value.strip() for label, value in printed.items()}
    assert set(printed) == set(R_NET_LABELS.values())

    files = [str(runs[name]) for name in ("model", "alexnet", "baseline")]
    markdown = runner.invoke(main, ["report", *files, *common, "--baseline", "baseline", "--format", "markdown"])
    assert markdown.exit_code == 0, markdown.output
    lines = markdown.output.splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    row = next([cell.strip() for cell in line.strip("|").split("|")] for line in lines if line.startswith("| fashion-mnist-c | model |"))
    for label, value in printed.items():
        assert row[header.index(label)] == value, label
    assert printed[R_NET_LABELS["r_net_mce"]] == f"{100 * 0.11 / 0.12:.2f}"

    # The JSON of both commands names the two numbers the same way and gives them the same values.
    as_json = json.loads(runner.invoke(main, ["metrics", str(runs["model"]), *common, "--baseline",
                                              str(runs["baseline"]), "--json"]).output)
    site = tmp_path / "site"
    assert runner.invoke(main, ["report", *files, *common, "--baseline", "baseline", "--out", str(site)]).exit_code == 0
    board_row = next(r for r in json.loads((site / "leaderboard.json").read_text())["rows"] if r["model"] == "model")
    for key in R_NET_LABELS:
        assert board_row[key] == pytest.approx(as_json[key]) and as_json[key] is not None
    assert "r_net" not in as_json and "r_net" not in board_row
