"""robustbench_pp: corruption-robustness benchmark and leaderboard centred on PushPull-Conv."""

from robustbench_pp._version import __version__

__all__ = ["__version__"]
