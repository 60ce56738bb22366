"""``rbpp compare A B``: is B really better (or worse) than A? Paired statistics on the same images."""

from __future__ import annotations

import json
import sys

import click

from robustbench_pp.cli._types import FiniteFloatRange

from robustbench_pp.cli._errors import library_errors, with_flags
from robustbench_pp.cli.metrics_cmd import REFERENCE_ALIASES

_INCOMPARABLE = 2


def _interval(value, unit: str) -> tuple[str, str, str]:
    """(estimate, interval, mark) columns of one difference; errors arrive in percentage points."""
    if value is None:
        return "—", "", ""
    mark = "*" if value["excludes_zero"] else ""
    return f"{value['estimate']:+.2f}", f"[{value['low']:+.2f}, {value['high']:+.2f}] {unit}", mark


def _verdict(document: dict) -> list[str]:
    """In plain words: which differences the paired intervals establish, and which they do not."""
    words = []
    for key, label in (("clean_error", "clean error E"), ("unnormalized_mean_error", "unnormalised mean error"),
                       ("mce", "mCE")):
        value = document["delta"][key]
        if value is None:
            continue
        span = f"{value['estimate']:+.2f} points, {round(100 * document['level'], 1):g}% interval {value['low']:+.2f} to {value['high']:+.2f}"
        if value["excludes_zero"]:
            direction = "lower" if value["estimate"] < 0 else "higher"
            words.append(f"{document['b']} has a {direction} {label} than {document['a']} on these images ({span})")
        else:
            words.append(f"{label}: no difference shown between {document['b']} and {document['a']} ({span}; "
                         "the interval includes 0)")
    return words


def _print_table(document: dict, cells_shown: str = "all") -> None:
    from robustbench_pp.metrics import R_NET_LABELS

    level = round(100 * document["level"], 1)
    reference = document["reference"] or "none"
    if document["reference"] and document["reference_resampled"]:
        reference += " (resampled with the images)"
    click.echo(f"A: {document['a']} ({document['a_file']})")
    click.echo(f"B: {document['b']} ({document['b_file']})")
    click.echo(f"{document['dataset']}, {document['images']} images per cell; reference: {reference}; "
               f"paired bootstrap, {document['resamples']} resamples, {level:g}% intervals")
    rows = [
        ("clean error E", document["delta"]["clean_error"], "pp"),
        ("unnormalised mean error", document["delta"]["unnormalized_mean_error"], "pp"),
        ("mCE", document["delta"]["mce"], "pp"),
        (R_NET_LABELS["r_net_unnormalized"] + ", B vs A", document["delta"]["r_net_unnormalized"], "%"),
        (R_NET_LABELS["r_net_mce"] + ", B vs A", document["delta"]["r_net_mce"], "%"),
    ]
    width = max(len(label) for label, _, _ in rows)
    click.echo(f"\n{'B − A':<{width}}  {'estimate':>8}  {level:g}% interval")
    for label, value, unit in rows:
        estimate, interval, mark = _interval(value, unit)
        click.echo(f"{label:<{width}}  {estimate:>8}  {interval} {mark}".rstrip())
    click.echo("(* the interval excludes zero: a difference beyond the noise of which images were drawn)")
    cells = document["cells"]
    significant = [c for c in cells if c["significant"]]
    click.echo(f"\nper cell: exact McNemar test, Holm-adjusted across {len(cells)} cells; {len(significant)} differ at "
               f"alpha {document['alpha']:g} (marked *)")
    if cells_shown != "none":
        click.echo(f"{'cell':<22} {'Δ (pp)':>7} {'B only wrong':>12} {'A only wrong':>12} {'p':>9} {'p Holm':>9}")
    for cell in cells if cells_shown == "all" else significant if cells_shown == "significant" else ():
        name = f"{cell['corruption']}/{cell['severity']}"
        click.echo(f"{name:<22} {cell['delta']:+7.2f} {cell['b_only_wrong']:>12} {cell['a_only_wrong']:>12} "
                   f"{cell['p_value']:>9.3g} {cell['p_holm']:>9.3g}{' *' if cell['significant'] else ''}")
    click.echo("")
    for line in _verdict(document):
        click.echo(f"verdict: {line}")
    for note in document["notes"]:
        click.echo(f"note: {note}")


@click.command()
@click.argument("a_file", metavar="A.jsonl", type=click.Path(dir_okay=False))
@click.argument("b_file", metavar="B.jsonl", type=click.Path(dir_okay=False))
@click.option("--reference", "reference_choice", default=None, metavar="alexnet|FILE",
              help="mCE normaliser: 'alexnet' (ImageNet-C, the default there) or the results file of a reference "
                   "model on the same images (resampled with them).")
@click.option("--alpha", default=0.05, show_default=True,
              type=FiniteFloatRange(min=0, max=1, min_open=True, max_open=True),
              help="Family-wise level of the Holm-adjusted McNemar tests; intervals are at 1 − alpha.")
@click.option("--resamples", default=2000, show_default=True, type=click.IntRange(min=100, max=1_000_000),
              help="Bootstrap replicates (images resampled jointly for A, B and the reference run).")
@click.option("--cells", "cells_shown", type=click.Choice(["all", "significant", "none"]), default="all",
              show_default=True, help="Which cells the table lists (the JSON always has all).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document instead of a table.")
def compare(a_file, b_file, reference_choice, alpha, resamples, cells_shown, as_json) -> None:
    """Paired comparison of two runs over the same images: B − A with intervals, per-cell McNemar tests.

    Exit 0 when the runs are comparable, 2 when they are not (other images, dataset, preset,
    seed, subset or protocol, no per-image results, or an unreadable file), with the reason.
    """
    from robustbench_pp import results

    command = click.get_current_context().command
    try:
        with library_errors(aliases=REFERENCE_ALIASES):
            try:
                comparison = results.compare_files(a_file, b_file, reference=reference_choice, alpha=alpha,
                                                   resamples=resamples)
            except (results.IncomparableRunsError, results.ResultsFileError) as exc:
                raise _Incomparable(str(exc)) from None
    except _Incomparable as exc:
        click.echo(f"rbpp compare: {with_flags(str(exc), command, REFERENCE_ALIASES)}", err=True)
        sys.exit(_INCOMPARABLE)
    document = comparison.to_json()
    if as_json:
        click.echo(json.dumps(document, indent=2, allow_nan=False))
    else:
        _print_table(document, cells_shown)


class _Incomparable(Exception):
    """Raised inside the command to leave ``library_errors`` with exit code 2 instead of 1."""
