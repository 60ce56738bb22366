"""``rbpp datasets`` (list, check, verify, download) and ``rbpp generate`` (build a corrupted set)."""

from __future__ import annotations

import os

import click

from robustbench_pp.cli._errors import library_errors, with_flags
from robustbench_pp.cli._types import COUNT, SEED

# Library parameters named in dataset messages that these commands set under another name, or
# that belong to the command the message suggests (`rbpp generate`, `rbpp evaluate`).
_ALIASES = {"corruptions": "--corruptions", "out": "--out", "on_the_fly": "--on-the-fly", "download": "--download"}


def _split_names(values: tuple[str, ...]) -> list[str]:
    return [part for value in values for part in value.split(",") if part]


def _expand_corruptions(values: tuple[str, ...]):
    """``all`` (19), ``benchmark`` (15), ``extra`` (4) or explicit names; None = all."""
    from robustbench_pp.names import ALL_CORRUPTIONS, CORRUPTIONS, EXTRA_CORRUPTIONS

    names = _split_names(values)
    if not names:
        return None
    groups = {"all": ALL_CORRUPTIONS, "benchmark": CORRUPTIONS, "extra": EXTRA_CORRUPTIONS}
    out: list[str] = []
    for name in names:
        for item in groups.get(name, (name,)):
            if item not in out:
                out.append(item)
    return out


def _expand_severities(values: tuple[str, ...]):
    names = _split_names(values)
    if not names:
        return None
    try:
        return [int(v) for v in names]
    except ValueError:
        raise click.BadParameter(f"severities must be integers 1..5, got {' '.join(values)}") from None


def _status(name: str, data_root, source_root) -> dict:
    """Whether the clean source and the corrupted files of one dataset are found here."""
    from robustbench_pp.datasets import DataNotFoundError, get_dataset, open_clean_source, open_corrupted

    spec = get_dataset(name)
    row = {"dataset": name, "image_size": spec.image_size, "classes": spec.num_classes, "preset": spec.preset,
           "layout": spec.layout, "data_root": str(spec.resolve_data_root(data_root)),
           "source_root": str(spec.resolve_source_root(source_root))}
    try:
        row["clean"] = f"{open_clean_source(spec, source_root).num_images} images"
    except (ValueError, OSError) as exc:
        row["clean"], row["clean_error"] = "missing", _cli_text(exc)
    try:
        data = open_corrupted(spec, data_root=data_root, source_root=source_root)
    except DataNotFoundError as exc:
        row["corrupted"], row["corrupted_hint"] = "missing", _cli_text(exc)
        return row
    except (ValueError, OSError) as exc:
        row["corrupted"], row["corrupted_error"] = "invalid", _cli_text(exc)
        return row
    corruptions = sorted({c for c, s in data.cells})
    row["corrupted"] = f"{data.mode}: {len(corruptions)} corruptions, {len(data.cells)} cells of {data.num_images}"
    row["cells"] = len(data.cells)
    return row


def _cli_text(exc: Exception) -> str:
    """A library message as this command's user reads it: parameters named by their flags."""
    context = click.get_current_context(silent=True)
    return with_flags(str(exc), context.command if context else None, _ALIASES)


@click.command("datasets")
@click.argument("name", required=False)
@click.option("--data-root", type=click.Path(file_okay=False), help="Corrupted-data folder (default corruptions/NAME).")
@click.option("--source", "source_root", type=click.Path(file_okay=False), help="Clean source folder.")
@click.option("--verify", is_flag=True, help="Read every byte: published MD5s (released) or manifest sha256 (generated).")
@click.option("--download", is_flag=True, help="Download the clean source with torchvision (CIFAR only).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def datasets(name, data_root, source_root, verify, download, as_json):
    """List the benchmark datasets and whether each is found here, or check one NAME."""
    import json

    from robustbench_pp.datasets import download_source, get_dataset, list_datasets, open_corrupted

    names = list_datasets()
    if name is not None:
        with library_errors(ValueError, aliases=_ALIASES):
            names = [get_dataset(name).name]
    elif data_root or verify or download:
        raise click.ClickException("--data-root, --verify and --download need a dataset NAME")
    if download:
        with library_errors(ValueError, OSError, RuntimeError, aliases=_ALIASES):
            click.echo(f"clean source downloaded to {download_source(get_dataset(name), source_root)}")
    rows = [_status(n, data_root, source_root) for n in names]
    if verify:
        with library_errors(aliases=_ALIASES):
            rows[0]["verified"] = open_corrupted(name, data_root=data_root, source_root=source_root).verify()
    if as_json:
        click.echo(json.dumps(rows if name is None else rows[0], indent=1))
        return
    if name is None:
        click.echo(f"{'dataset':16} {'size':>4} {'cls':>4} {'preset':8} {'layout':12} {'clean source':14} corrupted data")
        for row in rows:
            click.echo(f"{row['dataset']:16} {row['image_size']:>4} {row['classes']:>4} {row['preset']:8} "
                       f"{row['layout']:12} {row['clean']:14} {row['corrupted']} ({row['data_root']})")
        return
    row = rows[0]
    for key, value in row.items():
        if key == "verified":
            value = f"{len(value)} files match"
        click.echo(f"{key:16} {value}")
    if row["corrupted"] == "invalid":
        raise click.ClickException(row["corrupted_error"])


@click.command("generate")
@click.argument("name")
@click.option("--source", "source_root", type=click.Path(file_okay=False), help="Clean source folder (default: the spec's).")
@click.option("--out", default="corruptions", show_default=True, type=click.Path(file_okay=False),
              help="Parent folder; the set goes to OUT/NAME.")
@click.option("--corruptions", "corruption_names", multiple=True,
              help="Names, comma-separated, or all (default: the 15 + 4 extras) / benchmark / extra.")
@click.option("--severities", multiple=True, help="Severities, comma-separated (default 1..5).")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Corruption seed (same seed -> identical files).")
@click.option("--device", default="cpu", show_default=True, help="Where the corruption kernels run (cpu, cuda).")
@click.option("--batch-size", type=COUNT, help="Images per corruption call (default 1000 at 32 px, 64 at 224 px).")
@click.option("--limit", type=COUNT, help="Seeded, class-balanced subset of this many images (recorded).")
@click.option("--workers", type=COUNT, help="Processes corrupting cells in parallel, one torch thread each "
              "(default: one per CPU, at most 4).")
@click.option("--download", is_flag=True, help="Download the clean source first (CIFAR only).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def generate(name, source_root, out, corruption_names, severities, seed, device, batch_size, limit, workers,
             download, quiet):
    """Generate the corrupted set NAME in the released layout (resumable; reruns skip finished files)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from robustbench_pp.datasets import download_source, get_dataset
    from robustbench_pp.datasets import generate as generate_set

    with library_errors(aliases=_ALIASES):
        spec = get_dataset(name)
        if download:
            download_source(spec, source_root)
        if workers is None:  # CPU: one single-threaded process per core; a GPU is fed by one process
            workers = max(1, min(4, os.cpu_count() or 1)) if device == "cpu" else 1
        report = generate_set(spec, out=out, source_root=source_root, corruptions=_expand_corruptions(corruption_names),
                              severities=_expand_severities(severities), seed=seed, device=device,
                              batch_size=batch_size, limit=limit, workers=workers, progress=not quiet)
    rate = report.images_written / report.seconds if report.seconds > 0 else 0.0
    click.echo(f"{report.folder}: {report.cells_written} cells written, {report.cells_skipped} already complete, "
               f"{report.images_written} images in {report.seconds:.1f} s ({rate:.0f} images/s), "
               f"{report.bytes_on_disk / 1e9:.2f} GB on disk")
