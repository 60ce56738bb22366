"""``rbpp report`` (static HTML leaderboard) and ``rbpp check`` (CI regression gate)."""

from __future__ import annotations

import sys
import warnings

import click

from robustbench_pp.cli._errors import library_errors, with_flags
from robustbench_pp.cli._types import FiniteFloatRange
from robustbench_pp.cli.metrics_cmd import REFERENCE_ALIASES


@click.command()
@click.argument("results_paths", metavar="RESULTS...", nargs=-1, type=click.Path())
@click.option("--baseline", default=None, metavar="NAME", help="Label or model name of the R_net baseline (per dataset).")
@click.option("--reference", "reference_choices", multiple=True, metavar="alexnet|FILE",
              help="mCE normaliser: 'alexnet' (ImageNet-C, the default there) or a results file of a reference "
                   "model on the same data; repeat for several datasets.")
@click.option("--reported", "reported_files", multiple=True, type=click.Path(dir_okay=False),
              help="JSON file of numbers reported in a paper, shown as marked rows (repeatable).")
@click.option("--out", "out_dir", default="reports", show_default=True, type=click.Path(file_okay=False),
              help="Folder of the HTML site (index.html, leaderboard.csv/.json/.md, pages).")
@click.option("--format", "output_format", type=click.Choice(["html", "markdown"]), default="html", show_default=True,
              help="'markdown' prints the leaderboard as a Markdown table and writes nothing.")
@click.option("--group-seeds", is_flag=True,
              help="Runs sharing a label on a dataset are training seeds of one model: one row with their mean "
                   "and spread beside the within-run intervals.")
def report(results_paths, baseline, reference_choices, reported_files, out_dir, output_format, group_seeds) -> None:
    """Render the leaderboard of RESULTS (files or folders of *.jsonl) as a static HTML site."""
    from robustbench_pp import report as report_lib
    from robustbench_pp import results

    with library_errors(aliases=REFERENCE_ALIASES):
        files = results.result_files(results_paths)
        if not files and not reported_files:
            raise click.UsageError("give at least one RESULTS file or folder, or --reported FILE")
        tables = [results.load_run(path) for path in files]
        references = results.choose_references(reference_choices, {t.dataset for t in tables})
        reported = [row for path in reported_files for row in report_lib.load_reported(path)]
        if output_format == "markdown":
            board = report_lib.build_leaderboard(tables, references, baseline, reported, group_seeds=group_seeds)
            click.echo(report_lib.leaderboard_markdown(board), nl=False)
            return
        board, rendered = report_lib.render_report(tables, references, baseline, reported, group_seeds=group_seeds)
    with library_errors(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        index = report_lib.write_report(rendered, out_dir)
    for warning in caught:
        click.echo(f"warning: {warning.message}", err=True)
    click.echo(f"report: {index} ({len(board.rows)} leaderboard rows, {len(rendered)} files)")


class _CannotCompare(click.ClickException):
    """Any failure of ``rbpp check`` other than a regression: exit 2, as exit 1 means only "regression"."""

    exit_code = 2

    def format_message(self) -> str:
        return f"cannot compare: {self.message}"


@click.command()
@click.argument("results_file", metavar="RESULTS", type=click.Path(dir_okay=False))
@click.option("--against", "reference_file", required=True, type=click.Path(dir_okay=False),
              help="Reference results file, e.g. results/reference/<run>.jsonl.")
@click.option("--tolerance-cell", default=0.02, show_default=True, type=FiniteFloatRange(min=0, max=1),
              help="Allowed absolute change of a cell's top-1 error (fraction: 0.02 = 2 points).")
@click.option("--tolerance-mce", default=0.01, show_default=True, type=FiniteFloatRange(min=0, max=1),
              help="Allowed absolute change of the unnormalised mean error (and of mCE on ImageNet-C).")
@click.option("--ci-aware", is_flag=True, help="Flag a cell only when the new error is also outside the reference's 95% interval.")
@click.option("--two-sided", is_flag=True, help="Fail on improvements beyond tolerance too (deterministic references).")
@click.option("--paired", is_flag=True,
              help="Same images as the reference: fail only on changes the paired statistics call real "
                   "(cells: Holm-adjusted McNemar; mean errors: paired 95% interval). See docs/ci.md.")
def check(results_file, reference_file, tolerance_cell, tolerance_mce, ci_aware, two_sided, paired) -> None:
    """Compare RESULTS with a reference run: exit 0 within tolerance, 1 on regression, 2 if incomparable.

    Unreadable or malformed inputs (also a torn last line: an interrupted run), bad options
    and any other error also exit 2: exit 1 means a regression and nothing else.
    """
    from robustbench_pp.results import TornLineWarning

    command = click.get_current_context().command
    try:
        with warnings.catch_warnings():
            # A torn last line means its writer was killed: the gate compares finished runs only.
            warnings.simplefilter("error", TornLineWarning)
            code = _check(results_file, reference_file, tolerance_cell, tolerance_mce, ci_aware, two_sided, paired,
                          command)
    except TornLineWarning as exc:
        raise _CannotCompare(f"{exc}; finish the run first (`rbpp evaluate ... --resume`)") from None
    except (ValueError, OSError) as exc:  # the library's errors: malformed files, bad values
        raise _CannotCompare(with_flags(str(exc), command)) from None
    except (Exception, KeyboardInterrupt) as exc:  # a bug or an interrupt is no regression either
        raise _CannotCompare(f"internal error ({type(exc).__name__}: {exc}); please report it") from None
    sys.exit(code)


def _check(results_file, reference_file, tolerance_cell, tolerance_mce, ci_aware, two_sided, paired, command) -> int:
    """Load both runs, compare them and print the outcome; returns the exit code."""
    from robustbench_pp import results
    from robustbench_pp.check import compare_runs, headline

    new, old = results.load_run(results_file), results.load_run(reference_file)
    outcome = compare_runs(new, old, tolerance_cell=tolerance_cell, tolerance_mce=tolerance_mce,
                           ci_aware=ci_aware, two_sided=two_sided, paired=paired)
    if outcome.incomparable:
        click.echo(f"rbpp check: cannot compare {results_file} with {reference_file}:", err=True)
        for reason in outcome.incomparable:
            click.echo(f"  - {with_flags(reason, command)}", err=True)
        return outcome.exit_code
    click.echo(headline(new, old))
    for note in outcome.notes:
        click.echo(f"note: {with_flags(note, command)}")
    if outcome.regressions:
        click.echo(f"REGRESSION: {len(outcome.regressions)} of {outcome.compared} compared numbers moved beyond tolerance "
                   "(errors in %):")
        for finding in outcome.regressions:
            click.echo(f"  {finding.describe()}")
    if outcome.improvements:
        click.echo(f"improved beyond tolerance ({len(outcome.improvements)}; update the reference if intended):")
        for finding in outcome.improvements:
            click.echo(f"  {finding.describe()}")
    if not outcome.regressions:
        click.echo(f"OK: {outcome.compared} numbers within tolerance of {reference_file}")
    return outcome.exit_code
