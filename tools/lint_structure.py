"""Two house rules ruff cannot state, checked over the package's files: `python tools/lint_structure.py [PATH ...]`.

1. An import inside a function is kept only for an optional dependency or for start-up time, and says
   which in a comment: `# lazy import: optional dependency (...)` or `# lazy import: start-up time (...)`,
   on the import itself or in the comment lines just above the run of imports it belongs to (one comment
   covers the consecutive imports under it). Module-level imports are the default (issue 22).
2. A function longer than MAX_LINES lines (from `def` to its last line) carries a
   `# long function: <why>` comment in the lines just above its `def` or decorators.

Ruff's PLC0415 flags function-level imports but takes no reason, and no ruff rule counts lines.
Without PATH arguments it checks the package folders pyproject lists; it prints one line per breach
(path:line: what) and exits 1 if there is any.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from package_layout import ROOT, package_files

MAX_LINES = 60
LAZY = re.compile(r"#\s*lazy import:\s*(optional dependency|start-up time)\b")
LONG = re.compile(r"#\s*long function:\s*\S")


def comment_block_above(lines: list[str], line: int) -> list[str]:
    """The comment-only lines directly above 1-based `line` (stopping at code or a blank line)."""
    block = []
    index = line - 2
    while index >= 0 and lines[index].strip().startswith("#"):
        block.append(lines[index])
        index -= 1
    return block


def lazy_import_breaches(tree: ast.AST, lines: list[str]) -> Iterator[tuple[int, str]]:
    """(line, message) for each function-level import whose run of imports has no `# lazy import:` reason."""
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for body in _statement_lists(function):
            run_start: int | None = None  # first line of the current run of consecutive imports
            for statement in body:
                if not isinstance(statement, ast.Import | ast.ImportFrom):
                    run_start = None
                    continue
                if run_start is None:
                    run_start = statement.lineno
                own = lines[statement.lineno - 1 : statement.end_lineno]
                above = comment_block_above(lines, run_start)
                if not any(LAZY.search(text) for text in own + above):
                    yield statement.lineno, f"import inside {function.name}() without '# lazy import: optional dependency|start-up time'"


def _statement_lists(function: ast.AST) -> Iterator[list[ast.stmt]]:
    """Every statement list inside this function (if/try/with/for/match bodies too), not those of nested defs."""
    stack = [function]
    while stack:
        node = stack.pop()
        for _, value in ast.iter_fields(node):
            children = value if isinstance(value, list) else [value]
            if children and isinstance(children[0], ast.stmt) and isinstance(value, list):
                yield value
            stack.extend(c for c in children if isinstance(c, ast.AST) and not isinstance(c, _SCOPES))


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)


def long_function_breaches(tree: ast.AST, lines: list[str]) -> Iterator[tuple[int, str]]:
    """(line, message) for each function over MAX_LINES lines without a `# long function:` comment above it."""
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        length = (function.end_lineno or function.lineno) - function.lineno + 1
        if length <= MAX_LINES:
            continue
        first = min([function.lineno] + [d.lineno for d in function.decorator_list])
        if not any(LONG.search(text) for text in comment_block_above(lines, first)):
            yield function.lineno, f"{function.name}() is {length} lines (over {MAX_LINES}) without '# long function: <why>'"


def check(paths: Iterable[Path]) -> list[str]:
    """Every breach in these files, as 'path:line: message'."""
    found = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text, filename=str(path))
        lines = text.splitlines()
        for line, message in sorted([*lazy_import_breaches(tree, lines), *long_function_breaches(tree, lines)]):
            shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
            found.append(f"{shown}:{line}: {message}")
    return found


def main(argv: list[str]) -> int:
    paths = [Path(p).resolve() for p in argv] or [path for _, path in package_files()]
    found = check(paths)
    print("\n".join(found + [f"{len(found)} structure breach{'es' * (len(found) != 1)}"]))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
