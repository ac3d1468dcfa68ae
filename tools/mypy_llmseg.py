"""Type-check the `llmseg` package under its real module names: `python tools/mypy_llmseg.py [mypy flags]`.

Why a wrapper: the package is installed from folders whose names differ from its import name (pyproject's
[tool.setuptools.package-dir]: llmseg <- shared/, llmseg.stage1 <- stage1_llm/, ...), and the editable
install maps them with an import hook that mypy cannot follow (`mypy -p llmseg` finds nothing, and
`mypy shared stage1_llm stage2_segment` checks modules called `shared.io` whose `llmseg.*` imports are
unresolved). This script reads the same mapping setuptools uses and hands mypy each file with the module
name it is installed under, so cross-package imports resolve and per-module settings in [tool.mypy] apply.
The settings themselves live in pyproject.toml's [tool.mypy]; extra arguments are passed on to mypy.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: mypy itself depends on tomli there
    import tomli as tomllib  # type: ignore[no-redef]

from mypy import build
from mypy.errors import CompileError
from mypy.main import process_options
from mypy.modulefinder import BuildSource

ROOT = Path(__file__).resolve().parent.parent


def package_folder(package: str, package_dir: dict[str, str]) -> Path:
    """The folder setuptools installs `package` from: the longest mapped prefix plus the rest of the name."""
    parts = package.split(".")
    for cut in range(len(parts), 0, -1):
        prefix = ".".join(parts[:cut])
        if prefix in package_dir:
            return ROOT / package_dir[prefix] / Path(*parts[cut:])
    return ROOT / package_dir.get("", ".") / Path(*parts)


def package_sources(pyproject: Path) -> list[BuildSource]:
    """One BuildSource per .py file of every package pyproject lists, named as it is installed."""
    setuptools_conf = tomllib.loads(pyproject.read_text(encoding="utf-8"))["tool"]["setuptools"]
    package_dir: dict[str, str] = setuptools_conf.get("package-dir", {})
    sources = []
    for package in setuptools_conf["packages"]:
        folder = package_folder(package, package_dir)
        for path in sorted(folder.glob("*.py")):
            module = package if path.stem == "__init__" else f"{package}.{path.stem}"
            sources.append(BuildSource(str(path.relative_to(ROOT)), module))
    return sources


def main(argv: list[str]) -> int:
    """Run mypy over the package with pyproject's [tool.mypy]; exit status 1 on any error, as mypy."""
    sources = package_sources(ROOT / "pyproject.toml")
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
