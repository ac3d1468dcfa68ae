"""Stage-one sub-commands (filled in by the stage-one work)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add stage one's commands to the root app."""
