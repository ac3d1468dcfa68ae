"""Result folders that a grid or a search reuses: a marker file holding the run's key beside evaluate's files.

`compare` (cell.json) and `tune` (trial.json) both decide from these whether a folder holds a
finished run of the same settings (reuse it), a run of other settings, or an interrupted one
(evaluate's checkpoint continues it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmseg.io import atomic_write_json

RESULT_FILES = ("metrics.json", "metrics.md", "checkpoint.json")  # what evaluate writes into the folder


def marker_key(folder: Path, marker: str) -> str | None:
    """The key recorded in folder/marker (None: no marker, or an unreadable one)."""
    try:
        return json.loads((folder / marker).read_text(encoding="utf-8")).get("key")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def finished_metrics(folder: Path, marker: str, key: str) -> dict[str, Any] | None:
    """metrics.json of a finished run (same key, checkpoint complete) in `folder`, else None."""
    try:
        checkpoint = json.loads((folder / "checkpoint.json").read_text(encoding="utf-8"))
        if marker_key(folder, marker) != key or not checkpoint.get("complete"):
            return None
        return json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def clear_results(folder: Path) -> None:
    """Remove evaluate's files so the next run starts over (the marker stays until it is rewritten)."""
    for name in RESULT_FILES:
        (folder / name).unlink(missing_ok=True)


def write_marker(folder: Path, marker: str, key: str, about: dict[str, Any]) -> None:
    atomic_write_json(folder / marker, {"key": key, **about})
