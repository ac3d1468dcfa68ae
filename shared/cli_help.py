"""Two fixes to typer's rich help, applied once when the `llmseg` CLI is imported.

Why: typer 0.29 prints a `<bool>` type next to every on/off flag (`--version <bool>`), which
reads as if the flag took a value; and its default "rich" markup mode parses help text as rich
markup, so plain text such as `{class: [subclasses]}` loses its brackets. Help strings here are
plain text, so they are shown literally.
"""

from __future__ import annotations

import inspect
from typing import Any

from rich.text import Text
from typer import core, rich_utils

_APPLIED = False


def apply() -> None:
    """Patch typer's TyperOption.display_type_rich (no type for flags) and rich text (no markup)."""
    global _APPLIED
    if _APPLIED:
        return
    original_type = core.TyperOption.display_type_rich

    def display_type_rich(self: Any, ctx: Any) -> str | None:
        if getattr(self, "is_flag", False) and self.metavar is None:
            return None
        return original_type(self, ctx)

    original_text = rich_utils._make_rich_text

    def make_rich_text(*, text: str, style: str = "", markup_mode: Any) -> Any:
        if markup_mode == rich_utils.MARKUP_MODE_RICH:
            return rich_utils.highlighter(Text(inspect.cleandoc(text), style=style))
        return original_text(text=text, style=style, markup_mode=markup_mode)

    core.TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]
    rich_utils._make_rich_text = make_rich_text
    _APPLIED = True
