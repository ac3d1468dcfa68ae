"""One run's answers as records: how an answer is stored in the cache, and whether it is usable.

`AnswerLog` builds the cache record of an answer and appends it. `session` (answers over HTTP)
and `batch` (answers from a Batch API output file) both build their records here, so a batch
answer replays exactly like one asked directly. `judge_answer` applies the size cap and then
the parser; `shown_answer` is what a repair conversation repeats of an answer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .backends import Backend, Sampling
from .cache import AnswerCache, CacheWriteError, capped_text
from .parse import parse_answer
from .prompts import PromptTemplate

DEFAULT_MAX_ANSWER_CHARS = 64 * 1024  # an answer of K names is a few hundred characters; more is a runaway or hostile server


class AnswerLog:
    """Writes a run's answer records to its cache, each answer text stored once.

    `on_write_error` is called with the message before a `CacheWriteError` is raised, so the run
    stops at once and pays for no answer it cannot keep.
    """

    def __init__(
        self, cache: AnswerCache, backend: Backend, template: PromptTemplate, max_answer_chars: int,
        on_write_error: Callable[[str], None],
    ):
        self.cache = cache
        self.backend = backend
        self.template = template
        self.max_answer_chars = max_answer_chars
        self.on_write_error = on_write_error
        self._answer_keys: dict[str, str] = {}  # answer text -> the key of the record that holds it
        self._lock = threading.Lock()

    def record(
        self, *, key: str, class_name: str, messages: list[dict[str, str]], answer_index: int, structured: bool,
        sampling: Sampling, text: str, meta: dict[str, Any],
    ) -> dict[str, Any]:
        """The cache record of an answer: its text capped, earlier answers in its conversation by reference."""
        return {
            "kind": "answer",
            "key": key,
            "class": class_name,
            "answer": answer_index,
            "backend": self.backend.name,
            "model": self.backend.model,
            "prompt_id": self.template.id,
            "prompt_sha256": self.template.sha256,
            "structured": structured,
            "sampling": sampling.as_dict(),
            "messages": self.by_reference(messages),
            **capped_text(text, self.max_answer_chars),
            "meta": meta,
        }

    def append(self, record: dict[str, Any]) -> None:
        """Append to the cache; on a disk error, report it (the run stops) and raise."""
        try:
            self.cache.append(record)
        except CacheWriteError as exc:
            self.on_write_error(str(exc))
            raise

    def remember(self, record: dict[str, Any]) -> None:
        """Note which record holds this answer text, so a re-ask that repeats it stores the key, not the text."""
        if record.get("text"):
            with self._lock:
                self._answer_keys[record["text"]] = record["key"]

    def by_reference(self, messages: list[dict[str, str]]) -> list[dict[str, Any]]:
        """The messages as stored: an earlier answer repeated in the conversation becomes {"role", "answer_ref": key}.

        Why: re-asks repeat every earlier answer, so storing them by value grows the cache with the
        square of the tries (three 3 MB answers made an 18 MB cache). The key is computed on the
        full messages, so caches written before keep their keys; `AnswerCache.expand` undoes this.
        """
        with self._lock:
            refs = dict(self._answer_keys)
        out: list[dict[str, Any]] = []
        for message in messages:
            content = message.get("content")
            if message.get("role") == "assistant" and isinstance(content, str) and content in refs:
                out.append({"role": "assistant", "answer_ref": refs[content]})
            else:
                out.append(message)
        return out


def _size(record: dict[str, Any]) -> int:
    return record.get("oversize") or len(record["text"])


def judge_answer(
    record: dict[str, Any], class_name: str, k: int, classes: list[str], max_answer_chars: int
) -> tuple[list[str] | None, str]:
    """(subclasses, "") for a usable answer, else (None, what is wrong): the size cap first, then the parser."""
    size = _size(record)
    if size > max_answer_chars:
        return None, (
            f"the answer is {size} characters long, over the answer size cap of {max_answer_chars} characters "
            "(max_answer_chars); answer with the JSON object only"
        )
    meta = record.get("meta") or {}
    parsed = parse_answer(record["text"], k, class_name=class_name, other_classes=classes, finish_reason=meta.get("finish_reason"))
    return (parsed.subclasses, "") if parsed.ok else (None, parsed.describe())


def shown_answer(record: dict[str, Any], max_answer_chars: int) -> str:
    """The assistant turn a repair conversation repeats: the answer, or for one over the cap a short stand-in.

    Why the stand-in: the text of such an answer is never stored, and a rerun must build the very
    same conversation to find its cached re-ask.
    """
    size = _size(record)
    if size > max_answer_chars:
        return f"[an answer of {size} characters, over the {max_answer_chars}-character cap, not repeated here]"
    return record["text"]
