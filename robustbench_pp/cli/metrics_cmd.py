"""``rbpp metrics``: headline robustness numbers of a results file."""

from __future__ import annotations

import json
from dataclasses import asdict

import click


def resolve_reference(choice: str | None, dataset: str):
    """The normaliser for ``dataset``: 'alexnet', a results file, or the dataset's default.

    Returns ``(Reference | None, note)``; raises ClickException for an unusable choice.
    """
    from robustbench_pp import results

    if choice is None:
        if results.is_imagenet_c(dataset):
            return results.ALEXNET_REFERENCE, None
        return None, (
            f"no reference for {dataset}: AlexNet's published errors apply to ImageNet-C only; "
            "pass --reference RESULTS.jsonl (e.g. an AlexNet evaluated by rbpp on the same data) for mCE"
        )
    if choice == "alexnet":
        if not results.is_imagenet_c(dataset):
            raise click.ClickException(
                f"--reference alexnet uses the published ImageNet-C errors, which do not apply to {dataset}; "
                "pass a results file of a reference model evaluated on the same data"
            )
        return results.ALEXNET_REFERENCE, None
    try:
        table = results.run_table(results.read_records(choice))
        if table.dataset != dataset:
            raise click.ClickException(f"reference {choice} is on {table.dataset}, not {dataset}")
        return results.reference_from_run(table), None
    except (results.ResultsFileError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None


def load_table(path: str):
    from robustbench_pp import results

    try:
        return results.run_table(results.read_records(path))
    except (results.ResultsFileError, ValueError) as exc:
        raise click.ClickException(f"{path}: {exc}") from None


def _pct(value) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def run_intervals(table, reference) -> dict:
    """95% bootstrap intervals of the run's mean errors, when its records keep per-image results."""
    from robustbench_pp.metrics import CORRUPTIONS, SEVERITIES
    from robustbench_pp.metrics.bootstrap import bootstrap_mean_errors_ci

    cells = {r.cell: r.correct_mask() for r in table.records}
    try:
        masks = {c: [cells[(c, s)] for s in SEVERITIES] for c in CORRUPTIONS}
    except KeyError:
        return {}
    if any(m is None for row in masks.values() for m in row):
        return {}
    seed = int(table.records[0].provenance.get("bootstrap_seed") or 0)
    return bootstrap_mean_errors_ci(masks, reference=reference.errors if reference else None, seed=seed)


def print_summary(results_file: str, reference_choice: str | None, baseline: str | None, *,
                  as_json: bool = False, allow_incomplete: bool = False) -> None:
    """Print the headline numbers of a results file (shared by ``metrics`` and ``evaluate``)."""
    from robustbench_pp import results

    table = load_table(results_file)
    if not table.complete and allow_incomplete:
        clean = "—" if table.clean_error is None else f"{100 * table.clean_error:.2f}"
        click.echo(f"{table.label} on {table.dataset}: clean error E = {clean} %; mCE needs the clean cell and all "
                   f"15 corruptions × 5 severities ({len(table.missing)} cell(s) not evaluated)")
        return
    reference, note = resolve_reference(reference_choice, table.dataset)
    baseline_table = load_table(baseline) if baseline else None
    if baseline_table is not None and baseline_table.dataset != table.dataset:
        raise click.ClickException(f"baseline {baseline} is on {baseline_table.dataset}, not {table.dataset}")
    try:
        summary = results.summarize_run(table, reference, baseline_table)
    except results.IncompleteRunError as exc:
        raise click.ClickException(str(exc)) from None
    intervals = run_intervals(table, reference)
    payload = {"model": table.label, "dataset": table.dataset, "num_images": table.num_images, **asdict(summary),
               "ci95": intervals}
    if note:
        payload["note"] = note
    if as_json:
        click.echo(json.dumps(payload, indent=2))
        return

    def with_ci(value, key):
        text = _pct(value)
        if value is not None and key in intervals:
            low, high = intervals[key]
            text += f"  (95% CI {100 * low:.2f}–{100 * high:.2f})"
        return text

    rows = [
        ("model", table.label),
        ("dataset", f"{table.dataset} ({table.num_images} images per cell)"),
        ("clean error E (%)", _pct(summary.clean_error)),
        ("mCE (%)", with_ci(summary.mce, "mce")),
        ("relative mCE (%)", _pct(summary.relative_mce)),
        ("unnormalised mean error (%)", with_ci(summary.unnormalized_mean_error, "unnormalized_mean_error")),
        ("reference", summary.reference or "none"),
    ]
    if baseline_table is not None:
        rows.append((f"R_net vs {baseline_table.label} (%)", "—" if summary.r_net is None else f"{summary.r_net:.2f}"))
        rows.append(("R_net from unnormalised error (%)", f"{summary.r_net_unnormalized:.2f}"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")
    for text in (note, summary.note if reference is not None else None):
        if text:
            click.echo(f"note: {text}")
    if baseline_table is not None:
        click.echo("note: R_net's formula is reconstructed from the PushPull-Net table (it fits every row within rounding).")


@click.command()
@click.argument("results_file", type=click.Path(dir_okay=False))
@click.option("--reference", "reference_choice", default=None, metavar="alexnet|FILE",
              help="Normaliser for mCE: 'alexnet' (ImageNet-C only) or a results file on the same data.")
@click.option("--baseline", type=click.Path(dir_okay=False), default=None, help="Results file of the R_net baseline.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def metrics(results_file: str, reference_choice: str | None, baseline: str | None, as_json: bool) -> None:
    """Print E, mCE, relative mCE, unnormalised mean error and R_net of RESULTS_FILE."""
    print_summary(results_file, reference_choice, baseline, as_json=as_json)
