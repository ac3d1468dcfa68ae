"""Stage-two sub-commands: the engine's (`data`, `score`, `evaluate`) plus `segment` and `demo`."""

from __future__ import annotations

import importlib

import typer

# Modules of other stage-two parts that add commands; each may not exist yet while the project grows.
_OPTIONAL_COMMAND_MODULES = ("stage2_segment.cli_segment", "stage2_segment.demo.cli")


def _is_missing(exc: ModuleNotFoundError, module: str) -> bool:
    """True when `module` itself (or a package on its path) does not exist, not a failing import inside it."""
    name = exc.name or ""
    return bool(name) and (module == name or module.startswith(name + ".")) and name.startswith("stage2_segment")


def register(app: typer.Typer) -> None:
    """Add stage two's commands to the root app."""
    from .cli_engine import register as register_engine

    register_engine(app)
    for module_name in _OPTIONAL_COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if _is_missing(exc, module_name):
                continue
            raise
        module.register(app)
