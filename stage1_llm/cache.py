"""The append-only request/answer log that makes stage one resumable, even after SIGKILL.

Every answer is one JSON line appended and fsync'ed (`llmseg.io.append_jsonl`) before it is
used, keyed by `request_key(...)`: a hash of backend, model, prompt sha256, the rendered
messages, the response schema and the sampling settings. Asking the same thing again finds
the answer here instead of the server. Failed requests are logged too (`kind: "error"`),
for the record only. A truncated last line (a kill mid-write) is skipped on reading.
The API key is never part of a record.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from llmseg.io import append_jsonl, read_jsonl, stable_hash

CACHE_VERSION = 1


def request_key(
    *,
    backend: str,
    model: str,
    prompt_sha256: str,
    messages: list[dict[str, str]],
    schema: dict[str, Any] | None,
    sampling: dict[str, Any],
) -> str:
    """The cache key of one request: equal keys ask exactly the same thing."""
    return stable_hash(
        {
            "v": CACHE_VERSION,
            "backend": backend,
            "model": model,
            "prompt_sha256": prompt_sha256,
            "messages": messages,
            "schema": schema,
            "sampling": sampling,
        }
    )


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class AnswerCache:
    """Answers by key, loaded from and appended to a jsonlines file (or kept in memory when `path` is None)."""

    def __init__(self, path: Path | None):
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._answers: dict[str, dict[str, Any]] = {}
        self._notes: list[dict[str, Any]] = []
        self.loaded = 0
        if self.path is not None:
            for record in read_jsonl(self.path):
                self._index(record)
                self.loaded += 1

    def _index(self, record: dict[str, Any]) -> None:
        kind = record.get("kind")
        if kind == "answer" and isinstance(record.get("key"), str) and isinstance(record.get("text"), str):
            self._answers[record["key"]] = record
        elif kind == "note":
            self._notes.append(record)

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            return self._answers.get(key)

    def notes(self, **match: Any) -> list[dict[str, Any]]:
        """Notes (e.g. 'this server rejects json_schema') whose fields equal `match`."""
        with self._lock:
            return [n for n in self._notes if all(n.get(k) == v for k, v in match.items())]

    def append(self, record: dict[str, Any]) -> None:
        """Log one record durably (fsync) before anyone relies on it."""
        record = {"v": CACHE_VERSION, "time": now(), **record}
        with self._lock:
            if self.path is not None:
                append_jsonl(self.path, record)
            self._index(record)

    def __len__(self) -> int:
        return len(self._answers)
