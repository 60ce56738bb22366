"""``rbpp models`` (every model usable by name, with its card and where it comes from) and ``rbpp train``."""

from __future__ import annotations

import json
import os
import sys

import click

from robustbench_pp.cli._errors import library_errors
from robustbench_pp.cli._types import SEED, FiniteFloatRange

#: Library parameters that these commands (and ``rbpp evaluate``) set under another flag:
#: ``create_model(name=...)`` is ``--model``.
MODEL_FLAG_ALIASES = {"name": "--model"}


@click.command("models")
@click.argument("pattern", required=False)
@click.option("--stem", type=click.Choice(["cifar", "imagenet"]), default="cifar", show_default=True,
              help="Stem whose card to show.")
@click.option("--json", "as_json", is_flag=True, help="Print the models as a JSON list (cards of registered ones).")
def models(pattern: str | None, stem: str, as_json: bool) -> None:
    """List every model usable with --model (optionally matching a shell PATTERN such as 'resnet*_pp*'),
    with where it comes from: registered here (with its card) or by an installed package's entry point.
    'torchvision/*' and 'timm/*' list those libraries' architectures."""
    from robustbench_pp.models.external import ENTRY_POINT_GROUP, catalog, family_models

    entries = catalog(pattern, stem=stem)
    if not entries:
        raise click.ClickException(f"no model matches {pattern!r}; run `rbpp models` for all")
    if as_json:
        rows = [{**(entry.card.to_dict() if entry.card else {"name": entry.name}), "source": entry.source,
                 **({"target": entry.target} if entry.target else {})} for entry in entries]
        click.echo(json.dumps(rows, indent=2))
        return
    if any(entry.card for entry in entries):
        click.echo(f"{'name':<16} {'source':<15} {'arch':<9} {'stem':<8} {'first layer':<12} {'pool':>4} "
                   f"{'inhibition':<10} {'input':>5} {'width':>5}  paper")
    for entry in entries:
        card = entry.card
        if card is None:  # entry points and torchvision/timm architectures: no card until built
            click.echo(f"{entry.name:<16} {entry.source}" + (f"  ({entry.target})" if entry.target else ""))
            continue
        click.echo(
            f"{card.name:<16} {entry.source:<15} {card.architecture:<9} {card.stem:<8} {card.first_layer:<12} "
            f"{card.avg_kernel_size:>4} {card.inhibition_mode or '-':<10} {card.input_size:>5} {card.width:>5}  "
            f"{card.paper}"
        )
    if pattern is None:
        counts = ", ".join(f"{family}/NAME ({len(names)} architectures; `rbpp models '{family}/*'`)"
                           for family, names in family_models().items())
        click.echo(f"also: {counts}; PATH.py:FACTORY and package.module:FACTORY (your own nn.Module); "
                   f"packages add models through the entry-point group {ENTRY_POINT_GROUP}")


#: Library parameters that ``rbpp train`` sets under another flag: the ImageNet validation
#: folder is opened as an evaluation set's clean source.
TRAIN_FLAG_ALIASES = {**MODEL_FLAG_ALIASES, "source_root": "--val-root"}


@click.command("train")
@click.option("--model", required=True, help="Registered model name (see `rbpp models`).")
@click.option("--dataset", type=click.Choice(["fashion-mnist", "cifar10", "imagenet", "imagenet100", "imagenet200"]),
              default="fashion-mnist", show_default=True,
              help="32 px sets in memory, or ImageNet-style class folders (imagenet100/200: the shipped class lists).")
@click.option("--augment", type=click.Choice(["none", "autoaugment", "augmix", "prime"]), default="none",
              show_default=True, help="Training augmentation.")
@click.option("--recipe", type=click.Choice(["standard", "pushpull"]), default="standard", show_default=True,
              help="standard: cosine, lr 0.1, wd 5e-4, batch 128, JSD for AugMix/PRIME; pushpull: the PushPull-Net "
                   "runs (OneCycleLR 5e-3->0.2 with momentum cycling, wd 1e-5, batch 64, fp32, seed 1234, no JSD).")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Default: the recipe's (standard 2; pushpull 30 on CIFAR-10, 20 on ImageNet).")
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="Output folder: model.safetensors + model.json (each epoch) and train_state.pt.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--seed", type=SEED, default=None, help="Default: the recipe's (standard 0, pushpull 1234).")
@click.option("--limit-train", type=click.IntRange(min=1), default=None,
              help="Train on a seeded class-balanced subset of N images.")
@click.option("--limit-test", type=click.IntRange(min=1), default=None,
              help="Measure the per-epoch test error on N test images only (the first N; ImageNet: a "
                   "class-balanced N of the validation folder).")
@click.option("--eval-every", type=click.IntRange(min=0), default=1, show_default=True,
              help="Measure the test error every N epochs (0: only after the last epoch).")
@click.option("--width", type=click.IntRange(min=1), default=None, help="Base channel width (default 64).")
@click.option("--stem", type=click.Choice(["cifar", "imagenet"]), default=None,
              help="Default: cifar for the 32 px sets, imagenet for the class folders.")
@click.option("--inhibition", "inhibition_mode", type=click.Choice(["fixed", "trainable"]), default=None,
              help="PushPull inhibition mode (default: trainable).")
@click.option("--batch-size", type=click.IntRange(min=2), default=None, help="Default: the recipe's.")
@click.option("--lr", type=FiniteFloatRange(min=0, min_open=True), default=None, help="Peak learning rate. Default: the recipe's.")
@click.option("--weight-decay", type=FiniteFloatRange(min=0), default=None, help="Default: the recipe's.")
@click.option("--schedule", type=click.Choice(["cosine", "step", "onecycle"]), default=None,
              help="Per-batch learning-rate schedule. Default: the recipe's.")
@click.option("--jsd/--no-jsd", default=None, help="AugMix/PRIME Jensen-Shannon loss. Default: the recipe's.")
@click.option("--data-root", type=click.Path(), default=None,
              help="Fashion-MNIST idx folder, the folder holding cifar-10-batches-py, or the ImageNet training "
                   "folder (one sub-folder per wnid).")
@click.option("--val-root", type=click.Path(), default=None,
              help="ImageNet: the validation folder of the per-epoch error (default $IMAGENET_VAL_ROOT).")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="ImageNet: image-decoding processes (default: CPUs - 1, at most 8).")
@click.option("--download", is_flag=True, help="Download CIFAR-10 into --data-root with torchvision first.")
@click.option("--resume", is_flag=True, help="Continue the run saved in --out.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch CPU threads (default 1). The weights are bit-identical only between runs with the "
                   "same count; more threads train faster.")
@click.option("--quiet", is_flag=True, help="No progress bar or per-epoch lines.")
def train(resume: bool, quiet: bool, **options) -> None:
    """Train a registered model and write a checkpoint (safetensors + JSON card) every epoch.

    Several processes: `torchrun --nproc-per-node K -m robustbench_pp.cli train ...` trains with
    DistributedDataParallel (NCCL on GPUs, gloo on CPU); --batch-size is the global batch.
    """
    import shlex

    from robustbench_pp.train import TrainConfig
    from robustbench_pp.train import train as run_training

    with library_errors(aliases=TRAIN_FLAG_ALIASES):
        result = run_training(TrainConfig(**options), resume=resume, command=shlex.join(["rbpp", *sys.argv[1:]]),
                              progress=not quiet)
    if os.environ.get("RANK", "0") != "0":  # under torchrun: rank 0 reports
        return
    last = result.history[-1] if result.history else {}
    click.echo(f"checkpoint: {result.checkpoint}")
    if last and last["test_error"] is not None:
        click.echo(f"clean test error: {100 * last['test_error']:.2f}% after {last['epoch']} epochs")
