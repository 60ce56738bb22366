"""Render the static, self-contained HTML report: leaderboard, per-model and comparison pages.

Everything is rendered in memory first (a failure while rendering writes nothing);
:mod:`~robustbench_pp.report.publish` then moves the files into the output folder.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from robustbench_pp._version import __version__
from robustbench_pp.metrics import R_NET_LABELS
from robustbench_pp.names import ALL_CORRUPTIONS, CLEAN, CORRUPTIONS, EXTRA_CORRUPTIONS, SEVERITIES
from robustbench_pp.report import plots, statistics
from robustbench_pp.report.assets import CONTENT_SECURITY_POLICY, SCRIPT
from robustbench_pp.report.leaderboard import (
    MEASURED,
    R_NET_NOTE,
    SEED_NOTE,
    Leaderboard,
    LeaderboardRow,
    build_leaderboard,
    corruption_errors,
    leaderboard_csv,
    leaderboard_json,
    leaderboard_markdown,
    number,
    paired_delta_text,
    percent,
    signed_points,
)
from robustbench_pp.results import Reference, RunTable

#: Provenance keys shown first on a model page, in this order; others follow sorted.
_PROVENANCE_ORDER = (
    "checkpoint_sha256", "dataset_fingerprint", "preset", "seed", "data_mode", "num_images", "subset", "settings",
    "package_version", "git_commit", "torch_version", "torchvision_version", "cuda_version", "python_version",
    "device", "command",
)


def page_name(table: RunTable) -> str:
    """A safe, stable file name for a run's page: a readable slug plus a short hash."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{table.label}-{table.dataset}").strip("-._")[:60] or "model"
    identity = json.dumps([table.model, table.recipe, table.dataset, table.provenance.get("checkpoint_sha256")])
    return f"model-{slug}-{hashlib.sha256(identity.encode()).hexdigest()[:8]}.html"


def _environment():
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("robustbench_pp.report", "templates"),
        autoescape=True,  # every page, whatever the file extension: model names are data
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["pct"] = percent
    environment.filters["num"] = number
    environment.filters["value"] = lambda v: "" if v is None else repr(float(v))
    environment.filters["r_net_html"] = _r_net_html
    environment.filters["points"] = signed_points
    environment.filters["interval"] = _interval_text
    environment.globals["paired_delta_text"] = paired_delta_text
    environment.globals.update(
        csp=CONTENT_SECURITY_POLICY, script=jinja2.utils.markupsafe.Markup(SCRIPT), version=__version__,
        r_net_note=R_NET_NOTE, r_net_labels=R_NET_LABELS, seed_note=SEED_NOTE,
    )
    return environment


def _interval_text(interval, scale: float = 100.0) -> str:
    """``[47.49, 50.73]`` of a (low, high) pair of fractions (in %), or an empty string."""
    if interval is None:
        return ""
    return f"[{scale * interval[0]:.2f}, {scale * interval[1]:.2f}]"


def _r_net_html(label: str):
    """A label with R_net typeset as R<sub>net</sub> (the words stay those of :data:`R_NET_LABELS`)."""
    from markupsafe import Markup, escape

    return Markup(str(escape(label)).replace("R_net", "R<sub>net</sub>"))


def _format_value(value) -> str:
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True)
    return "—" if value is None else str(value)


def provenance_items(table: RunTable) -> list[tuple[str, str]]:
    """(key, text) pairs describing what produced a run, for its page.

    Per-run keys come from the run's provenance (they agree across a run by construction);
    creation times and devices are summarised over all records, with the total wall time.
    """
    provenance = dict(table.provenance)
    keys = [k for k in _PROVENANCE_ORDER if k in provenance]
    keys += sorted(k for k in provenance if k not in keys and k != "created_utc")
    items = [(k, _format_value(provenance[k])) for k in keys]
    devices = sorted({str(r.provenance.get("device")) for r in table.records})
    if len(devices) > 1:
        items.append(("devices (all cells)", ", ".join(devices)))
    created = sorted(str(r.provenance.get("created_utc")) for r in table.records if r.provenance.get("created_utc"))
    if created:
        items.append(("created_utc", created[0] if created[0] == created[-1] else f"{created[0]} … {created[-1]}"))
    items.append(("cells / wall time", f"{len(table.records)} cells, {sum(r.seconds for r in table.records):.1f} s"))
    return items


@dataclass(frozen=True)
class _Cell:
    text: str
    value: float | None
    title: str


def _cell_rows(table: RunTable) -> list[tuple[str, list[_Cell]]]:
    by_cell = {r.cell: r for r in table.records}
    rows = []
    for name in ALL_CORRUPTIONS:
        cells = []
        for severity in SEVERITIES:
            record = by_cell.get((name, severity))
            if record is None:
                cells.append(_Cell("—", None, "not evaluated"))
                continue
            title = f"{record.n_total - record.n_correct} errors / {record.n_total} images"
            if record.ci95:
                title += f"; 95% CI {100 * record.ci95[0]:.2f}–{100 * record.ci95[1]:.2f}%"
            cells.append(_Cell(percent(record.top1_error), record.top1_error, title))
        if any(c.value is not None for c in cells):
            rows.append((name, cells))
    return rows


def _comparison(tables: Sequence[RunTable], base: RunTable) -> dict:
    names = [n for n in ALL_CORRUPTIONS if any(n in t.errors for t in tables)]
    rows = []
    for name in [CLEAN, *names]:
        values = []
        for table in tables:
            if name == CLEAN:
                value = table.clean_error
            else:
                value = sum(table.errors[name]) / len(SEVERITIES) if name in table.errors else None
            values.append(value)
        base_value = values[tables.index(base)]
        deltas = [None if v is None or base_value is None or t is base else v - base_value for v, t in zip(values, tables)]
        rows.append({"name": name, "extra": name in EXTRA_CORRUPTIONS, "values": values, "deltas": deltas})
    helped = {}
    for column, table in enumerate(tables):
        if table is base:
            continue
        benchmark = [r["deltas"][column] for r in rows if r["name"] in CORRUPTIONS and r["deltas"][column] is not None]
        helped[table.label] = (sum(d < 0 for d in benchmark), sum(d > 0 for d in benchmark), len(benchmark))
    return {"rows": rows, "helped": helped}


def _paired_section(table: RunTable, base: RunTable, board: Leaderboard, reference: Reference | None,
                    tables: Sequence[RunTable]) -> dict:
    """One model against the comparison page's base: paired Δ with intervals, and a grid of per-cell tests."""
    comparison = board.comparisons.get((table.dataset, table.label))
    row = next((r for r in board.rows if r.dataset == table.dataset and r.label == table.label), None)
    note = None
    if comparison is None or row is None or row.baseline != base.label:  # measured against another baseline
        delta = statistics.paired_against(base, table, reference, statistics.reference_run(tables, reference))
        comparison, note = delta.comparison, delta.note
    if comparison is None:
        return {"label": table.label, "comparison": None, "note": note}
    tests = {(t.corruption, t.severity): t for t in comparison.paired.cells}
    grid = []
    for name in [CLEAN, *ALL_CORRUPTIONS]:
        severities = [0] if name == CLEAN else list(SEVERITIES)
        if any((name, s) in tests for s in severities):
            grid.append((name, [tests.get((name, s)) for s in severities]))
    return {"label": table.label, "comparison": comparison, "note": note, "grid": grid,
            "significant": len(comparison.significant_cells), "cells": len(comparison.paired.cells)}


def _interval_plots(board: Leaderboard) -> list[tuple[str, str]]:
    """(dataset, plot) of each dataset's measured rows: mCE with intervals and the paired Δ vs the baseline."""
    plots_by_dataset = []
    for dataset in board.datasets:
        rows = [r for r in board.rows if r.dataset == dataset and r.source == MEASURED]
        baseline = next((r.baseline for r in rows if r.baseline), None)
        plot = plots.interval_plot(rows, baseline)
        if plot:
            plots_by_dataset.append((dataset, plot))
    return plots_by_dataset


def render_report(
    tables: Sequence[RunTable],
    references: Mapping[str, Reference | None],
    baseline: str | None = None,
    reported: Sequence[LeaderboardRow] = (),
    group_seeds: bool = False,
) -> tuple[Leaderboard, dict[str, bytes]]:
    """Render every file of the report in memory.

    Args:
        tables: the measured runs (one per results file).
        references: dataset -> mCE normaliser, or None (mCE columns stay empty, with a note).
        baseline: label or model name of the R_net baseline, looked up per dataset.
        reported: rows of paper numbers (see :func:`~robustbench_pp.report.reported.load_reported`).
        group_seeds: runs sharing a label are training seeds: one row each (mean and spread).

    Returns:
        ``(leaderboard, files)`` where ``files`` maps file names (``index.html``,
        ``leaderboard.csv``, ``leaderboard.json``, ``leaderboard.md``, model and comparison
        pages) to their bytes.

    Raises:
        ValueError: when labels collide on a dataset or the baseline is ambiguous.
    """
    pages = {i: page_name(t) for i, t in enumerate(tables)}
    if len(set(pages.values())) != len(pages):
        raise ValueError("two runs would share a page: give them distinct labels or checkpoints")
    board = build_leaderboard(tables, references, baseline, reported, pages, group_seeds)
    environment = _environment()
    files: dict[str, bytes] = {}
    compare_pages = []
    for dataset in board.datasets:
        group = [t for t in tables if t.dataset == dataset and t.errors]
        if len(group) < 2:
            continue
        base_row = next((r for r in board.rows if r.dataset == dataset and r.source == MEASURED and r.baseline), None)
        base = next((t for t in group if base_row and t.label == base_row.baseline), group[0])
        group = [base, *[t for t in group if t is not base]]  # the baseline's column first
        name = "compare-" + re.sub(r"[^A-Za-z0-9._-]+", "-", dataset) + ".html"
        compare_pages.append((dataset, name))
        paired = [_paired_section(t, base, board, references.get(dataset), tables) for t in group if t is not base]
        files[name] = environment.get_template("compare.html").render(
            title=f"Comparison on {dataset}", dataset=dataset, tables=group, base=base,
            comparison=_comparison(group, base), plot=plots.comparison_bars(group), compare_pages=compare_pages,
            has_extra=any(n in t.errors for t in group for n in EXTRA_CORRUPTIONS), paired=paired,
        ).encode("utf-8")
    rows_by_page = {r.page: r for r in board.rows if r.page}
    for index, table in enumerate(tables):
        reference = references.get(table.dataset)
        ce = corruption_errors(table, reference)
        files[pages[index]] = environment.get_template("model.html").render(
            title=f"{table.label} on {table.dataset}", table=table, row=rows_by_page.get(pages[index]) or next(
                r for r in board.rows if r.source == MEASURED and (r.dataset, r.label) == (table.dataset, table.label)),
            reference=reference, ce=ce, cell_rows=_cell_rows(table), provenance=provenance_items(table),
            heatmap=plots.error_heatmap(table), curves=plots.severity_curves(table),
            bars=plots.corruption_bars(table, ce), compare_pages=compare_pages,
            has_extra=any(r.corruption in EXTRA_CORRUPTIONS for r in table.records),
            notes=board.notes.get(table.dataset, ()),
        ).encode("utf-8")
    citations = sorted({r.citation for r in board.rows if r.citation})
    files["index.html"] = environment.get_template("index.html").render(
        title="Leaderboard", board=board, compare_pages=compare_pages, citations=citations,
        interval_plots=_interval_plots(board),
    ).encode("utf-8")
    files["leaderboard.csv"] = leaderboard_csv(board).encode("utf-8")
    files["leaderboard.json"] = (json.dumps(leaderboard_json(board), indent=2, allow_nan=False) + "\n").encode("utf-8")
    files["leaderboard.md"] = leaderboard_markdown(board).encode("utf-8")
    return board, files
