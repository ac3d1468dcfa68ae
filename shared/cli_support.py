"""What every `llmseg` command shares: one way to report a user error, one way to print untrusted text.

A command raises (or lets through) an `LlmsegError`; the root group prints `error: <message>` and
exits 2. Any other exception is a bug: it keeps its traceback and its own exit status, so a
KeyError deep inside a method is never disguised as bad input. This module imports only typer and
`llmseg.errors`, so every stage's CLI can use it without importing the root app.
"""

from __future__ import annotations

import logging
import sys
import unicodedata
from typing import Any

import typer
from typer.core import TyperGroup

from .errors import ConfigError, LlmsegError

USER_ERROR = 2


# bidirectional overrides and line separators: they reorder or break what a terminal shows
_INVISIBLE = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029")


def _escape(ch: str, as_json: bool) -> str:
    code = ord(ch)
    if as_json or code > 0xFF:
        return f"\\u{code:04x}"
    return f"\\x{code:02x}"


def safe_text(text: str, *, newlines: bool = True, as_json: bool = False) -> str:
    """`text` with every control character escaped (`\\x1b`, `\\x9b`, `\\u202e`), so that what came from a
    file or a server cannot drive the terminal (clear the screen, move the cursor, set the title).

    C0 (ESC included), DEL, C1 (0x80-0x9f: 0x9b is a one-byte CSI) and bidirectional overrides are
    escaped. Only line feeds are kept when `newlines` (a message of several lines); `as_json` writes
    `\\u009b` escapes, valid inside the strings of a JSON document that is printed.
    """
    out = []
    for ch in text:
        if ch == "\n" and newlines:
            out.append(ch)
        elif ch in _INVISIBLE or unicodedata.category(ch) == "Cc":
            out.append(_escape(ch, as_json))
        else:
            out.append(ch)
    return "".join(out)


class _SafeStderrHandler(logging.StreamHandler):
    """Python's last-resort log handler (WARNING and above, message only, to the current sys.stderr) with
    every record escaped: a log line quoting a class name, an answer or a server reply cannot drive the
    terminal either."""

    def __init__(self) -> None:
        super().__init__()
        self.setLevel(logging.WARNING)

    @property
    def stream(self) -> Any:  # the stderr of the moment (a test runner swaps it), as the stdlib's handler does
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass

    def format(self, record: logging.LogRecord) -> str:
        return safe_text(super().format(record))


# Only where the application has configured no logging of its own (the stdlib then uses lastResort).
logging.lastResort = _SafeStderrHandler()


def echo(message: str, *, err: bool = False, fg: str | None = None) -> None:
    """Print a line that may hold text from a file or a server, control characters escaped (see safe_text)."""
    typer.secho(safe_text(message), err=err, fg=fg)


def fail(message: str, code: int = USER_ERROR) -> typer.Exit:
    """Print `error: message` to stderr and return the Exit to raise (`raise fail(...)`)."""
    echo(f"error: {message}", err=True, fg=typer.colors.RED)
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
