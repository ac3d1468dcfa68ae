"""Check the `llmseg` package's import layers with import-linter: `python tools/lint_imports.py [--cycles]`.

Why a wrapper: the package is installed from folders whose names differ from its import name (pyproject's
[tool.setuptools.package-dir]: llmseg <- shared/, llmseg.stage1 <- stage1_llm/, ...), and the editable
install maps them with an import hook that grimp (import-linter's graph builder) cannot follow: it looks for
the package's files under the name `llmseg`. This script lays out a copy of the package under its import
names in build/lint-tree/llmseg/... (the same mapping setuptools uses), puts that folder first on the path
and runs `lint-imports` with pyproject's [tool.importlinter] contracts (the layers), then fails on any import
cycle between modules, module-level and function-level imports alike (a layers contract allows cycles inside
one layer; this check does not). `--cycles` prints only the cycles, each with one import per edge.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
from package_layout import ROOT, package_files

TREE = ROOT / "build" / "lint-tree"


def lay_out_tree(tree: Path) -> None:
    """Copy every package's .py files to tree/<import path>/, as a non-editable install would place them."""
    shutil.rmtree(tree, ignore_errors=True)
    for package, path in package_files():
        target = tree / Path(*package.split("."))
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target / path.name)


def print_cycles() -> int:
    """Print each import cycle (strongly connected group of modules) and the imports inside it; 1 if any."""
    sys.path.insert(0, str(TREE))
    graph = grimp.build_graph("llmseg", cache_dir=None)
    groups = strongly_connected(graph)
    for group in sorted(groups, key=len):
        print(f"cycle of {len(group)} modules: {', '.join(sorted(group))}")
        for module in sorted(group):
            for imported in sorted(graph.find_modules_directly_imported_by(module) & group):
                lines = sorted({d["line_number"] for d in graph.get_import_details(importer=module, imported=imported)})
                print(f"    {module} -> {imported} (line {', '.join(map(str, lines))})")
    print(f"{len(groups)} import cycle{'s' * (len(groups) != 1)}")
    return 1 if groups else 0


def strongly_connected(graph: object) -> list[set[str]]:
    """Tarjan's algorithm over grimp's graph: the groups of two or more modules that import each other."""
    modules = sorted(graph.modules)  # type: ignore[attr-defined]
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module)):  # type: ignore[attr-defined]
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == module:
                    break
            if len(group) > 1:
                groups.append(group)

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(modules)))
    for module in modules:
        if module not in index:
            visit(module)
    return groups


def main(argv: list[str]) -> int:
    """Lay out the tree, then run the contracts (exit status of lint-imports) or list the cycles."""
    lay_out_tree(TREE)
    if argv[:1] == ["--cycles"]:
        return print_cycles()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TREE), os.environ.get("PYTHONPATH", "")])}
    lint_imports = Path(sys.executable).with_name("lint-imports")
    command = [str(lint_imports), str(ROOT / "pyproject.toml"), "--no-cache", *argv]
    contracts = subprocess.run(command, cwd=TREE, env=env, check=False).returncode
    cycles = print_cycles()
    return contracts or cycles


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
