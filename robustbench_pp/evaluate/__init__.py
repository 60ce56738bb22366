"""Evaluation: plan of cells, the engine (counts and timings; writes nothing), scale-out.

Records are written through :mod:`robustbench_pp.results` by :func:`run_evaluation`;
:func:`evaluate_model` runs the same evaluation for any ``torch.nn.Module``.
"""

from robustbench_pp.evaluate.api import evaluate_model
from robustbench_pp.evaluate.distributed import Partition, parse_shard
from robustbench_pp.evaluate.engine import CellOutcome, Forward, evaluate_cell, resolve_device
from robustbench_pp.evaluate.runner import (
    EvalSettings,
    EvaluationError,
    RunResult,
    audit_input,
    default_out,
    plan_cells,
    run_evaluation,
)

__all__ = [
    "CellOutcome",
    "EvalSettings",
    "EvaluationError",
    "Forward",
    "Partition",
    "RunResult",
    "audit_input",
    "default_out",
    "evaluate_cell",
    "evaluate_model",
    "parse_shard",
    "plan_cells",
    "resolve_device",
    "run_evaluation",
]
