"""Leaderboard rows: the headline numbers of each (model, recipe) on each dataset.

A row is either *measured* (computed here from result records) or *reported* (copied from a
paper, see :mod:`robustbench_pp.report.reported`). Numbers are fractions in [0, 1] except
R_net, which is in percent as in the PushPull-Net paper.

Two R_net values exist, named by what they are computed from, as everywhere in the package:
``r_net_unnormalized`` from the unnormalised mean error (the reading that reproduces the
PushPull-Net table) and ``r_net_mce`` from the reference-normalised mCE (empty without a
reference). The R_net formula itself is reconstructed from that table.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from types import MappingProxyType

from robustbench_pp.metrics import R_NET_LABELS, corruption_error
from robustbench_pp.names import CORRUPTIONS, SEVERITIES
from robustbench_pp.report.statistics import (
    NO_BITS_NOTE,
    REPORTED_NOTE,
    has_per_image_results,
    paired_against,
    reference_run,
    run_intervals,
)
from robustbench_pp.results import Reference, RunComparison, RunTable, no_reference_note, summarize_run

MEASURED = "measured"
REPORTED = "reported"

R_NET_NOTE = (
    "R_net = 100·[(E_b − E) + (mCE_b − mCE)] / (2·E_b) against the baseline b; the formula is "
    "reconstructed from the PushPull-Net table (it fits every row within rounding). "
    f"\"{R_NET_LABELS['r_net_unnormalized']}\" puts the unnormalised mean error in place of mCE, the reading "
    f"that reproduces that table; \"{R_NET_LABELS['r_net_mce']}\" uses the reference-normalised mCE."
)


@dataclass(frozen=True)
class LeaderboardRow:
    """One (model, recipe) on one dataset.

    Attributes:
        dataset: the dataset spec name (``imagenet-c``, ``fashion-mnist-c``...).
        model: the model name (registered name for measured rows).
        recipe: the training recipe, or None.
        label: the unique display name on its dataset.
        source: ``"measured"`` or ``"reported"``.
        clean_error: E, the clean top-1 error.
        mce: mCE normalised by ``reference`` (None without a reference).
        relative_mce: relative mCE normalised by ``reference``.
        unnormalized_mean_error: mean top-1 error over the 15 corruptions × 5 severities.
        r_net_unnormalized: R_net (%) against ``baseline`` from the unnormalised mean error.
        r_net_mce: R_net (%) against ``baseline`` from the reference-normalised mCE.
        mean_ece: mean expected calibration error over the 75 benchmark cells.
        num_images: images per cell.
        reference: the normaliser's name.
        baseline: the R_net baseline's label.
        citation: where reported numbers come from.
        note: why a number is missing, or a caveat.
        page: file name of the per-model page (measured rows).
        clean_error_low, clean_error_high, mce_low, mce_high, unnormalized_mean_error_low,
        unnormalized_mean_error_high: 95% bootstrap intervals over the run's images.
        delta_unnormalized_mean_error, delta_mce (with ``_low``/``_high``): this run's
            error minus the baseline's, with the paired 95% interval (same images resampled
            for both); a difference is real at that level when the interval excludes zero.
        interval_note: why the row has no interval or no paired Δ.
        seeds: training seeds averaged into this row (seed grouping; None: one run). The
            numbers are then means over the seeds, ``*_seed_sd`` their sample standard
            deviations, ``within_run_halfwidth`` the mean half-width of the runs' own 95%
            intervals of the unnormalised error (see :mod:`robustbench_pp.report.seeds`).
    """

    dataset: str
    model: str
    recipe: str | None
    label: str
    source: str
    clean_error: float | None = None
    mce: float | None = None
    relative_mce: float | None = None
    unnormalized_mean_error: float | None = None
    r_net_unnormalized: float | None = None
    r_net_mce: float | None = None
    mean_ece: float | None = None
    num_images: int | None = None
    reference: str | None = None
    baseline: str | None = None
    citation: str | None = None
    note: str | None = None
    page: str | None = None
    clean_error_low: float | None = None
    clean_error_high: float | None = None
    mce_low: float | None = None
    mce_high: float | None = None
    unnormalized_mean_error_low: float | None = None
    unnormalized_mean_error_high: float | None = None
    delta_unnormalized_mean_error: float | None = None
    delta_unnormalized_mean_error_low: float | None = None
    delta_unnormalized_mean_error_high: float | None = None
    delta_mce: float | None = None
    delta_mce_low: float | None = None
    delta_mce_high: float | None = None
    interval_note: str | None = None
    seeds: int | None = None
    clean_error_seed_sd: float | None = None
    mce_seed_sd: float | None = None
    unnormalized_mean_error_seed_sd: float | None = None
    r_net_unnormalized_seed_sd: float | None = None
    within_run_halfwidth: float | None = None

    def interval(self, name: str) -> tuple[float, float] | None:
        """The 95% interval of ``name`` (e.g. ``"mce"``, ``"delta_mce"``), or None."""
        low, high = getattr(self, f"{name}_low"), getattr(self, f"{name}_high")
        return None if low is None or high is None else (low, high)

    def excludes_zero(self, name: str) -> bool:
        """Whether the paired interval of ``name`` (``"delta_..."``) lies entirely on one side of zero."""
        interval = self.interval(name)
        return interval is not None and (interval[0] > 0 or interval[1] < 0)


#: Column order of leaderboard.csv / leaderboard.json.
COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(LeaderboardRow))


@dataclass(frozen=True)
class Leaderboard:
    """All rows plus the notes that explain empty columns, per dataset."""

    rows: tuple[LeaderboardRow, ...]
    notes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    baseline: str | None = None
    #: (dataset, label) -> the run against the baseline, image by image (the comparison page's cell tests).
    comparisons: Mapping[tuple[str, str], RunComparison] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "notes", MappingProxyType({k: tuple(v) for k, v in self.notes.items()}))
        object.__setattr__(self, "comparisons", MappingProxyType(dict(self.comparisons)))

    @property
    def datasets(self) -> tuple[str, ...]:
        return tuple(sorted({row.dataset for row in self.rows}))


def mean_ece(table: RunTable) -> float | None:
    """Mean expected calibration error over the 75 benchmark corruption cells.

    Returns None when any of those cells lacks calibration bins.
    """
    values = [r.ece for r in table.records if r.corruption in CORRUPTIONS]
    if len(values) != len(CORRUPTIONS) * len(SEVERITIES) or any(v is None for v in values):
        return None
    return sum(values) / len(values)


def corruption_errors(table: RunTable, reference: Reference | None) -> dict[str, float]:
    """CE per corruption (normalised by ``reference``) for every corruption the run has all 5 severities of."""
    if reference is None:
        return {}
    return {name: corruption_error(row, reference.errors[name]) for name, row in table.errors.items() if name in reference.errors}


def _find_baseline(tables: Sequence[RunTable], name: str, dataset: str) -> RunTable | None:
    matches = [t for t in tables if t.dataset == dataset and name in (t.label, t.model)]
    exact = [t for t in matches if t.label == name]
    if len(exact) == 1:
        return exact[0]
    if len(matches) > 1:
        raise ValueError(
            f"`baseline` {name!r} matches {len(matches)} runs on {dataset} "
            f"({', '.join(t.label for t in matches)}); pass one of these labels"
        )
    return matches[0] if matches else None


def _reference_note(dataset: str, reference: Reference | None) -> str:
    """The note of a dataset's rows: what normalises their mCE, or why nothing does."""
    return f"mCE and relative mCE are normalised by {reference.name}" if reference is not None else no_reference_note(dataset)


def measured_rows(
    tables: Sequence[RunTable],
    references: Mapping[str, Reference | None],
    baseline: str | None = None,
    pages: Mapping[int, str] | None = None,
    comparisons: dict | None = None,
    group_seeds: bool = False,
) -> tuple[list[LeaderboardRow], dict[str, list[str]]]:
    """Leaderboard rows of evaluated runs, and notes per dataset explaining empty columns.

    Args:
        tables: one :class:`RunTable` per results file; labels must be unique per dataset
            (unless ``group_seeds``).
        references: dataset -> the mCE normaliser (None: mCE columns stay empty).
        baseline: label or model name of the R_net baseline (looked up on each dataset).
        pages: index in ``tables`` -> per-model page file name.
        comparisons: filled with (dataset, label) -> each run against the baseline, when given
            (not with ``group_seeds``: a paired Δ compares two runs, not two groups of seeds).
        group_seeds: runs sharing a label on a dataset are training seeds of one cell: one
            row with their mean and spread (:func:`seed_rows`).

    Returns:
        ``(rows, notes)``, rows in the order of ``tables``.

    Raises:
        ValueError: when two runs on one dataset share a label, or ``baseline`` is ambiguous.
    """
    if group_seeds:
        return seed_rows(tables, references, baseline, pages)
    seen: set[tuple[str, str]] = set()
    for table in tables:
        key = (table.dataset, table.label)
        if key in seen:
            raise ValueError(f"two results on {table.dataset} are labelled {table.label!r}; give them distinct labels "
                             "(or pass `group_seeds` if they are training seeds of one model)")
        seen.add(key)
    notes: dict[str, list[str]] = {}
    baselines: dict[str, RunTable | None] = {}
    for dataset in sorted({t.dataset for t in tables}):
        notes[dataset] = [_reference_note(dataset, references.get(dataset))]
        if baseline is not None:
            found = _find_baseline(tables, baseline, dataset)
            if found is None:
                notes[dataset].append(f"baseline {baseline!r} was not evaluated on {dataset}: R_net is empty")
            elif not found.complete:
                notes[dataset].append(f"baseline {found.label} misses cells on {dataset}: R_net is empty")
                found = None
            baselines[dataset] = found
    rows = []
    for index, table in enumerate(tables):
        reference = references.get(table.dataset)
        base = baselines.get(table.dataset)
        common = dict(
            dataset=table.dataset,
            model=table.model,
            recipe=table.recipe,
            label=table.label,
            source=MEASURED,
            num_images=table.num_images,
            mean_ece=mean_ece(table),
            reference=reference.name if reference else None,
            page=(pages or {}).get(index),
        )
        common.update(_statistics(table, tables, reference, base, comparisons))
        if not table.complete:
            missing = len(table.missing) + (table.clean_error is None)
            rows.append(LeaderboardRow(**common, clean_error=table.clean_error,
                                       note=f"incomplete: {missing} of {1 + len(CORRUPTIONS) * len(SEVERITIES)} cells missing"))
            continue
        summary = summarize_run(table, reference, base)
        rows.append(
            LeaderboardRow(
                **common,
                clean_error=summary.clean_error,
                mce=summary.mce,
                relative_mce=summary.relative_mce,
                unnormalized_mean_error=summary.unnormalized_mean_error,
                r_net_unnormalized=summary.r_net_unnormalized,
                r_net_mce=summary.r_net_mce,
                baseline=base.label if base is not None else None,
                note=summary.note if reference is not None else None,
            )
        )
    return rows, notes


def _statistics(table: RunTable, tables: Sequence[RunTable], reference: Reference | None, base: RunTable | None,
                comparisons: dict | None) -> dict:
    """A row's 95% intervals and paired Δ against the baseline (row fields), with the note of what is missing."""
    if not has_per_image_results(table):
        return {"interval_note": NO_BITS_NOTE}
    fields = run_intervals(table, reference)
    normaliser = reference_run(tables, reference)
    if normaliser is table:  # its mCE is 100% by definition: an interval around it would be noise
        fields["mce_low"] = fields["mce_high"] = None
    if base is None or base is table:
        return fields
    delta = paired_against(base, table, reference, normaliser)
    if delta.comparison is not None and comparisons is not None:
        comparisons[(table.dataset, table.label)] = delta.comparison
    return {**fields, **delta.fields(), "interval_note": delta.note}


def build_leaderboard(
    tables: Sequence[RunTable],
    references: Mapping[str, Reference | None],
    baseline: str | None = None,
    reported: Sequence[LeaderboardRow] = (),
    pages: Mapping[int, str] | None = None,
    group_seeds: bool = False,
) -> Leaderboard:
    """Measured rows (see :func:`measured_rows`) followed by reported rows, sorted per dataset.

    Rows are ordered by dataset, then measured before reported, then by unnormalised mean
    error (rows without one last).
    """
    comparisons: dict = {}
    rows, notes = measured_rows(tables, references, baseline, pages, comparisons, group_seeds)
    reported = [row if row.interval_note else replace(row, interval_note=REPORTED_NOTE) for row in reported]
    for row in reported:
        notes.setdefault(row.dataset, [])
    if reported:
        for dataset in sorted({r.dataset for r in reported}):
            notes[dataset].append(
                "reported rows are copied from the cited paper, not measured here; their R_net is the paper's own, "
                "against the paper's baseline"
            )

    def order(row: LeaderboardRow):
        value = row.unnormalized_mean_error
        return (row.dataset, row.source != MEASURED, value is None, value if value is not None else 0.0, row.label)

    return Leaderboard(rows=tuple(sorted([*rows, *reported], key=order)), notes=notes, baseline=baseline,
                       comparisons=comparisons)


def _plain(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def leaderboard_records(board: Leaderboard) -> list[dict]:
    """The rows as plain dicts (fractions, R_net in percent), for JSON and CSV."""
    return [{k: _plain(v) for k, v in asdict(row).items()} for row in board.rows]


def leaderboard_csv(board: Leaderboard) -> str:
    """The leaderboard as CSV text with a header line (:data:`COLUMNS`); empty cells for None."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in leaderboard_records(board):
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buffer.getvalue()


def leaderboard_json(board: Leaderboard) -> dict:
    """The leaderboard as a JSON-ready dict: units, notes per dataset and rows."""
    return {
        "schema": "robustbench_pp.leaderboard",
        "schema_version": 3,  # 2: r_net renamed r_net_unnormalized; 3: 95% intervals and the paired delta_* columns
        "units": ("errors are fractions in [0, 1]; r_net_unnormalized and r_net_mce are in percent; *_low/*_high bound "
                  "95% bootstrap intervals over images; delta_* is the row's error minus the baseline's, with a paired "
                  "interval (the same images resampled for both)"),
        "baseline": board.baseline,
        "r_net_formula": R_NET_NOTE,
        "notes": {k: list(v) for k, v in board.notes.items()},
        "rows": leaderboard_records(board),
    }


def percent(value: float | None, digits: int = 2) -> str:
    """A fraction as a percentage string without the sign, or an em dash for None."""
    return "—" if value is None else f"{100 * value:.{digits}f}"


def number(value: float | None, digits: int = 2) -> str:
    """A number (already in its unit) with fixed digits, or an em dash for None."""
    return "—" if value is None else f"{value:.{digits}f}"


def _with_interval(row: LeaderboardRow, name: str) -> str:
    """``49.15 [47.49, 50.73]`` (in %), or the bare value without an interval."""
    interval = row.interval(name)
    text = percent(getattr(row, name))
    return text if interval is None or getattr(row, name) is None else f"{text} [{percent(interval[0])}, {percent(interval[1])}]"


def signed_points(value: float | None) -> str:
    """A difference of fractions in percentage points with its sign (``−1.17``), or an em dash."""
    return "—" if value is None else f"{100 * value:+.2f}".replace("-", "−")


def paired_delta_text(row: LeaderboardRow, name: str) -> str:
    """``−1.17 [−2.38, −0.03]``: a paired Δ (points) with its 95% interval, or an em dash."""
    value, interval = getattr(row, name), row.interval(name)
    if row.baseline is not None and row.label == row.baseline:
        return "baseline"
    if value is None or interval is None:
        return "—"
    return f"{signed_points(value)} [{signed_points(interval[0])}, {signed_points(interval[1])}]"


def _markdown_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def leaderboard_markdown(board: Leaderboard) -> str:
    """The leaderboard as a Markdown table (errors ×100), followed by its notes.

    Example output line::

        | fashion-mnist-c | resnet18 | measured | 8.10 | 95.20 | ... |
    """
    header = ["dataset", "model", "source", "E (%)", "mCE (%)", "relative mCE (%)", "unnorm. mean error (%)",
              R_NET_LABELS["r_net_unnormalized"], R_NET_LABELS["r_net_mce"], "mean ECE (%)", "#images",
              "Δ unnorm. error vs baseline (points)", "Δ mCE vs baseline (points)"]
    seeded = any(row.seeds for row in board.rows)
    if seeded:
        header += ["seeds", "within-run 95% ± (unnorm., %)"]
    lines = ["| " + " | ".join(_markdown_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    for row in board.rows:
        deltas = [paired_delta_text(row, name) for name in ("delta_unnormalized_mean_error", "delta_mce")]
        deltas = [f"**{text}**" if row.excludes_zero(name) else text
                  for text, name in zip(deltas, ("delta_unnormalized_mean_error", "delta_mce"))]
        cells = [
            row.dataset, row.label, row.source, _spread(_with_interval(row, "clean_error"), row.clean_error_seed_sd, 100),
            _spread(_with_interval(row, "mce"), row.mce_seed_sd, 100), percent(row.relative_mce),
            _spread(_with_interval(row, "unnormalized_mean_error"), row.unnormalized_mean_error_seed_sd, 100),
            _spread(number(row.r_net_unnormalized), row.r_net_unnormalized_seed_sd, 1), number(row.r_net_mce),
            percent(row.mean_ece), "—" if row.num_images is None else str(row.num_images), *deltas,
        ]
        if seeded:
            cells += ["—" if row.seeds is None else str(row.seeds), percent(row.within_run_halfwidth)]
        lines.append("| " + " | ".join(_markdown_cell(c) for c in cells) + " |")
    notes = [f"- {dataset}: {note}" for dataset, items in board.notes.items() for note in items]
    notes += [f"- {row.label} ({row.dataset}): {row.note}" for row in board.rows if row.note]
    if any(row.interval("clean_error") or row.interval("unnormalized_mean_error") for row in board.rows):
        notes.append("- [low, high]: 95% bootstrap intervals over the images; Δ: the row's error minus the baseline's, "
                     "with a paired 95% interval (the same images resampled for both runs), **bold** where it excludes zero")
    notes += [f"- {row.label} ({row.dataset}): {row.interval_note}" for row in board.rows
              if row.interval_note and row.source == MEASURED]
    if any(row.source != MEASURED for row in board.rows):
        notes.append(f"- reported rows are {REPORTED_NOTE}")
    if board.baseline:
        notes.append(f"- R_net baseline: {board.baseline} (reported rows: the paper's own baseline)")
    if any(row.r_net_unnormalized is not None or row.r_net_mce is not None for row in board.rows):
        notes.append(f"- {R_NET_NOTE}")
    if seeded:
        notes.append(f"- {SEED_NOTE}")
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines) + "\n"


SEED_NOTE = (
    "Rows of several training seeds show the mean over the seeds ± their sample standard deviation (n − 1); "
    "\"within-run 95% ±\" is the mean half-width of each run's own bootstrap interval of the unnormalised error. "
    "R_net of each seed is taken against the mean of the baseline's seeds."
)


def _spread(text: str, sd: float | None, scale: float) -> str:
    return text if sd is None else f"{text} ± {sd * scale:.2f}"


def seed_rows(
    tables: Sequence[RunTable],
    references: Mapping[str, Reference | None],
    baseline: str | None = None,
    pages: Mapping[int, str] | None = None,
) -> tuple[list[LeaderboardRow], dict[str, list[str]]]:
    """One row per (dataset, label): the mean over its runs (training seeds) and their spread.

    Raises:
        ValueError: two runs of a label with the same checkpoint, or on different images, or
            ``baseline`` is ambiguous (as in :func:`measured_rows`).
    """
    from robustbench_pp.report.seeds import SEED_FIELDS, seed_groups, seed_statistics

    groups = seed_groups(tables)
    first_page = {id(t): (pages or {}).get(i) for i, t in enumerate(tables)}
    notes: dict[str, list[str]] = {}
    bases = {}
    for dataset in dict.fromkeys(g.dataset for g in groups):  # the baseline of a dataset: an exact label first
        notes[dataset] = [_reference_note(dataset, references.get(dataset))]
        found = None if baseline is None else _find_baseline([g.tables[0] for g in groups], baseline, dataset)
        bases[dataset] = next((g for g in groups if g.tables[0] is found), None)
        if baseline is not None and found is None:
            notes[dataset].append(f"baseline {baseline!r} was not evaluated on {dataset}: R_net is empty")
    rows = []
    for group in groups:
        dataset, reference, base = group.dataset, references.get(group.dataset), bases[group.dataset]
        head = group.tables[0]
        common = dict(dataset=dataset, model=head.model, recipe=head.recipe, label=group.label, source=MEASURED,
                      num_images=head.num_images, reference=reference.name if reference else None,
                      page=first_page[id(head)], seeds=len(group.tables))
        if not all(t.complete for t in group.tables) or (base is not None and not all(t.complete for t in base.tables)):
            rows.append(LeaderboardRow(**common, note="incomplete: a run of this row (or of its baseline) misses cells"))
            continue
        stats = seed_statistics(group, reference, base)
        eces = [mean_ece(t) for t in group.tables]
        rows.append(LeaderboardRow(
            **common, **{name: stats.mean.get(name) for name in SEED_FIELDS},
            mean_ece=None if None in eces else sum(eces) / len(eces),
            baseline=base.label if base is not None else None,
            clean_error_seed_sd=stats.sd["clean_error"], mce_seed_sd=stats.sd["mce"],
            unnormalized_mean_error_seed_sd=stats.sd["unnormalized_mean_error"],
            r_net_unnormalized_seed_sd=stats.sd.get("r_net_unnormalized"),
            within_run_halfwidth=stats.within["unnormalized_mean_error"],
        ))
    return rows, notes
