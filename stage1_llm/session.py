"""One stage-one run's shared state and its request machinery: the part `generate` and `batch` both use.

`Session` holds what every class's requests share (backend, prompt, answer log, rate limiter,
backoff, structured-output mode, counters, the abort flag) and gets one answer: `ask` replays it
from the cache or requests it, retrying transport errors with `Backoff`. `conversation` asks a
class until it answers usably; `generate` drives that over all classes; `batch` prefills the
cache through the Batch API with the same keys (`Session.first_messages`, `Session.key`) and
records (`Session.answers`). Neither imports the other's internals.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field, replace
from typing import Any

from .answers import DEFAULT_MAX_ANSWER_CHARS, AnswerLog
from .backends import Backend, Sampling
from .backends.base import BackendError, Completion, StructuredOutputUnsupported
from .cache import AnswerCache, request_key
from .pacing import Backoff, RateLimiter
from .parse import answer_schema
from .prompts import PromptTemplate


@dataclass
class RunStats:
    """Counters for the progress bar, the summary line and the sidecar."""

    classes: int = 0
    requests: int = 0  # sent to the backend
    cached: int = 0  # answers replayed from the cache
    retries: int = 0  # transport retries (429, 5xx, timeouts, connection errors)
    reasks: int = 0  # unusable answers asked again
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wall_s: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.__dict__.items() if not k.startswith("_")}

    def summary(self) -> str:
        tokens = self.prompt_tokens + self.completion_tokens
        return (
            f"{self.classes} classes, {self.requests} requests ({self.cached} answers from cache), "
            f"{self.retries} retries, {self.reasks} re-asks, {self.failed} failed, "
            f"{tokens} tokens ({self.prompt_tokens} prompt + {self.completion_tokens} completion), {self.wall_s:.1f} s"
        )


class RunStopped(Exception):
    """The run stopped (a fatal backend error, a disk error, an interrupt): no more requests."""


class ClassFailed(Exception):
    """This class's request cannot succeed (rejected, or out of retries); the other classes go on."""


class Session:
    """One generation run's shared state: backend, cache, limiter, structured-output mode, counters."""

    def __init__(
        self,
        *,
        classes: list[str],
        backend: Backend,
        template: PromptTemplate,
        k: int,
        sampling: Sampling,
        cache: AnswerCache,
        refresh: bool,
        max_retries: int,
        backoff: Backoff,
        limiter: RateLimiter,
        domain: str,
        other_classes: bool,
        structured: bool,
        repair_temperature: float | None = None,
        max_answer_chars: int = DEFAULT_MAX_ANSWER_CHARS,
    ):
        self.classes = classes
        self.max_answer_chars = max_answer_chars
        self.repair_temperature = repair_temperature
        self.backend = backend
        self.template = template
        self.k = k
        self.sampling = sampling
        self.cache = cache
        self.refresh = refresh
        self.max_retries = max_retries
        self.backoff = backoff
        self.limiter = limiter
        self.domain = domain
        self.other_classes = other_classes
        self.schema = answer_schema() if backend.supports_schema else None
        self.describe = backend.describe()
        self.base_url = self.describe.get("base_url")
        rejected = cache.notes(event="json_schema_rejected", backend=backend.name, model=backend.model, base_url=self.base_url)
        self.structured = bool(structured and self.schema is not None and not rejected)
        self.stats = RunStats(classes=len(classes))
        self.fingerprints: set[str] = set()
        self.abort = threading.Event()
        self.abort_reason: str | None = None
        self._lock = threading.Lock()
        self._rng = random.Random()
        self.answers = AnswerLog(cache, backend, template, max_answer_chars, on_write_error=self.stop)

    # ------------------------------------------------------------------ requests

    def other_classes_for(self, class_name: str) -> list[str]:
        """The other classes a prompt names beside `class_name` (none unless `other_classes` is set)."""
        return [c for c in self.classes if c != class_name] if self.other_classes else []

    def first_messages(self, class_name: str) -> list[dict[str, str]]:
        """The first turn of this class's conversation: the prompt with the other classes (if asked for) written in."""
        return self.template.render(class_name, self.k, self.domain, self.other_classes_for(class_name))

    def note_fingerprint(self, fingerprint: str) -> None:
        """Remember a server's system_fingerprint for the sidecar (called from worker threads)."""
        with self._lock:
            self.fingerprints.add(fingerprint)

    def sampling_for(self, answer_index: int) -> Sampling:
        """The first answer's sampling, or for a repair turn (answer_index > 0) the repair temperature if set.

        A greedy model tends to repeat its rejected answer word for word after the repair message;
        sampling the repair (seeded per try, so reruns replay from the cache) lets it move.
        """
        if answer_index == 0 or self.repair_temperature is None:
            return self.sampling
        seed = None if self.sampling.seed is None else self.sampling.seed + answer_index
        return replace(self.sampling, temperature=self.repair_temperature, seed=seed)

    def key(self, messages: list[dict[str, str]], structured: bool, sampling: Sampling | None = None) -> str:
        """The cache key of this request: what `ask` looks up first and what `batch` logs its answers under."""
        return request_key(
            backend=self.backend.name,
            model=self.backend.model,
            prompt_sha256=self.template.sha256,
            messages=messages,
            schema=self.schema if structured else None,
            sampling=(sampling or self.sampling).as_dict(),
        )

    def redact(self, text: str) -> str:
        """`text` with the backend's secrets (its API key) masked, before it is logged or shown."""
        redact = getattr(self.backend, "redact", None)
        return redact(text) if redact else text

    def ask(self, class_name: str, messages: list[dict[str, str]], answer_index: int) -> dict[str, Any]:
        """One answer (a cache record) for these messages: replayed from the log, else requested and logged."""
        sampling = self.sampling_for(answer_index)
        if not self.refresh and (record := self._replay(messages, sampling)) is not None:
            return record
        transport_failures = 0
        while True:
            if self.abort.is_set():
                raise RunStopped(self.abort_reason)
            structured = self.structured
            self.limiter.acquire()
            self.stats.add(requests=1)
            try:
                completion = self.backend.complete(messages, schema=self.schema if structured else None, sampling=sampling)
            except StructuredOutputUnsupported as exc:
                if structured:  # sent with a schema: retry at once without it, for the rest of the run
                    self._schema_rejected(str(exc))
                    continue
                raise ClassFailed(f"the server rejected the request: {self.redact(str(exc))}") from exc
            except BackendError as exc:
                self._transport_failure(exc, class_name, answer_index, transport_failures)
                transport_failures += 1
                continue
            record = self._answer_record(class_name, messages, answer_index, structured, sampling, completion)
            self.answers.append(record)
            self.answers.remember(record)
            return record

    def _replay(self, messages: list[dict[str, str]], sampling: Sampling) -> dict[str, Any] | None:
        """The logged answer to these messages (asked with or without the schema), or None."""
        modes = [self.structured, not self.structured] if self.schema is not None else [False]
        for structured in modes:
            record = self.cache.get(self.key(messages, structured, sampling))
            if record is not None:
                self.stats.add(cached=1)
                self.answers.remember(record)
                return record
        return None

    def _transport_failure(self, exc: BackendError, class_name: str, answer_index: int, failures: int) -> None:
        """Log a failed request, then wait out the backoff before the next try; raise when there is none.

        A fatal error stops the run (RunStopped), a non-retryable one or the last allowed failure
        fails the class (ClassFailed); the wait ends early when the run stops.
        """
        message = self.redact(str(exc))
        self.answers.append({"kind": "error", "class": class_name, "answer": answer_index, "status": exc.status, "error": message})
        if exc.fatal:
            self.stop(message)
            raise RunStopped(message) from exc
        if not exc.retryable:
            raise ClassFailed(f"the server rejected the request: {message}") from exc
        if failures >= self.max_retries:
            raise ClassFailed(f"gave up after {failures + 1} failed requests, last: {message}") from exc
        self.stats.add(retries=1)
        if self.abort.wait(self.backoff.delay(failures, exc.retry_after, self._rng)):
            raise RunStopped(self.abort_reason) from exc

    def _answer_record(
        self, class_name: str, messages: list[dict[str, str]], answer_index: int, structured: bool, sampling: Sampling,
        completion: Completion,
    ) -> dict[str, Any]:
        """The cache record of a fresh answer, its tokens and fingerprint counted."""
        usage = completion.usage
        self.stats.add(prompt_tokens=usage.get("prompt_tokens", 0), completion_tokens=usage.get("completion_tokens", 0))
        if completion.system_fingerprint:
            self.note_fingerprint(completion.system_fingerprint)
        return self.answers.record(
            key=self.key(messages, structured, sampling), class_name=class_name, messages=messages, answer_index=answer_index,
            structured=structured, sampling=sampling, text=completion.text, meta=completion.meta(),
        )

    def _schema_rejected(self, message: str) -> None:
        with self._lock:
            if not self.structured:
                return
            self.structured = False
        self.answers.append(
            {
                "kind": "note",
                "event": "json_schema_rejected",
                "backend": self.backend.name,
                "model": self.backend.model,
                "base_url": self.base_url,
                "message": self.redact(message),
            }
        )

    def stop(self, reason: str) -> None:
        """Stop the run: requests in flight end at their next wait, new ones are not sent; the first reason is kept."""
        with self._lock:
            if self.abort_reason is None:
                self.abort_reason = reason
        self.abort.set()
