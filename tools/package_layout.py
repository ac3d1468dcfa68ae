"""Where each `llmseg` package's files are: pyproject's [tool.setuptools] mapping, read the way setuptools reads it.

The package is installed from folders whose names differ from its import name (llmseg <- shared/,
llmseg.stage1 <- stage1_llm/, ...); the lint tools (mypy_llmseg.py, lint_imports.py) need each file under
the module name it is installed as.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: mypy and import-linter depend on tomli there
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent


def package_folder(package: str, package_dir: dict[str, str]) -> Path:
    """The folder setuptools installs `package` from: the longest mapped prefix plus the rest of the name."""
    parts = package.split(".")
    for cut in range(len(parts), 0, -1):
        prefix = ".".join(parts[:cut])
        if prefix in package_dir:
            return ROOT / package_dir[prefix] / Path(*parts[cut:])
    return ROOT / package_dir.get("", ".") / Path(*parts)


def package_files(pyproject: Path = ROOT / "pyproject.toml") -> Iterator[tuple[str, Path]]:
    """(package, .py file) for every file of every package pyproject lists, in a stable order."""
    setuptools_conf = tomllib.loads(pyproject.read_text(encoding="utf-8"))["tool"]["setuptools"]
    package_dir: dict[str, str] = setuptools_conf.get("package-dir", {})
    for package in setuptools_conf["packages"]:
        for path in sorted(package_folder(package, package_dir).glob("*.py")):
            yield package, path
