"""``rbpp metrics``: headline robustness numbers of a results file."""

from __future__ import annotations

import json

import click

from robustbench_pp.cli._errors import library_errors

#: Library parameters that these commands set under another option name.
REFERENCE_ALIASES = {"reference": "--reference"}


def _pct(value) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def _with_ci(value, intervals, key) -> str:
    text = _pct(value)
    if value is not None and key in intervals:
        low, high = intervals[key]
        text += f"  (95% CI {100 * low:.2f}–{100 * high:.2f})"
    return text


def _rows(metrics) -> list[tuple[str, str]]:
    """(label, text) lines of the metrics table."""
    from robustbench_pp.metrics import R_NET_LABELS
    from robustbench_pp.names import DEFAULT_PROTOCOL

    table, summary, intervals = metrics.table, metrics.summary, metrics.intervals
    rows = [
        ("model", table.label),
        ("dataset", f"{table.dataset} ({table.num_images} images per cell)"),
        ("protocol", table.provenance.get("protocol") or DEFAULT_PROTOCOL),
        ("clean error E (%)", _pct(summary.clean_error)),
        ("mCE (%)", _with_ci(summary.mce, intervals, "mce")),
        ("relative mCE (%)", _pct(summary.relative_mce)),
        ("unnormalised mean error (%)", _with_ci(summary.unnormalized_mean_error, intervals, "unnormalized_mean_error")),
        ("reference", summary.reference or "none"),
    ]
    if metrics.baseline is not None:
        for key in ("r_net_mce", "r_net_unnormalized"):
            value = getattr(summary, key)
            rows.append((R_NET_LABELS[key], "—" if value is None else f"{value:.2f}"))
        rows.append(("R_net baseline", metrics.baseline.label))
    return rows


def _incomplete_line(table) -> str:
    return (f"{table.label} on {table.dataset}: clean error E = {_pct(table.clean_error)} %; mCE needs the clean cell "
            f"and all 15 corruptions × 5 severities ({len(table.missing)} cell(s) not evaluated)")


def print_summary(results_file: str, reference_choice: str | None, baseline: str | None, *,
                  as_json: bool = False, allow_incomplete: bool = False) -> None:
    """Print the headline numbers of a results file (shared by ``metrics`` and ``evaluate``)."""
    from robustbench_pp import results

    with library_errors(aliases=REFERENCE_ALIASES):
        table = results.load_run(results_file)
        if not table.complete and allow_incomplete:
            click.echo(_incomplete_line(table))
            return
        choices = [reference_choice] if reference_choice else []
        reference = results.choose_references(choices, {table.dataset})[table.dataset]
        baseline_table = results.load_run(baseline) if baseline else None
        metrics = results.run_metrics(table, reference, baseline_table)
    if as_json:
        from robustbench_pp.names import DEFAULT_PROTOCOL

        protocol = table.provenance.get("protocol") or DEFAULT_PROTOCOL
        click.echo(json.dumps({**metrics.to_json(), "protocol": protocol}, indent=2))
        return
    rows = _rows(metrics)
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")
    for note in metrics.notes:
        click.echo(f"note: {note}")


@click.command()
@click.argument("results_file", type=click.Path(dir_okay=False))
@click.option("--reference", "reference_choice", default=None, metavar="alexnet|FILE",
              help="Normaliser for mCE: 'alexnet' (ImageNet-C only) or a results file on the same data.")
@click.option("--baseline", type=click.Path(dir_okay=False), default=None, help="Results file of the R_net baseline.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def metrics(results_file: str, reference_choice: str | None, baseline: str | None, as_json: bool) -> None:
    """Print E, mCE, relative mCE, unnormalised mean error and both R_net of RESULTS_FILE."""
    print_summary(results_file, reference_choice, baseline, as_json=as_json)
