"""The ``rbpp`` command line: a click group whose subcommands are thin calls into the library.

Each capability has its own module in this package defining one or more click commands;
``_COMMAND_MODULES`` lists them, and adding a command touches that list and its module.
Heavy imports (torch, pandas) happen inside the commands, so ``rbpp --help`` stays fast.

Commands parse options, call the library and print. The library names its parameters in
backticks in error messages; :mod:`robustbench_pp.cli._errors` turns them into this command
line's flags. ``make quickstart`` is ``rbpp study studies/quickstart.toml``.
"""

from __future__ import annotations

import importlib

import click

from robustbench_pp._version import __version__

# Module (relative to this package) -> names of the click commands it defines.
_COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "metrics_cmd": ("metrics",),
    "corrupt_cmd": ("corrupt-gallery",),
    "evaluate_cmd": ("evaluate", "merge"),
    "data_cmd": ("datasets", "generate"),
    "models_cmd": ("models", "train"),
    "report_cmd": ("report", "check"),
    "compare_cmd": ("compare",),
    "study_cmd": ("study",),
}


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="rbpp")
def main() -> None:
    """robustbench_pp: corruption robustness benchmark for image classifiers (PushPull-Net)."""


for _module_name, _commands in _COMMAND_MODULES.items():
    _module = importlib.import_module(f"{__name__}.{_module_name}")
    for _command in _commands:
        main.add_command(getattr(_module, _command.replace("-", "_")))
