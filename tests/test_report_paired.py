"""The report's statistics (issue 13): 95% intervals, paired Δ vs the baseline, marked cells, the plot."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from _paired_records import flip_correct, run_with_bits
from _records import full_run
from robustbench_pp import results
from robustbench_pp.cli import main
from robustbench_pp.report import COLUMNS, build_leaderboard, leaderboard_markdown, load_reported
from robustbench_pp.report.statistics import NO_BITS_NOTE, REPORTED_NOTE

REPORTED_FILE = Path(__file__).resolve().parents[1] / "results" / "reported" / "pushpull-net-imagenet.json"
DIFFICULTY = np.random.default_rng(11).normal(size=400)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """alexnet (the reference), a baseline, a copy of it with 25% of corrupted answers flipped, and a near twin."""
    folder = tmp_path_factory.mktemp("paired-report")
    baseline = run_with_bits(model="resnet18", difficulty=DIFFICULTY)
    worse, flips = flip_correct(baseline, 0.25)
    worse = [r.__class__(**{**r.__dict__, "model": "resnet18_pp3"}) for r in worse]
    twin = run_with_bits(error_of=lambda c, s: 0.2 + 0.05 * s + 0.005, model="resnet18_pp5", bits_seed=7,
                         difficulty=DIFFICULTY)
    alexnet = run_with_bits(error_of=lambda c, s: 0.45 + 0.07 * s, clean_error=0.3, model="alexnet", bits_seed=3,
                            difficulty=DIFFICULTY)
    paths = {}
    for name, records in (("alexnet", alexnet), ("resnet18", baseline), ("resnet18_pp3", worse), ("resnet18_pp5", twin)):
        paths[name] = folder / f"{name}.jsonl"
        results.write_records(paths[name], records)
    return paths, flips


@pytest.fixture(scope="module")
def board(runs):
    paths, _ = runs
    tables = [results.load_run(p) for p in paths.values()]
    references = results.choose_references([str(paths["alexnet"])], {"fashion-mnist-c"})
    return build_leaderboard(tables, references, baseline="resnet18", reported=load_reported(REPORTED_FILE))


@pytest.fixture(scope="module")
def site(runs, tmp_path_factory):
    paths, _ = runs
    out = tmp_path_factory.mktemp("site") / "reports"
    result = CliRunner().invoke(main, ["report", *map(str, paths.values()), "--reference", str(paths["alexnet"]),
                                       "--baseline", "resnet18", "--reported", str(REPORTED_FILE), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _row(board, label):
    return next(r for r in board.rows if r.label == label)


def test_measured_rows_carry_95_percent_intervals(board, runs):
    paths, _ = runs
    row = _row(board, "resnet18")
    table = results.load_run(paths["resnet18"])
    reference = results.reference_from_run(results.load_run(paths["alexnet"]))
    intervals = results.mean_error_intervals(table, reference)
    assert row.interval("unnormalized_mean_error") == intervals["unnormalized_mean_error"]
    assert row.interval("mce") == intervals["mce"]
    low, high = row.interval("clean_error")
    assert low < row.clean_error < high
    assert _row(board, "alexnet").interval("mce") is None  # the reference's own mCE is 100% by definition


def test_each_row_shows_its_paired_delta_against_the_baseline(board, runs):
    paths, _ = runs
    worse, twin, base = _row(board, "resnet18_pp3"), _row(board, "resnet18_pp5"), _row(board, "resnet18")
    assert worse.delta_unnormalized_mean_error > 0 and worse.excludes_zero("delta_unnormalized_mean_error")
    assert worse.excludes_zero("delta_mce") and worse.delta_mce_low > 0
    assert base.delta_unnormalized_mean_error is None and base.interval("delta_mce") is None
    # The same numbers as `rbpp compare` with the same reference (the reference run is resampled with the images).
    out = CliRunner().invoke(main, ["compare", str(paths["resnet18"]), str(paths["resnet18_pp5"]), "--reference",
                                    str(paths["alexnet"]), "--json"])
    delta = json.loads(out.output)["delta"]
    for name in ("unnormalized_mean_error", "mce"):
        assert 100 * getattr(twin, f"delta_{name}") == pytest.approx(delta[name]["estimate"])
        assert 100 * getattr(twin, f"delta_{name}_low") == pytest.approx(delta[name]["low"])
        assert 100 * getattr(twin, f"delta_{name}_high") == pytest.approx(delta[name]["high"])
        assert twin.excludes_zero(f"delta_{name}") == delta[name]["excludes_zero"]
    assert set(board.comparisons) == {("fashion-mnist-c", "alexnet"), ("fashion-mnist-c", "resnet18_pp3"),
                                      ("fashion-mnist-c", "resnet18_pp5")}


def test_rows_without_per_image_results_say_why_they_have_no_interval(board, runs):
    reported = [r for r in board.rows if r.source == "reported"]
    assert reported and all(r.interval_note == REPORTED_NOTE and r.interval("clean_error") is None for r in reported)
    old = build_leaderboard([results.run_table(full_run())], {"fashion-mnist-c": None})
    (row,) = old.rows
    assert row.interval_note == NO_BITS_NOTE and row.interval("unnormalized_mean_error") is None
    text = leaderboard_markdown(old)
    assert NO_BITS_NOTE in text and "[" not in text.splitlines()[2]


def test_markdown_shows_intervals_and_bolds_deltas_that_exclude_zero(board):
    text = leaderboard_markdown(board)
    line = next(l for l in text.splitlines() if l.startswith("| fashion-mnist-c | resnet18_pp3 |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    header = [c.strip() for c in text.splitlines()[0].strip("|").split("|")]
    assert re.fullmatch(r"\d+\.\d\d \[\d+\.\d\d, \d+\.\d\d\]", cells[header.index("E (%)")])
    assert re.fullmatch(r"\*\*\+\d+\.\d\d \[\+\d+\.\d\d, \+\d+\.\d\d\]\*\*", cells[header.index("Δ unnorm. error vs baseline (points)")])
    base = next(l for l in text.splitlines() if l.startswith("| fashion-mnist-c | resnet18 |"))
    assert base.rstrip().endswith("| baseline | baseline |")
    assert f"reported rows are {REPORTED_NOTE}" in text


def test_csv_and_json_carry_the_interval_columns(site):
    rows = list(csv.DictReader(io.StringIO((site / "leaderboard.csv").read_text())))
    assert tuple(rows[0]) == COLUMNS and "delta_mce_low" in COLUMNS and "interval_note" in COLUMNS
    payload = json.loads((site / "leaderboard.json").read_text())
    assert payload["schema_version"] == 3
    worse = next(r for r in payload["rows"] if r["model"] == "resnet18_pp3")
    assert worse["delta_unnormalized_mean_error_low"] > 0 and worse["unnormalized_mean_error_low"] is not None


def test_index_marks_real_differences_and_has_the_interval_plot(site):
    index = (site / "index.html").read_text()
    assert 'alt="mCE with 95% intervals and the paired difference to the baseline on fashion-mnist-c"' in index
    assert "Who is really better?" in index
    row = re.search(r'<tr class="measured"[^>]*>\s*<td class="text"><a [^>]*>resnet18_pp3</a>.*?</tr>', index, re.S).group(0)
    assert row.count("✱") == 2 and 'class="worse"' in row  # both Δ columns, both intervals above zero
    assert index.count('title="' + REPORTED_NOTE + '"') >= 9  # every reported row says why it has no interval


def test_comparison_page_marks_the_cells_whose_holm_adjusted_test_rejects(site, runs):
    paths, flips = runs
    page = (site / "compare-fashion-mnist-c.html").read_text()
    section = page.split("<h3>resnet18_pp3 vs resnet18</h3>", 1)[1].split("<h3>", 1)[0]
    comparison = results.compare_runs_paired(results.load_run(paths["resnet18"]), results.load_run(paths["resnet18_pp3"]))
    significant = [c for c in comparison.paired.cells if c.significant]
    assert len(significant) == sum(1 for count in flips.values() if count > 0) == 75
    assert section.count('class="significant worse"') == 75
    assert f"{flips[('fog', 3)]} images only resnet18_pp3 gets wrong, 0 only resnet18" in section
    assert "75 of 76 cells differ significantly" in section
