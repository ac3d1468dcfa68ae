"""Where the project's data folders (`label_sets/`, `prompts/`) live.

They are top-level folders of the repository and, for a regular install, small data
packages of their own. `LLMSEG_LABEL_SETS` / `LLMSEG_PROMPTS` override the location.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from .errors import MissingFileError


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"data package '{package}' is not installed: reinstall llmseg")
    return Path(next(iter(spec.submodule_search_locations)))


def label_sets_dir() -> Path:
    """Folder holding `<dataset>/classes.txt` and the label sets."""
    env = os.environ.get("LLMSEG_LABEL_SETS")
    return Path(env) if env else _package_dir("llmseg.label_sets")


def label_sets_output_dir() -> Path:
    """Where new label sets go by default: the repository's `label_sets/` in a checkout.

    An installed package (wheel, `--target`, site-packages) is no place for a user's files: then
    `./label_sets/` under the working directory. A checkout is recognised by the folder beside
    `label_sets/` holding the project's pyproject.toml (`LLMSEG_LABEL_SETS` overrides both).
    """
    env = os.environ.get("LLMSEG_LABEL_SETS")
    if env:
        return Path(env)
    bundled = _package_dir("llmseg.label_sets")
    checkout = (bundled.parent / "pyproject.toml").is_file() and (bundled.parent / "stage2_segment").is_dir()
    return bundled if checkout and os.access(bundled, os.W_OK) else Path.cwd() / "label_sets"


def prompts_dir() -> Path:
    """Folder holding the versioned prompt templates."""
    env = os.environ.get("LLMSEG_PROMPTS")
    return Path(env) if env else _package_dir("llmseg.prompts")


def resolve_label_set_path(path: str | os.PathLike) -> Path:
    """A label-set path as given, else relative to the bundled `label_sets/` folder.

    `label_sets/pascal_voc/top5.json` therefore works from any working directory.
    """
    candidate = Path(path)
    if candidate.exists():
        return candidate
    parts = candidate.parts
    if parts and parts[0] == "label_sets":
        parts = parts[1:]
    bundled = label_sets_dir().joinpath(*parts) if parts else label_sets_dir()
    if bundled.exists():
        return bundled
    raise MissingFileError(f"label set not found: {path} (also looked in {bundled})")
