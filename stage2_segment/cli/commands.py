"""Stage-two sub-commands: the engine's (`data`, `score`, `evaluate`), `segment`, `demo`, `compare` and `tune`."""

from __future__ import annotations

import typer

from llmseg.stage2.cli.compare import register as register_compare
from llmseg.stage2.cli.engine import register as register_engine
from llmseg.stage2.cli.segment import register as register_segment
from llmseg.stage2.cli.tune import register as register_tune
from llmseg.stage2.demo.cli import register as register_demo


def register(app: typer.Typer) -> None:
    """Add stage two's commands to the root app (each module imports its heavy dependencies lazily)."""
    register_engine(app)
    register_segment(app)
    register_demo(app)
    register_compare(app)
    register_tune(app)
