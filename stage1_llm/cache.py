"""The append-only request/answer log that makes stage one resumable, even after SIGKILL.

Every answer is one JSON line appended and fsync'ed (`llmseg.io.append_jsonl`) before it is
used, keyed by `request_key(...)`: a hash of backend, model, prompt sha256, the rendered
messages, the response schema and the sampling settings. Asking the same thing again finds
the answer here instead of the server. Failed requests are logged too (`kind: "error"`),
for the record only. The API key is never part of a record.

Reading is tolerant (`llmseg.io.iter_jsonl`): a torn last line (a kill mid-write) is dropped
and any other unreadable line skipped, each with a warning naming the file and the line; a
record whose fields have the wrong types (say `meta` not an object) is skipped the same way,
so nothing downstream meets a record it cannot use. A skipped line costs one request asked
again, never the other answers.

An answer over the size cap (`capped_text`, the run's `max_answer_chars`) is stored as its size
only. Each answer's text is stored once: a re-ask's conversation repeats earlier answers, and the
record stores those as `{"role": "assistant", "answer_ref": <key of the answer record>}`
(`AnswerCache.expand` puts the text back). Keys are still computed on the full messages, so
existing caches keep their keys.

A full or read-only disk: `append` keeps the record in memory, writes it to a rescue file
(`rescue_path`, in the temp folder, or `$LLMSEG_RESCUE_DIR`) and raises `CacheWriteError`
naming the OS error, the cache and the rescue file. The next run with the same cache reads
the rescue file back (and moves it into the cache when it can), so a paid answer is not lost.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from llmseg.errors import LlmsegError
from llmseg.io import append_jsonl, iter_jsonl, sha256_text, stable_hash

CACHE_VERSION = 1
log = logging.getLogger(__name__)


class CacheWriteError(LlmsegError, OSError):
    """The cache could not be appended to (disk full, read-only); the message names where the record went instead."""


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


def capped_text(text: str, cap: int) -> dict[str, Any]:
    """An answer record's text fields: the text, or for one over `cap` characters only its size (`oversize`).

    Why: an answer's size is the server's choice; one over the cap is judged unusable anyway, so
    storing it would only let a runaway or hostile server fill the disk.
    """
    return {"text": text} if len(text) <= cap else {"text": "", "oversize": len(text)}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def rescue_path(cache_path: Path) -> Path:
    """Where records go when `cache_path` cannot be written: the temp folder, another disk more often than not."""
    folder = Path(os.environ.get("LLMSEG_RESCUE_DIR") or tempfile.gettempdir())
    digest = sha256_text(str(Path(cache_path).resolve()))[:16]
    return folder / f"llmseg-rescue-{Path(cache_path).stem}-{digest}.jsonl"


# Field -> the types a record may hold there; a field that is absent is fine, one of another type is not.
_ANSWER_FIELDS: dict[str, tuple[type, ...]] = {
    "key": (str,),
    "text": (str,),
    "class": (str,),
    "meta": (dict, type(None)),
    "messages": (list,),
    "answer": (int,),
    "oversize": (int,),
    "structured": (bool,),
    "sampling": (dict,),
}
_NOTE_FIELDS: dict[str, tuple[type, ...]] = {
    "event": (str,),
    "batch_id": (str,),
    "batch_key": (str,),
    "requests": (int,),
    "base_url": (str, type(None)),
}
_REQUIRED = {"answer": ("key", "text"), "note": ("event",)}


def record_problem(record: dict[str, Any]) -> str | None:
    """Why this record cannot be used (a field missing or of the wrong type), or None when it can."""
    kind = record.get("kind")
    fields = {"answer": _ANSWER_FIELDS, "note": _NOTE_FIELDS}.get(kind) if isinstance(kind, str) else None
    if fields is None or not isinstance(kind, str):  # (the second test only tells mypy what the first implies)
        return None  # errors and unknown kinds are for the record only: never read back
    for name in _REQUIRED[kind]:
        if name not in record:
            return f"a {kind} record without '{name}'"
    for name, types in fields.items():
        value = record.get(name)
        if name in record and (not isinstance(value, types) or (int in types and isinstance(value, bool) and bool not in types)):
            return f"'{name}' is {type(value).__name__}, not {' or '.join(t.__name__ for t in types)}"
    if kind == "answer" and not all(isinstance(m, dict) for m in record.get("messages", [])):
        return "'messages' holds an entry that is not an object"
    if kind == "note" and record["event"].startswith("batch_") and not isinstance(record.get("batch_id"), str):
        return f"a '{record['event']}' note without 'batch_id'"
    return None


class AnswerCache:
    """Answers by key, loaded from and appended to a jsonlines file (or kept in memory when `path` is None)."""

    def __init__(self, path: Path | None):
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._answers: dict[str, dict[str, Any]] = {}
        self._notes: list[dict[str, Any]] = []
        self.loaded = 0
        self.skipped: list[str] = []  # "file:line: why" of every record that could not be used
        if self.path is not None:
            self._load(self.path)
            self._recover(rescue_path(self.path))

    def _load(self, path: Path) -> list[dict[str, Any]]:
        """Index every usable record of `path`; the others are named in a warning and in `skipped`."""
        usable = []
        for number, record in iter_jsonl(path):
            problem = record_problem(record)
            if problem is not None:
                self.skipped.append(f"{path}:{number}: {problem}")
                log.warning("%s: line %d skipped: %s", path, number, problem)
                continue
            self._index(record)
            self.loaded += 1
            usable.append(record)
        return usable

    def _recover(self, rescue: Path) -> None:
        """Read back what an earlier run could not write to the cache, and move it into the cache if the disk allows."""
        if not rescue.is_file():
            return
        assert self.path is not None  # only a cache with a file has a rescue file
        records = self._load(rescue)
        log.warning("%s: %d records an earlier run could not write to %s are read back", rescue, len(records), self.path)
        try:
            for record in records:
                append_jsonl(self.path, record)
        except OSError as exc:
            log.warning("%s: still cannot write (%s); the records stay in %s", self.path, exc.strerror or exc, rescue)
            return
        rescue.unlink(missing_ok=True)

    def _index(self, record: dict[str, Any]) -> None:
        kind = record.get("kind")
        if kind == "answer":
            self._answers[record["key"]] = record
        elif kind == "note":
            self._notes.append(record)

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            return self._answers.get(key)

    def expand(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A stored conversation with every `answer_ref` replaced by that answer's text (None if it is not cached)."""
        out = []
        for message in messages:
            ref = message.get("answer_ref")
            if isinstance(ref, str):
                found = self.get(ref)
                message = {"role": message.get("role", "assistant"), "content": found["text"] if found else None}
            out.append(message)
        return out

    def notes(self, **match: Any) -> list[dict[str, Any]]:
        """Notes (e.g. 'this server rejects json_schema') whose fields equal `match`."""
        with self._lock:
            return [n for n in self._notes if all(n.get(k) == v for k, v in match.items())]

    def append(self, record: dict[str, Any]) -> None:
        """Log one record durably (fsync) before anyone relies on it.

        On an OSError the record is still indexed (this run can use it), written to the rescue
        file, and CacheWriteError says where it went: the answer the server was paid for survives.
        """
        record = {"v": CACHE_VERSION, "time": now(), **record}
        with self._lock:
            self._index(record)
            if self.path is None:
                return
            try:
                append_jsonl(self.path, record)
            except OSError as exc:
                raise CacheWriteError(self._rescue(record, exc)) from exc

    def _rescue(self, record: dict[str, Any], exc: OSError) -> str:
        """Write `record` to the rescue file; the error message that says what happened to it."""
        assert self.path is not None
        rescue = rescue_path(self.path)
        what = "the answer just received" if record.get("kind") == "answer" else f"a '{record.get('kind')}' record"
        cause = f"cannot append to the answer cache {self.path}: {exc.strerror or exc}" + (f" [errno {exc.errno}]" if exc.errno else "")
        try:
            _create_private(rescue)
            append_jsonl(rescue, record)
        except OSError as again:
            return f"{cause}; {what} could not be kept in {rescue} either ({again.strerror or again}), so it is lost; free some space and rerun"
        return (
            f"{cause}; {what} is kept in {rescue}, which the next run with this cache reads back: "
            "free some space and rerun the same command"
        )

    def __len__(self) -> int:
        return len(self._answers)


def _create_private(path: Path) -> None:
    """Create `path` readable by its owner only (answers are the user's), refusing a symlink planted there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0), 0o600)
    os.close(fd)
