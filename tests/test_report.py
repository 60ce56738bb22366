"""Leaderboard rows, reported numbers, Markdown/CSV/JSON output and the HTML site."""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from _records import full_run
from robustbench_pp import results
from robustbench_pp.cli import main
from robustbench_pp.metrics import net_error_reduction
from robustbench_pp.names import CORRUPTIONS
from robustbench_pp.report import (
    COLUMNS,
    MEASURED,
    REPORTED,
    ReportedFileError,
    build_leaderboard,
    leaderboard_markdown,
    load_reported,
)
from robustbench_pp.report.assets import SCRIPT, script_hash

REPORTED_FILE = Path(__file__).resolve().parents[1] / "results" / "reported" / "pushpull-net-imagenet.json"
XSS = "<script>alert(1)</script>"


def _errors(scale, clean):
    return lambda c, s: min(0.95, clean + scale * s * (1 + CORRUPTIONS.index(c) % 3) / 10)


def _table(model, scale, clean, **kwargs):
    return results.run_table(full_run(error_of=_errors(scale, clean), clean_error=clean, model=model, **kwargs))


@pytest.fixture(scope="module")
def run_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs")
    paths = {}
    for model, scale, clean in (("alexnet_cifar", 0.25, 0.2), ("resnet18", 0.12, 0.08), (XSS, 0.1, 0.09)):
        paths[model] = folder / f"{len(paths)}.jsonl"
        results.write_records(paths[model], full_run(error_of=_errors(scale, clean), clean_error=clean, model=model))
    return paths


@pytest.fixture(scope="module")
def site(run_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("site") / "reports"
    result = CliRunner().invoke(main, [
        "report", *map(str, run_files.values()), "--reference", str(run_files["alexnet_cifar"]),
        "--baseline", "resnet18", "--reported", str(REPORTED_FILE), "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    return out


def test_measured_rows_match_the_metrics():
    alexnet, base, model = _table("alexnet_cifar", 0.25, 0.2), _table("resnet18", 0.12, 0.08), _table("resnet18_pp3", 0.1, 0.09)
    reference = results.reference_from_run(alexnet)
    board = build_leaderboard([alexnet, base, model], {"fashion-mnist-c": reference}, baseline="resnet18")
    row = next(r for r in board.rows if r.model == "resnet18_pp3")
    summary = results.summarize_run(model, reference, base)
    assert row.source == MEASURED and row.num_images == 100 and row.baseline == "resnet18"
    assert row.mce == pytest.approx(summary.mce) and row.relative_mce == pytest.approx(summary.relative_mce)
    assert row.unnormalized_mean_error == pytest.approx(summary.unnormalized_mean_error)
    expected = net_error_reduction(0.09, summary.unnormalized_mean_error, 0.08, results.summarize_run(base).unnormalized_mean_error)
    assert row.r_net_unnormalized == pytest.approx(expected)
    assert row.r_net_mce == pytest.approx(summary.r_net_mce)  # from normalised mCE
    assert row.r_net_unnormalized != pytest.approx(row.r_net_mce)
    assert [r.model for r in board.rows] == ["resnet18_pp3", "resnet18", "alexnet_cifar"]  # by unnormalised error
    assert any("normalised by alexnet_cifar" in n for n in board.notes["fashion-mnist-c"])


def test_without_reference_mce_is_empty_and_explained():
    board = build_leaderboard([_table("resnet18", 0.1, 0.08)], {"fashion-mnist-c": None})
    (row,) = board.rows
    assert row.mce is None and row.relative_mce is None and row.unnormalized_mean_error is not None
    assert any("no reference model" in note for note in board.notes["fashion-mnist-c"])


def test_incomplete_runs_and_missing_baselines_are_noted():
    records = [r for r in full_run(model="partial") if r.corruption != "snow"]
    board = build_leaderboard([results.run_table(records)], {"fashion-mnist-c": None}, baseline="nobody")
    (row,) = board.rows
    assert row.clean_error == pytest.approx(0.1) and row.unnormalized_mean_error is None
    assert "5 of 76 cells missing" in row.note
    assert any("'nobody' was not evaluated" in n for n in board.notes["fashion-mnist-c"])


def test_duplicate_labels_on_a_dataset_are_refused():
    with pytest.raises(ValueError, match="labelled 'resnet18'"):
        build_leaderboard([_table("resnet18", 0.1, 0.08), _table("resnet18", 0.2, 0.08)], {})


def test_reported_pushpull_table_is_marked_and_consistent_with_r_net():
    rows = load_reported(REPORTED_FILE)
    assert len(rows) == 9 and {r.source for r in rows} == {REPORTED}
    assert all(r.dataset == "imagenet-c" and "Bennabhaktula" in r.citation for r in rows)
    assert all(r.mce is None for r in rows)  # the paper's "mCE" is the unnormalised mean error
    base = next(r for r in rows if r.label == "ResNet50 (baseline)")
    # The table's inputs have 3 decimals: R_net must be reachable from inputs within ±0.0005 of
    # them (R_net is monotonic in each input, so the corners of that box bound it).
    for row in rows:
        corners = [
            net_error_reduction(row.clean_error + a, row.unnormalized_mean_error + b, base.clean_error + c, base.unnormalized_mean_error + d)
            for a, b, c, d in itertools.product((-0.0005, 0.0005), repeat=4)
        ]
        if row is base:
            continue  # R_net of the baseline against itself is 0 by definition
        assert min(corners) - 0.005 <= row.r_net_unnormalized <= max(corners) + 0.005, row.label


@pytest.mark.parametrize(
    "content, message",
    [
        ("not json", "not valid JSON"),
        ('{"schema": "other"}', "not a reported-numbers file"),
        ('{"schema": "robustbench_pp.reported", "schema_version": 9, "citation": "c", "dataset": "d", "rows": []}', "schema_version 9"),
        ('{"schema": "robustbench_pp.reported", "schema_version": 1, "citation": "c", "dataset": "d", '
         '"rows": [{"label": "a", "model": "m", "clean_error": 26.9}]}', "rows[0]: clean_error=26.9 is not a fraction"),
    ],
)
def test_bad_reported_files_name_the_problem(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ReportedFileError, match=re.escape(message)):
        load_reported(path)


def test_markdown_escapes_pipes_and_lists_notes():
    board = build_leaderboard([_table("a|b", 0.1, 0.08)], {"fashion-mnist-c": None})
    text = leaderboard_markdown(board)
    lines = text.splitlines()
    assert lines[0].startswith("| dataset | model | source | E (%) | mCE (%)")
    assert "| fashion-mnist-c | a\\|b | measured | 8.00 | — |" in lines[2]
    assert "no reference model" in text


def test_markdown_format_prints_and_writes_nothing(run_files, tmp_path):
    out = tmp_path / "never"
    result = CliRunner().invoke(main, ["report", str(run_files["resnet18"]), "--format", "markdown", "--out", str(out),
                                       "--reported", str(REPORTED_FILE)])
    assert result.exit_code == 0, result.output
    assert "| imagenet-c | ResNet50 + PRIME + PP3 | reported | 30.60 | — | — | 50.00 | 24.31 |" in result.output
    assert not out.exists()


def test_site_files_and_tables(site):
    names = {p.name for p in site.iterdir()}
    assert {"index.html", "leaderboard.csv", "leaderboard.json", "leaderboard.md", "compare-fashion-mnist-c.html"} <= names
    assert len([n for n in names if n.startswith("model-")]) == 3
    assert not [n for n in names if n.startswith(".")]  # the staging folder is gone
    rows = list(csv.DictReader(io.StringIO((site / "leaderboard.csv").read_text())))
    assert tuple(rows[0]) == COLUMNS and len(rows) == 3 + 9
    payload = json.loads((site / "leaderboard.json").read_text())
    assert payload["baseline"] == "resnet18" and "reconstructed" in payload["r_net_formula"]
    base = next(r for r in payload["rows"] if r["model"] == "resnet18")
    assert base["r_net_unnormalized"] == pytest.approx(0.0) and base["reference"] == "alexnet_cifar on fashion-mnist-c"


def test_pages_escape_model_names_and_pin_the_script(site):
    index = (site / "index.html").read_text()
    assert XSS not in index and "&lt;script&gt;alert(1)&lt;/script&gt;" in index
    assert index.count("<script>") == 1 and SCRIPT in index
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', index).group(1)
    assert "default-src &#39;none&#39;" in csp and script_hash().replace("'", "&#39;") in csp
    page = next(site.glob("model-script-alert-1-script-*.html")).read_text()
    assert XSS not in page and page.count('src="data:image/svg+xml;base64,') == 3
    assert "checkpoint_sha256" in page and "dataset_fingerprint" in page and "rbpp evaluate --model m" in page
    compare = (site / "compare-fashion-mnist-c.html").read_text()
    # per corruption c: 0.01 - 0.006·(1 + index(c) % 3) against resnet18, so 5 worse, 10 better
    assert XSS not in compare and "lowers the error on 10 and raises it on 5 of 15" in compare


def test_alexnet_reference_on_other_data_is_refused(run_files, tmp_path):
    result = CliRunner().invoke(main, ["report", str(run_files["resnet18"]), "--reference", "alexnet", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "do not apply to fashion-mnist-c" in result.output


def test_failed_render_leaves_no_report(run_files, tmp_path, monkeypatch):
    from robustbench_pp.report import plots

    def broken(*args, **kwargs):
        raise RuntimeError("plotting failed")

    monkeypatch.setattr(plots, "severity_curves", broken)
    out = tmp_path / "reports"
    result = CliRunner().invoke(main, ["report", str(run_files["resnet18"]), "--out", str(out)])
    assert result.exit_code != 0
    assert not out.exists() or not any(out.iterdir())


def test_results_folder_argument_and_empty_folder(run_files, tmp_path):
    folder = next(iter(run_files.values())).parent
    result = CliRunner().invoke(main, ["report", str(folder), "--format", "markdown"])
    assert result.exit_code == 0 and result.output.count("| fashion-mnist-c |") == 3
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(main, ["report", str(empty)])
    assert result.exit_code == 1 and "holds no *.jsonl" in result.output


def test_undefined_relative_mce_empties_only_that_column():
    # The reference does better under 'brightness' than clean: its relative denominator is negative.
    reference_run = results.run_table(full_run(error_of=lambda c, s: 0.1 if c == "brightness" else 0.4, clean_error=0.2))
    model = _table("resnet18", 0.1, 0.08)
    board = build_leaderboard([model], {"fashion-mnist-c": results.reference_from_run(reference_run)})
    (row,) = board.rows
    assert row.mce is not None and row.relative_mce is None
    assert "relative mCE undefined" in row.note and "brightness" in row.note
    assert "- resnet18 (fashion-mnist-c): relative mCE undefined" in leaderboard_markdown(board)


def test_rerender_replaces_files_and_drops_stale_pages(tmp_path):
    from robustbench_pp.report import render_report, write_report

    out = tmp_path / "reports"
    first = [_table("resnet18", 0.1, 0.08), _table("old_model", 0.2, 0.1)]
    write_report(render_report(first, {"fashion-mnist-c": None})[1], out)
    (out / "notes.txt").write_text("mine")
    assert len(list(out.glob("model-*.html"))) == 2 and (out / "compare-fashion-mnist-c.html").exists()
    write_report(render_report(first[:1], {"fashion-mnist-c": None})[1], out)
    assert [p.name.split("-")[1] for p in out.glob("model-*.html")] == ["resnet18"]
    assert not (out / "compare-fashion-mnist-c.html").exists()  # one model: nothing to compare
    assert (out / "notes.txt").read_text() == "mine"  # files the report did not make are left alone
    assert "old_model" not in (out / "leaderboard.csv").read_text()


# --- issue 12, item 4: the report removes only pages its own manifest lists ---------------------------


def test_rerender_keeps_the_users_files_that_look_like_pages(tmp_path):
    from robustbench_pp.report import render_report, write_report

    out = tmp_path / "reports"
    out.mkdir()
    mine = {"model-card.html": "my model card", "compare-notes.html": "my notes", "model-x-12345678.html": "mine too"}
    for name, text in mine.items():
        (out / name).write_text(text)
    first = [_table("resnet18", 0.1, 0.08), _table("old_model", 0.2, 0.1), _table("third", 0.3, 0.1)]
    write_report(render_report(first, {"fashion-mnist-c": None})[1], out)
    manifest = json.loads((out / "report-manifest.json").read_text())
    assert "index.html" in manifest["files"] and not set(mine) & set(manifest["files"])
    old_pages = sorted(p.name for p in out.glob("model-*old_model*.html"))
    edited = next(out.glob("model-third-*.html"))
    edited.write_text("the user's edit")  # no longer the page the report wrote
    with pytest.warns(UserWarning, match="model-third-.*was changed since the previous report wrote it; leaving it"):
        write_report(render_report(first[:1], {"fashion-mnist-c": None})[1], out)
    assert all((out / name).read_text() == text for name, text in mine.items())
    assert old_pages and not any((out / name).exists() for name in old_pages)  # listed, unchanged: removed
    assert edited.read_text() == "the user's edit"  # listed but changed since: left alone
    assert not (out / "compare-fashion-mnist-c.html").exists()
    assert set(json.loads((out / "report-manifest.json").read_text())["files"]) == {
        p.name for p in out.iterdir() if p.name not in mine and p != edited and p.name != "report-manifest.json"}


def test_a_folder_without_a_manifest_loses_nothing(tmp_path):
    from robustbench_pp.report import render_report, write_report

    out = tmp_path / "reports"
    out.mkdir()
    (out / "model-resnet18-from-an-old-report.html").write_text("old")
    (out / "report-manifest.json").write_text('{"files": {"model-resnet18-from-an-old-report.html": "x"}}')
    write_report(render_report([_table("resnet18", 0.1, 0.08)], {"fashion-mnist-c": None})[1], out)
    assert (out / "model-resnet18-from-an-old-report.html").read_text() == "old"


def test_a_full_disk_while_writing_the_report_leaves_the_previous_one_whole(tmp_path, monkeypatch):
    import errno
    import os

    from robustbench_pp.report import publish, render_report, write_report

    out = tmp_path / "reports"
    write_report(render_report([_table("resnet18", 0.1, 0.08)], {"fashion-mnist-c": None})[1], out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_fsync = os.fsync
    calls = []

    def full(fd):
        calls.append(fd)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(publish.os, "fsync", full)
    result = CliRunner().invoke(main, ["report", *[str(p) for p in _files(tmp_path)], "--out", str(out)])
    monkeypatch.undo()
    assert result.exit_code == 1 and "No space left on device" in result.output, result.output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def _files(tmp_path):
    paths = []
    for model in ("resnet18", "other"):
        paths.append(tmp_path / f"{model}.jsonl")
        results.write_records(paths[-1], full_run(error_of=_errors(0.1, 0.08), clean_error=0.08, model=model))
    return paths


# --- issue 12, item 10: names are plain text in plots ----------------------------------------------------


def test_a_name_with_dollar_signs_does_not_abort_the_report(tmp_path):
    import base64

    name = "a$\\frac{$b"
    paths = []
    for model in (name, "resnet18"):
        paths.append(tmp_path / f"{len(paths)}.jsonl")
        results.write_records(paths[-1], full_run(error_of=_errors(0.1, 0.08), clean_error=0.08, model=model))
    out = tmp_path / "reports"
    result = CliRunner().invoke(main, ["report", *map(str, paths), "--out", str(out)])
    assert result.exit_code == 0, result.output
    page = (out / "compare-fashion-mnist-c.html").read_text()
    svgs = [base64.b64decode(uri).decode() for uri in re.findall(r"data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)", page)]
    assert any(name in svg for svg in svgs)  # the legend shows the name as typed
