"""The package's shape, checked: module size, no import cycles, the library speaks of parameters.

See docs/architecture.md for who owns what.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import click

from robustbench_pp.cli._errors import with_flags

PACKAGE = Path(__file__).resolve().parents[1] / "robustbench_pp"
MAX_MODULE_LINES = 500
MAX_LIBRARY_FLAGS = 10
_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]+")


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(path: Path, module: str, known: set[str]) -> set[str]:
    """Package modules imported anywhere in a file (module level or inside functions)."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in known and name != module)
    return found


def test_no_module_is_longer_than_the_limit():
    long = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_import_cycle_between_package_modules():
    modules = _modules()
    graph = {name: _imports(path, name, set(modules)) for name, path in modules.items()}
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, stack + [target])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_library_modules_speak_of_parameters_not_command_line_flags():
    counts = {}
    for name, path in _modules().items():
        if name.startswith("robustbench_pp.cli"):
            continue
        hits = _FLAG.findall(path.read_text())
        if hits:
            counts[name] = hits
    total = sum(len(v) for v in counts.values())
    assert total <= MAX_LIBRARY_FLAGS, f"{total} flag strings outside cli/: {counts}"


def test_cli_maps_backticked_parameters_to_the_running_commands_flags():
    command = click.Command("x", params=[click.Option(["--batch-size", "-b"]), click.Option(["--out"])])
    assert with_flags("`batch_size` must be positive, `out` exists", command) == "--batch-size must be positive, --out exists"
    assert with_flags("`seed` is kept", command) == "`seed` is kept"
    assert with_flags("`num_workers` = -1", command, {"num_workers": "--workers"}) == "--workers = -1"
