"""``make quickstart``: the whole benchmark on real data, on a 2-core CPU, in minutes.

It runs the same ``rbpp`` commands a user would type (each is printed before it runs):

1. train a small ResNet-18 baseline, its PushPull variants PP3 and PP5, and the CIFAR-size
   AlexNet (the mCE normaliser the protocol requires on non-ImageNet sets) on a
   class-balanced subset of Fashion-MNIST;
2. generate ``fashion-mnist-c`` (the 15 benchmark corruptions × 5 severities, cifar preset,
   the CIFAR-10-C npy layout) for a fixed, class-balanced subset of the test set into
   ``corruptions/quickstart/``;
3. evaluate the four models on it (every record carries a 95% bootstrap interval);
4. render ``reports/index.html``: AlexNet-normalised mCE, relative mCE, R_net of PP3/PP5
   against the baseline, heatmaps, and the reported PushPull-Net ImageNet rows;
5. ask whether PP3 and PP5 are really more robust than the baseline (and PP5 than PP3):
   ``rbpp compare`` on the same images, paired intervals and per-cell McNemar tests.

Re-running reuses what is done: finished trainings are kept, generation and evaluation
resume. Fashion-MNIST is read from ``$FASHION_MNIST_ROOT`` or Debian's
``/usr/share/datasets/fashion-mnist`` (``make quickstart`` installs the package when it can).
Sizes are the constants below (chosen to fit 15 minutes on 2 cores, install included).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path

import click

from robustbench_pp.names import CORRUPTIONS

WORK = Path("results/quickstart")  # checkpoints and result files of the quickstart (not committed)
# The normaliser first: the others' summaries then show mCE, and PP3/PP5 R_net vs the baseline.
MODELS = ("alexnet", "resnet18", "resnet18_pp3", "resnet18_pp5")
WIDTHS = {"alexnet": 16}  # base channel widths (64 is standard): small enough for 2 cores
DEFAULT_WIDTH = 8  # the ResNets
TRAIN_IMAGES = 5000  # class-balanced Fashion-MNIST training subset
EPOCHS = 3
EVAL_IMAGES = 1000  # class-balanced test subset per cell (bootstrap CIs in the records)
DATA_OUT = Path("corruptions/quickstart")  # keeps corruptions/fashion-mnist-c free for the full set
SEED = 0


def _run(args: list[str]) -> None:
    """Run one rbpp command in this process, echoing it like a shell would."""
    from robustbench_pp.cli import main

    click.secho("$ rbpp " + shlex.join(args), fg="cyan", err=True)
    saved_argv = sys.argv
    sys.argv = ["rbpp", *args]  # what the records and checkpoint cards note as the command
    try:
        main.main(args=args, prog_name="rbpp", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    finally:
        sys.argv = saved_argv


def _trained(folder: Path) -> bool:
    card = folder / "model.json"
    return card.exists() and json.loads(card.read_text()).get("complete") is True


def main() -> None:
    from robustbench_pp.datasets.sources import SourceError, fashion_mnist_root, load_fashion_mnist

    started = time.monotonic()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        load_fashion_mnist(split="test")
    except SourceError as exc:
        raise SystemExit(f"quickstart: {exc}")
    click.secho(f"Fashion-MNIST from {fashion_mnist_root()}", err=True)

    checkpoints = {}
    for model in MODELS:
        folder = WORK / "checkpoints" / model
        checkpoints[model] = folder / "model.json"
        if _trained(folder):
            click.secho(f"= {model}: already trained ({folder})", err=True)
            continue
        args = ["train", "--model", model, "--dataset", "fashion-mnist", "--epochs", str(EPOCHS),
                "--limit-train", str(TRAIN_IMAGES), "--limit-test", str(EVAL_IMAGES), "--eval-every", str(EPOCHS),
                "--seed", str(SEED), "--out", str(folder), "--device", "cpu", "--quiet"]
        args += ["--width", str(WIDTHS.get(model, DEFAULT_WIDTH))]
        if (folder / "train_state.pt").exists():
            args.append("--resume")
        _run(args)

    _run(["generate", "fashion-mnist-c", "--out", str(DATA_OUT), "--corruptions", ",".join(CORRUPTIONS),
          "--limit", str(EVAL_IMAGES), "--seed", str(SEED), "--workers", "2", "--quiet"])

    result_files = {}
    for model in MODELS:
        out = WORK / f"{model}__fashion-mnist-c.jsonl"
        result_files[model] = out
        args = ["evaluate", "--checkpoint", str(checkpoints[model]), "--dataset", "fashion-mnist-c",
                "--data-root", str(DATA_OUT / "fashion-mnist-c"), "--device", "cpu", "--out", str(out), "--quiet"]
        if model != "alexnet":
            args += ["--reference", str(result_files["alexnet"])]
        if model not in ("alexnet", "resnet18"):
            args += ["--baseline", str(result_files["resnet18"])]
        if out.exists():
            args.append("--resume")
        _run(args)

    reported = Path("results/reported/pushpull-net-imagenet.json")
    _run(["report", *(str(result_files[m]) for m in MODELS), "--baseline", "resnet18",
          "--reference", str(result_files["alexnet"]), "--reported", str(reported), "--out", "reports"])
    _run(["report", *(str(result_files[m]) for m in MODELS), "--baseline", "resnet18",
          "--reference", str(result_files["alexnet"]), "--format", "markdown"])
    _paired_comparisons(result_files)
    minutes = (time.monotonic() - started) / 60
    click.secho(f"\nquickstart done in {minutes:.1f} min: open {Path('reports/index.html').resolve()}", fg="green")


def _paired_comparisons(result_files: dict[str, Path]) -> None:
    """Step 5: the leaderboard's unpaired intervals overlap; on the same images, which differences are real?"""
    reference = ["--reference", str(result_files["alexnet"])]
    for a, b in (("resnet18", "resnet18_pp3"), ("resnet18", "resnet18_pp5"), ("resnet18_pp3", "resnet18_pp5")):
        _run(["compare", str(result_files[a]), str(result_files[b]), *reference, "--cells", "significant"])


if __name__ == "__main__":
    sys.exit(main())
