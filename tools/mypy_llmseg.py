"""Type-check the `llmseg` package under its real module names, and the benchmark scripts with it.

`python tools/mypy_llmseg.py [mypy flags]`.

Why a wrapper: the package is installed from folders whose names differ from its import name (pyproject's
[tool.setuptools.package-dir]: llmseg <- shared/, llmseg.stage1 <- stage1_llm/, ...), and the editable
install maps them with an import hook that mypy cannot follow (`mypy -p llmseg` finds nothing, and
`mypy shared stage1_llm stage2_segment` checks modules called `shared.io` whose `llmseg.*` imports are
unresolved). This script reads the same mapping setuptools uses and hands mypy each file with the module
name it is installed under, so cross-package imports resolve and per-module settings in [tool.mypy] apply.
The settings themselves live in pyproject.toml's [tool.mypy]; extra arguments are passed on to mypy.
The scripts in benchmarks/ are checked in the same build (as top-level modules, the way they run), so a
benchmark that calls the package wrongly fails `make lint` rather than the day someone runs it on a GPU.
"""

from __future__ import annotations

import sys

from mypy import build
from mypy.errors import CompileError
from mypy.main import process_options
from mypy.modulefinder import BuildSource
from package_layout import ROOT, package_files


def package_sources() -> list[BuildSource]:
    """One BuildSource per .py file of every package pyproject lists, named as it is installed."""
    return [BuildSource(str(path.relative_to(ROOT)), package if path.stem == "__init__" else f"{package}.{path.stem}")
            for package, path in package_files()]


def benchmark_sources() -> list[BuildSource]:
    """One BuildSource per script in benchmarks/, named as it imports (`python benchmarks/x.py` puts its folder first)."""
    return [BuildSource(str(path.relative_to(ROOT)), path.stem) for path in sorted((ROOT / "benchmarks").glob("*.py"))]


def main(argv: list[str]) -> int:
    """Run mypy over the package with pyproject's [tool.mypy]; exit status 1 on any error, as mypy."""
    sources = package_sources() + benchmark_sources()
    # `-c pass` only satisfies mypy's "a target is required"; the real targets are `sources`.
    _, options = process_options(["--config-file", str(ROOT / "pyproject.toml"), *argv, "-c", "pass"])
    try:
        messages = build.build(sources, options).errors
    except CompileError as error:  # a blocking error (syntax error, duplicate module): mypy's exit status 2
        print("\n".join(error.messages))
        return 2
    if messages:
        print("\n".join(messages))
    n_errors = sum(": error:" in message for message in messages)
    n_files = len({message.split(":", 1)[0] for message in messages if ": error:" in message})
    if n_errors:
        print(f"Found {n_errors} error{'s' * (n_errors != 1)} in {n_files} file{'s' * (n_files != 1)} "
              f"(checked {len(sources)} source files)")
        return 1
    print(f"Success: no issues found in {len(sources)} source files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
