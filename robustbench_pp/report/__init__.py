"""The leaderboard and the static HTML report.

- :mod:`~robustbench_pp.report.leaderboard`: rows (measured and reported), CSV/JSON/Markdown.
- :mod:`~robustbench_pp.report.reported`: paper numbers from ``results/reported/*.json``.
- :mod:`~robustbench_pp.report.plots`: matplotlib figures as SVG data URIs.
- :mod:`~robustbench_pp.report.site`: jinja2 rendering of the site, in memory.
- :mod:`~robustbench_pp.report.publish`: the atomic write of the site and its manifest.
- :mod:`~robustbench_pp.report.gallery`: one image under every corruption, as a PNG grid.

Importing this package is cheap; matplotlib and jinja2 load when a report is rendered.
"""

from robustbench_pp.report.leaderboard import (
    COLUMNS,
    MEASURED,
    REPORTED,
    Leaderboard,
    LeaderboardRow,
    build_leaderboard,
    leaderboard_csv,
    leaderboard_json,
    leaderboard_markdown,
)
from robustbench_pp.report.reported import ReportedFileError, load_reported

__all__ = [
    "COLUMNS",
    "MEASURED",
    "REPORTED",
    "Leaderboard",
    "LeaderboardRow",
    "ReportedFileError",
    "build_leaderboard",
    "leaderboard_csv",
    "leaderboard_json",
    "leaderboard_markdown",
    "load_reported",
    "render_report",
    "write_report",
]


def render_report(*args, **kwargs):
    """See :func:`robustbench_pp.report.site.render_report`."""
    from robustbench_pp.report.site import render_report as _render

    return _render(*args, **kwargs)


def write_report(*args, **kwargs):
    """See :func:`robustbench_pp.report.publish.write_report`."""
    from robustbench_pp.report.publish import write_report as _write

    return _write(*args, **kwargs)
