"""``python -m robustbench_pp.cli`` (and ``torchrun -m robustbench_pp.cli``) entry point."""

from robustbench_pp.cli import main

if __name__ == "__main__":
    main()
