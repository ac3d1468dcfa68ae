"""What every `llmseg` command shares: one way to report a user error.

A command raises (or lets through) an `LlmsegError`; the root group prints `error: <message>` and
exits 2. Any other exception is a bug: it keeps its traceback and its own exit status, so a
KeyError deep inside a method is never disguised as bad input. This module imports only typer and
`llmseg.errors`, so every stage's CLI can use it without importing the root app.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from .errors import ConfigError, LlmsegError

USER_ERROR = 2


def fail(message: str, code: int = USER_ERROR) -> typer.Exit:
    """Print `error: message` to stderr and return the Exit to raise (`raise fail(...)`)."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


class LlmsegGroup(TyperGroup):
    """The root command group: an `LlmsegError` escaping any sub-command becomes `error: ...`, exit 2."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except LlmsegError as exc:
            raise fail(str(exc)) from exc


def option_errors(exc: Any, prefix: str = "bad method options") -> ConfigError:
    """A pydantic ValidationError about CLI settings as a ConfigError naming each `--option`: `prefix: --x: why`."""
    problems = "; ".join(
        f"--{'-'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}" if e.get("loc") else e["msg"]
        for e in exc.errors()
    )
    return ConfigError(f"{prefix}: {problems}")
