"""robustbench_pp: corruption-robustness benchmark and leaderboard centred on PushPull-Conv.

``robustbench_pp.evaluate_model(model, dataset=..., name=..., mean=..., std=...)`` evaluates
any ``torch.nn.Module`` (see :mod:`robustbench_pp.evaluate.api`); it is imported on first use,
so ``import robustbench_pp`` stays cheap (no torch).
"""

from robustbench_pp._version import __version__

__all__ = ["__version__", "evaluate_model"]


def __getattr__(name: str):
    if name == "evaluate_model":
        from robustbench_pp.evaluate.api import evaluate_model

        return evaluate_model
    raise AttributeError(f"module 'robustbench_pp' has no attribute {name!r}")
