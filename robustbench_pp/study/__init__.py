"""Studies: one TOML file that trains, evaluates and reports a whole grid (``rbpp study``).

- :mod:`~robustbench_pp.study.spec`: the file's tables and keys, read with line numbers
  (:mod:`~robustbench_pp.study.toml_lines`);
- :mod:`~robustbench_pp.study.checks`: what the values mean, checked before anything runs;
- :mod:`~robustbench_pp.study.plan`: every step as an ``rbpp`` command line and whether it is done;
- :mod:`~robustbench_pp.study.execute`: running the pending steps (all, a shard, the report).

The package builds command lines and never imports the CLI; ``rbpp study`` runs them.
"""

from robustbench_pp.study.checks import check_study, load_study
from robustbench_pp.study.execute import Outcome, command_text, execute, parse_shard, plan_steps
from robustbench_pp.study.plan import BLOCKED, DONE, RESUME, RUN, Run, Step, build_plan, runs
from robustbench_pp.study.spec import Study, StudyError

__all__ = [
    "BLOCKED",
    "DONE",
    "RESUME",
    "RUN",
    "Outcome",
    "Run",
    "Step",
    "Study",
    "StudyError",
    "build_plan",
    "check_study",
    "command_text",
    "execute",
    "load_study",
    "parse_shard",
    "plan_steps",
    "runs",
]
