"""Plots of one run or several, as self-contained SVG data URIs for the HTML report.

Figures are built with :class:`matplotlib.figure.Figure` and rendered by the SVG canvas
directly, without pyplot: no global backend state, nothing opened on screen, safe in
threads and headless CI. Text is never parsed as mathtext: a ``$`` in a model name is a dollar. Each plot is returned as ``data:image/svg+xml;base64,...`` so the
page embeds it in an ``<img>``: text inside (model names) can never run as markup.
"""

from __future__ import annotations

import base64
import functools
import io
from collections.abc import Mapping, Sequence

from robustbench_pp.names import ALL_CORRUPTIONS, CORRUPTION_GROUPS, EXTRA_CORRUPTIONS, SEVERITIES
from robustbench_pp.results import RunTable

_RC = {
    "svg.fonttype": "none",  # text stays text: smaller files, crisp at any zoom
    "svg.hashsalt": "robustbench_pp",  # deterministic ids, so identical reports are identical files
    "text.parse_math": False,  # names are data: "a$\frac{$b" is text, not a (broken) formula that aborts a report
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def _styled(plot):
    """Run a plot function under the report's rc settings (axes read them when created)."""

    @functools.wraps(plot)
    def wrapper(*args, **kwargs):
        import matplotlib

        with matplotlib.rc_context(_RC):
            return plot(*args, **kwargs)

    return wrapper


def _figure(width: float, height: float, *, left: float = 0.6, right: float = 0.2, bottom: float = 0.5, top: float = 0.35):
    """A figure with fixed margins in inches (the labels are known names, so no layout engine:
    constrained layout would double the rendering time of every plot)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    figure.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height, wspace=0.08)
    return figure


def svg_data_uri(figure) -> str:
    """Render a matplotlib figure to an SVG ``data:`` URI (no date metadata, reproducible)."""
    import matplotlib
    from matplotlib.backends.backend_svg import FigureCanvasSVG

    buffer = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": _RC["svg.fonttype"], "svg.hashsalt": _RC["svg.hashsalt"]}):
        FigureCanvasSVG(figure).print_svg(buffer, metadata={"Date": None, "Creator": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _ordered(errors: Mapping[str, Sequence[float]]) -> list[str]:
    return [name for name in ALL_CORRUPTIONS if name in errors]


@_styled
def error_heatmap(table: RunTable) -> str | None:
    """Corruption × severity top-1 error heatmap (values in %), extra corruptions last.

    Cells not evaluated (a partial run) stay blank. Returns None when no corruption cell
    was evaluated.
    """
    import numpy as np

    measured = {r.cell: r.top1_error for r in table.records}
    names = [n for n in ALL_CORRUPTIONS if any((n, s) in measured for s in SEVERITIES)]
    if not names:
        return None
    grid = np.array([[measured.get((n, s), np.nan) for s in SEVERITIES] for n in names]) * 100
    figure = _figure(6.0, 0.26 * len(names) + 0.9, left=1.45, right=0.55, bottom=0.45, top=0.3)
    axes = figure.add_subplot()
    image = axes.imshow(np.ma.masked_invalid(grid), cmap="magma_r", vmin=0, vmax=100, aspect="auto")
    axes.set_xticks(range(len(SEVERITIES)), [str(s) for s in SEVERITIES])
    axes.set_yticks(range(len(names)), [n + (" *" if n in EXTRA_CORRUPTIONS else "") for n in names])
    axes.set_xlabel("severity")
    clean = "" if table.clean_error is None else f" (clean {100 * table.clean_error:.1f}%)"
    axes.set_title(f"top-1 error (%){clean}")
    for (row, col), value in np.ndenumerate(grid):
        if np.isfinite(value):
            axes.text(col, row, f"{value:.1f}", ha="center", va="center", fontsize=7,
                      color="white" if value > 55 else "black")
    figure.colorbar(image, ax=axes, fraction=0.05, pad=0.03, label="error (%)")
    return svg_data_uri(figure)


@_styled
def severity_curves(table: RunTable) -> str | None:
    """Error versus severity, one panel per corruption group, clean error dashed."""
    groups = {g: [n for n in names if n in table.errors] for g, names in CORRUPTION_GROUPS.items()}
    extra = [n for n in EXTRA_CORRUPTIONS if n in table.errors]
    if extra:
        groups["extra"] = extra
    groups = {g: names for g, names in groups.items() if names}
    if not groups:
        return None
    figure = _figure(2.6 * len(groups), 2.8, left=0.55, right=0.1, bottom=0.45, top=0.3)
    panels = figure.subplots(1, len(groups), sharey=True, squeeze=False)[0]
    for axes, (group, names) in zip(panels, groups.items()):
        for name in names:
            axes.plot(SEVERITIES, [100 * e for e in table.errors[name]], marker="o", markersize=3, label=name)
        if table.clean_error is not None:
            axes.axhline(100 * table.clean_error, color="grey", linestyle="--", linewidth=1, label="clean")
        axes.set_title(group)
        axes.set_xticks(SEVERITIES)
        axes.set_xlabel("severity")
        axes.set_ylim(0, 100)
        axes.legend(fontsize=6, loc="upper left", frameon=False)
    panels[0].set_ylabel("top-1 error (%)")
    return svg_data_uri(figure)


@_styled
def corruption_bars(table: RunTable, ce: Mapping[str, float]) -> str | None:
    """Bars of CE per corruption (normalised, in %, with the 100% reference line).

    Without a reference (``ce`` empty) the bars show the mean error per corruption instead,
    and the axis says so.
    """
    names = _ordered(table.errors)
    if not names:
        return None
    normalised = bool(ce)
    values = [100 * (ce[n] if normalised else sum(table.errors[n]) / len(SEVERITIES)) for n in names]
    figure = _figure(6.4, 3.2, left=0.6, right=0.1, bottom=1.25, top=0.3)
    axes = figure.add_subplot()
    colors = ["#9e9e9e" if n in EXTRA_CORRUPTIONS else "#3b6ea8" for n in names]
    axes.bar(range(len(names)), values, color=colors)
    axes.set_xticks(range(len(names)), names, rotation=60, ha="right")
    if normalised:
        axes.axhline(100, color="#b33", linewidth=1, linestyle="--")
        axes.set_ylabel("CE (%) vs reference")
    else:
        axes.set_ylabel("mean error (%), unnormalised")
    axes.set_title("corruption error per corruption" + ("" if normalised else " (no reference: unnormalised)"))
    return svg_data_uri(figure)


@_styled
def comparison_bars(tables: Sequence[RunTable]) -> str | None:
    """Mean error per corruption (over severities), models side by side."""
    names = [n for n in ALL_CORRUPTIONS if any(n in t.errors for t in tables)]
    if not names or not tables:
        return None
    figure = _figure(max(6.4, 0.45 * len(names) * max(1, len(tables)) / 2), 3.6, left=0.6, right=0.1, bottom=1.25, top=0.45)
    axes = figure.add_subplot()
    width = 0.8 / len(tables)
    for index, table in enumerate(tables):
        xs = [i + (index - (len(tables) - 1) / 2) * width for i in range(len(names))]
        ys = [100 * sum(table.errors[n]) / len(SEVERITIES) if n in table.errors else 0.0 for n in names]
        axes.bar(xs, ys, width=width, label=table.label)
    axes.set_xticks(range(len(names)), names, rotation=60, ha="right")
    axes.set_ylabel("mean error over severities (%)")
    axes.legend(fontsize=7, frameon=False, ncols=min(4, len(tables)), loc="lower left", bbox_to_anchor=(0, 1.0))
    return svg_data_uri(figure)


@_styled
def interval_plot(rows: Sequence, baseline: str | None) -> str | None:
    """Each model's mCE (or unnormalised mean error without a reference) with its 95% interval, and
    its paired Δ against the baseline with the paired 95% interval.

    Args:
        rows: leaderboard rows of one dataset (rows without an interval are left out).
        baseline: the baseline's label (drawn at Δ = 0), or None for the first panel only.

    Returns:
        An SVG data URI, or None when no row has an interval.
    """
    use_mce = any(row.interval("mce") for row in rows)
    name = "mce" if use_mce else "unnormalized_mean_error"
    if not any(row.interval(name) for row in rows):
        return None
    # Rows with a value and an interval of it or of their Δ (the reference run: mCE 100% by definition, no interval).
    shown = [row for row in rows if getattr(row, name) is not None and (row.interval(name) or row.interval(f"delta_{name}"))]
    shown.sort(key=lambda row: getattr(row, name), reverse=True)  # best at the top
    deltas = baseline is not None and any(row.interval(f"delta_{name}") for row in shown)
    figure = _figure(7.6 if deltas else 4.4, 0.34 * len(shown) + 1.05, left=1.6, right=0.25, bottom=0.5, top=0.35)
    panels = figure.subplots(1, 2 if deltas else 1, sharey=True, squeeze=False)[0]
    ys = list(range(len(shown)))
    label = "mCE (%)" if use_mce else "unnormalised mean error (%)"
    values = [100 * getattr(row, name) for row in shown]
    bounds = [row.interval(name) or (getattr(row, name),) * 2 for row in shown]
    panels[0].errorbar(values, ys, xerr=[[v - 100 * lo for v, (lo, _) in zip(values, bounds)],
                                          [100 * hi - v for v, (_, hi) in zip(values, bounds)]],
                       fmt="o", color="#3b6ea8", capsize=3, markersize=4)
    panels[0].set_yticks(ys, [row.label for row in shown])
    panels[0].set_xlabel(label)
    panels[0].set_title(f"{label}, 95% interval")
    if deltas:
        axes = panels[1]
        axes.axvline(0, color="grey", linewidth=1, linestyle="--")
        for y, row in zip(ys, shown):
            interval = row.interval(f"delta_{name}")
            if row.label == baseline:
                axes.plot([0], [y], marker="D", color="grey", markersize=4)
                continue
            if interval is None:
                continue
            value = 100 * getattr(row, f"delta_{name}")
            real = row.excludes_zero(f"delta_{name}")
            color = "#1a7f37" if real and value < 0 else "#b42318" if real else "#5b6475"
            axes.errorbar([value], [y], xerr=[[value - 100 * interval[0]], [100 * interval[1] - value]], fmt="o",
                          color=color, capsize=3, markersize=5, markerfacecolor=color if real else "white")
        axes.set_xlabel(f"Δ vs {baseline} (points)")
        axes.set_title("paired Δ, 95% interval (filled: excludes 0)")
    return svg_data_uri(figure)
