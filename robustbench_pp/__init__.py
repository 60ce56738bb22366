"""robustbench_pp: corruption-robustness benchmark and leaderboard centred on PushPull-Conv."""

__version__ = "0.1.0"
