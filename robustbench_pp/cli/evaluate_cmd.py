"""``rbpp evaluate`` and ``rbpp merge``: thin wrappers over robustbench_pp.evaluate / results."""

from __future__ import annotations

import math
import sys

import click

from robustbench_pp.cli._errors import library_errors, with_flags
from robustbench_pp.cli._types import BATCH_SIZE, COUNT, SEED
from robustbench_pp.cli.metrics_cmd import REFERENCE_ALIASES, print_summary
from robustbench_pp.cli.models_cmd import MODEL_FLAG_ALIASES
from robustbench_pp.names import DEFAULT_PROTOCOL, PROTOCOLS

#: Library parameters that ``rbpp evaluate`` sets under another option name.
EVALUATE_ALIASES = {
    **REFERENCE_ALIASES,
    **MODEL_FLAG_ALIASES,
    "num_workers": "--workers",
    "compile": "--compile",
}


def _split_list(value: str | None, cast=str):
    if value in (None, "", "all"):
        return None
    try:
        return tuple(cast(part.strip()) for part in value.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"expected a comma-separated list, got {value!r}") from None


class ChannelStats(click.ParamType):
    """Three comma-separated finite numbers (per RGB channel), positive ones for a std."""

    name = "R,G,B"

    def __init__(self, positive: bool = False):
        self.positive = positive

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            numbers = tuple(float(part) for part in str(value).split(","))
        except ValueError:
            numbers = ()
        if len(numbers) != 3 or not all(math.isfinite(v) and (v > 0 or not self.positive) for v in numbers):
            kind = "positive " if self.positive else ""
            self.fail(f"expected 3 comma-separated {kind}finite numbers (one per RGB channel), got {value!r}",
                      param, ctx)
        return numbers


def _progress_factory(enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    def make(total: int, description: str):
        whole_run = description == "all cells"
        bar = tqdm(total=total, desc=f"{description:<18}", unit="img", leave=whole_run, position=0 if whole_run else 1,
                   dynamic_ncols=True, unit_scale=True)

        def update(n: int) -> None:
            bar.update(n)
            if bar.n >= bar.total:
                bar.close()

        return update

    return make


@click.command()
@click.option("--model", default=None,
              help="Registered name (optional when the checkpoint has a card), PATH.py:FACTORY, "
                   "package.module:FACTORY, torchvision/NAME, timm/NAME or an entry point (see `rbpp models`).")
@click.option("--mean", type=ChannelStats(), default=None,
              help="External models: input normalisation mean R,G,B (default: the family's or the dataset's).")
@click.option("--std", type=ChannelStats(positive=True), default=None,
              help="External models: input normalisation std R,G,B (default: the family's or the dataset's).")
@click.option("--input-size", type=click.IntRange(min=1, max=4096), default=None,
              help="External models: square input side (default: the family's or the dataset's image size).")
@click.option("--protocol", type=click.Choice(PROTOCOLS), default=DEFAULT_PROTOCOL, show_default=True,
              help="Clean ImageNet framing: imagenet-c = Resize(256)->CenterCrop(224) as ImageNet-C was made; "
                   "pushpull-net = Resize(224)->CenterCrop(224) as the PushPull-Net code evaluated it.")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Weights: project checkpoint, plain/torchvision state_dict or PushPull-Net Lightning file.")
@click.option("--dataset", required=True, help="Dataset spec name, e.g. fashion-mnist-c, cifar10-c, imagenet-c.")
@click.option("--data-root", type=click.Path(file_okay=False), default=None, help="Folder of the corrupted files.")
@click.option("--source-root", type=click.Path(file_okay=False), default=None, help="Folder of the clean source.")
@click.option("--on-the-fly", is_flag=True, help="Corrupt the clean images in memory instead of reading files.")
@click.option("--jpeg-roundtrip", is_flag=True, help="On the fly: add the released sets' JPEG (q85) step.")
@click.option("--corruptions", default=None, help="Comma-separated corruption names (default: all available).")
@click.option("--severities", default=None, help="Comma-separated severities (default: 1,2,3,4,5).")
@click.option("--limit", type=COUNT, default=None, help="Evaluate a fixed, class-balanced, seeded subset of N images.")
@click.option("--subset-seed", type=SEED, default=0, show_default=True, help="Seed of the subset and bootstrap.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Corruption seed (on the fly).")
@click.option("--batch-size", type=BATCH_SIZE, default="256", show_default=True, help="Images per batch, or 'auto' on a GPU.")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda, cuda:N.")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True)
@click.option("--compile", "compile_model", is_flag=True, help="torch.compile the model first.")
@click.option("--workers", type=click.IntRange(min=0), default=None, help="Data loader processes (default: loader decides).")
@click.option("--allow-mismatch", is_flag=True, help="Resize inputs whose size differs from the model card's.")
@click.option("--num-classes", type=COUNT, default=None, help="Plain state_dicts without a card only.")
@click.option("--stem", type=click.Choice(["cifar", "imagenet"]), default=None, help="Plain state_dicts only.")
@click.option("--width", type=COUNT, default=None, help="Plain state_dicts only: base channel width.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Results file (default results/<model>__<dataset>[.shard-i-of-n].jsonl).")
@click.option("--resume", is_flag=True, help="Skip cells already in --out from the same run.")
@click.option("--distributed", is_flag=True, help="Join a torchrun process group (automatic under torchrun).")
@click.option("--shard", default=None, help="Evaluate only shard i/n of the images (job arrays; see rbpp merge).")
@click.option("--reference", "reference_choice", default=None, metavar="alexnet|FILE",
              help="Normaliser for mCE in the summary.")
@click.option("--baseline", type=click.Path(dir_okay=False), default=None, help="Results file for R_net.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def evaluate(**options) -> None:
    """Evaluate a model on the clean cell and every (corruption, severity) cell of a dataset."""
    import warnings

    from robustbench_pp.evaluate import default_out, run_evaluation

    settings, shard = _settings(options)
    with library_errors(aliases=EVALUATE_ALIASES):
        try:
            partition = _partition(options["distributed"], settings.device)
            out = options["out"] or default_out(settings, shard)
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                run = run_evaluation(settings, out=out, resume=options["resume"], partition=partition, shard=shard,
                                     progress=_progress_factory(partition.is_writer and not options["quiet"]),
                                     announce=click.echo if partition.is_writer else None)
        finally:
            _shutdown()
    if not partition.is_writer:
        return
    click.echo(f"wrote {len(run.written)} cell(s) to {out} ({run.images} images in {run.seconds:.1f} s"
               + (f", {run.images / run.seconds:.0f} images/s" if run.seconds > 0 else "") + ")"
               + (f"; {len(run.skipped)} cell(s) already done" if run.skipped else ""))
    if shard.world > 1:
        click.echo(f"shard {shard.rank}/{shard.world}: combine the shard files with `rbpp merge`")
        return
    print_summary(str(out), options["reference_choice"], options["baseline"], allow_incomplete=True)


def _settings(options: dict):
    """The run's EvalSettings and shard from the parsed options (usage errors raised here)."""
    from robustbench_pp.evaluate import EvalSettings, parse_shard
    from robustbench_pp.results.provenance import command_line

    batch_size = options["batch_size"]
    try:
        shard = parse_shard(options["shard"])
    except ValueError as exc:
        raise click.BadParameter(with_flags(str(exc), evaluate), param_hint="--shard") from None
    if options["on_the_fly"] and options["data_root"]:
        raise click.UsageError("--data-root and --on-the-fly exclude each other")
    if options["checkpoint"] is None and options["model"] is None:
        raise click.UsageError("give --checkpoint (and --model for plain state_dicts)")
    settings = EvalSettings(
        dataset=options["dataset"], model=options["model"], checkpoint=options["checkpoint"],
        num_classes=options["num_classes"], stem=options["stem"], width=options["width"],
        mean=options["mean"], std=options["std"], input_size=options["input_size"], protocol=options["protocol"],
        data_root=options["data_root"], source_root=options["source_root"], on_the_fly=options["on_the_fly"],
        jpeg_roundtrip=options["jpeg_roundtrip"], corruptions=_split_list(options["corruptions"]),
        severities=_split_list(options["severities"], int), limit=options["limit"],
        subset_seed=options["subset_seed"], seed=options["seed"], batch_size=batch_size, device=options["device"],
        precision=options["precision"], compile=options["compile_model"], allow_mismatch=options["allow_mismatch"],
        num_workers=options["workers"], command=command_line(),
    )
    return settings, shard


def _partition(distributed: bool, device: str):
    """This process's rank: joins the torchrun process group when asked or launched by torchrun."""
    from robustbench_pp.evaluate import Partition
    from robustbench_pp.evaluate.distributed import init_process_group, wants_distributed
    from robustbench_pp.evaluate.engine import resolve_device

    if not wants_distributed(distributed):
        return Partition()
    try:
        return init_process_group(resolve_device(device))
    except (RuntimeError, ValueError) as exc:
        raise click.ClickException(
            f"--distributed: {with_flags(str(exc), evaluate, EVALUATE_ALIASES)}; "
            "launch with `torchrun --nproc-per-node K -m robustbench_pp.cli evaluate ...`"
        ) from None


def _shutdown() -> None:
    from robustbench_pp.evaluate.distributed import shutdown

    shutdown()


@click.command()
@click.argument("shard_files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="The merged results file.")
def merge(shard_files: tuple[str, ...], out: str) -> None:
    """Combine the results files of `rbpp evaluate --shard i/n` jobs into one run."""
    from robustbench_pp import results

    with library_errors(aliases={"shard": "rbpp evaluate --shard"}):
        shards = {name: results.read_records(name) for name in shard_files}
        merged = results.merge_shards(shards)
        results.write_records(out, merged, overwrite=False)  # refuses an existing --out, under its lock
    click.echo(f"merged {len(shard_files)} shard file(s) into {out}: {len(merged)} cell(s)")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(evaluate())
