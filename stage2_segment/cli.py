"""Stage-two sub-commands (filled in by the stage-two work)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add stage two's commands to the root app."""
