"""One stage-one run's shared state and its request machinery: the part `generate` and `batch` both use.

`Session` holds what every class's requests share (backend, prompt, cache, rate limiter, backoff,
structured-output mode, counters, the abort flag) and asks one class: `ask` replays an answer from
the cache or requests it (retrying transport errors with `Backoff`), `solve` re-asks until the
answer parses, `repair_clash` re-asks a class that shares subclasses with another. `generate`
drives sessions over all classes; `batch` prefills a session's cache through the Batch API with
the same keys (`Session.first_messages`, `Session.key`). Neither imports the other's internals.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

from .backends import Backend, Sampling
from .backends.base import BackendError, Completion, StructuredOutputUnsupported
from .cache import AnswerCache, CacheWriteError, capped_text, request_key
from .parse import answer_schema, parse_answer
from .prompts import PromptTemplate

STOPPED = "not finished: the run stopped"  # the reason of a class the run stopped before it finished
DEFAULT_MAX_ANSWER_CHARS = 64 * 1024  # an answer of K names is a few hundred characters; more is a runaway or hostile server


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: attempt n waits between d/2 and d, d = min(cap, base * 2**n).

    A server's Retry-After wins (capped at `retry_after_cap`). Tests use a tiny base.
    """

    base: float = 1.0
    cap: float = 30.0
    retry_after_cap: float = 300.0

    def delay(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        if retry_after is not None:
            return min(max(0.0, retry_after), self.retry_after_cap)
        ceiling = min(self.cap, self.base * (2.0**attempt))
        return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


class RateLimiter:
    """At most `rpm` request starts per minute, evenly spaced, shared by all worker threads."""

    def __init__(self, rpm: float | None):
        self.interval = 60.0 / rpm if rpm else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            time.sleep(start - now)



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


@dataclass
class Outcome:
    """What one class's asking gave: its subclasses (None: no usable answer, `reason` says why) and how many answers it took."""

    subclasses: list[str] | None
    answers: int
    reason: str | None = None
    messages: list[dict[str, str]] | None = None  # the conversation that gave `subclasses` (for a clash repair)
    text: str | None = None  # the answer text


def find_clashes(subclasses: dict[str, list[str]]) -> dict[str, list[str]]:
    """{subclass (lower-cased): [classes that gave it]} for every subclass more than one class gave.

    Why: a name shared by several classes cannot tell them apart, so it is useless for segmentation.
    """
    owners: dict[str, list[str]] = {}
    for class_name, names in subclasses.items():
        for name in {n.strip().lower() for n in names}:
            owners.setdefault(name, []).append(class_name)
    return {name: classes for name, classes in sorted(owners.items()) if len(classes) > 1}


def clash_problem(class_name: str, clashes: dict[str, list[str]]) -> str:
    """The repair turn's problem text for one class: which of its subclasses other classes also gave."""
    parts = [
        f"'{name}' (also given for {', '.join(repr(c) for c in classes if c != class_name)})"
        for name, classes in clashes.items() if class_name in classes
    ]
    return (
        "these subclasses are also given for other classes, so they cannot tell the classes apart: "
        + "; ".join(parts) + f". Replace them with subclasses that belong to '{class_name}' only."
    )


class _Aborted(Exception):
    """The run stopped (a fatal backend error, a disk error, an interrupt): no more requests."""


class _ClassFailed(Exception):
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
        self._answer_keys: dict[str, str] = {}  # answer text -> the key of the record that holds it (store each answer once)
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

    # ------------------------------------------------------------------ requests

    def first_messages(self, class_name: str) -> list[dict[str, str]]:
        """The first turn of this class's conversation: the prompt with the other classes (if asked for) written in."""
        others = [c for c in self.classes if c != class_name] if self.other_classes else []
        return self.template.render(class_name, self.k, self.domain, others)

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
                raise _Aborted(self.abort_reason)
            structured = self.structured
            self.limiter.acquire()
            self.stats.add(requests=1)
            try:
                completion = self.backend.complete(messages, schema=self.schema if structured else None, sampling=sampling)
            except StructuredOutputUnsupported as exc:
                if structured:  # sent with a schema: retry at once without it, for the rest of the run
                    self._schema_rejected(str(exc))
                    continue
                raise _ClassFailed(f"the server rejected the request: {self.redact(str(exc))}") from exc
            except BackendError as exc:
                self._transport_failure(exc, class_name, answer_index, transport_failures)
                transport_failures += 1
                continue
            record = self._answer_record(class_name, messages, answer_index, structured, sampling, completion)
            self._log(record)
            self._remember(record)
            return record

    def _replay(self, messages: list[dict[str, str]], sampling: Sampling) -> dict[str, Any] | None:
        """The logged answer to these messages (asked with or without the schema), or None."""
        modes = [self.structured, not self.structured] if self.schema is not None else [False]
        for structured in modes:
            record = self.cache.get(self.key(messages, structured, sampling))
            if record is not None:
                self.stats.add(cached=1)
                self._remember(record)
                return record
        return None

    def _transport_failure(self, exc: BackendError, class_name: str, answer_index: int, failures: int) -> None:
        """Log a failed request, then wait out the backoff before the next try; raise when there is none.

        A fatal error stops the run (_Aborted), a non-retryable one or the last allowed failure
        fails the class (_ClassFailed); the wait ends early when the run stops.
        """
        message = self.redact(str(exc))
        self._log({"kind": "error", "class": class_name, "answer": answer_index, "status": exc.status, "error": message})
        if exc.fatal:
            self.stop(message)
            raise _Aborted(message) from exc
        if not exc.retryable:
            raise _ClassFailed(f"the server rejected the request: {message}") from exc
        if failures >= self.max_retries:
            raise _ClassFailed(f"gave up after {failures + 1} failed requests, last: {message}") from exc
        self.stats.add(retries=1)
        if self.abort.wait(self.backoff.delay(failures, exc.retry_after, self._rng)):
            raise _Aborted(self.abort_reason) from exc

    def _answer_record(
        self, class_name: str, messages: list[dict[str, str]], answer_index: int, structured: bool, sampling: Sampling,
        completion: Completion,
    ) -> dict[str, Any]:
        """The cache record of a fresh answer (its tokens and fingerprint counted): the text capped, earlier answers by reference."""
        usage = completion.usage
        self.stats.add(prompt_tokens=usage.get("prompt_tokens", 0), completion_tokens=usage.get("completion_tokens", 0))
        if completion.system_fingerprint:
            self.note_fingerprint(completion.system_fingerprint)
        return {
            "kind": "answer",
            "key": self.key(messages, structured, sampling),
            "class": class_name,
            "answer": answer_index,
            "backend": self.backend.name,
            "model": self.backend.model,
            "prompt_id": self.template.id,
            "prompt_sha256": self.template.sha256,
            "structured": structured,
            "sampling": sampling.as_dict(),
            "messages": self._by_reference(messages),
            **capped_text(completion.text, self.max_answer_chars),
            "meta": completion.meta(),
        }

    def _remember(self, record: dict[str, Any]) -> None:
        """Note which record holds this answer text, so a re-ask that repeats it stores the key, not the text."""
        if record.get("text"):
            with self._lock:
                self._answer_keys[record["text"]] = record["key"]

    def _by_reference(self, messages: list[dict[str, str]]) -> list[dict[str, Any]]:
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

    def _judge(self, class_name: str, record: dict[str, Any]) -> tuple[list[str] | None, str]:
        """(subclasses, "") for a usable answer, else (None, what is wrong): the size cap first, then the parser."""
        size = record.get("oversize") or len(record["text"])
        if size > self.max_answer_chars:
            return None, (
                f"the answer is {size} characters long, over the answer size cap of {self.max_answer_chars} characters "
                "(max_answer_chars); answer with the JSON object only"
            )
        meta = record.get("meta") or {}
        parsed = parse_answer(
            record["text"], self.k, class_name=class_name, other_classes=self.classes, finish_reason=meta.get("finish_reason")
        )
        return (parsed.subclasses, "") if parsed.ok else (None, parsed.describe())

    def _shown(self, record: dict[str, Any]) -> str:
        """The assistant turn a repair conversation repeats: the answer, or for one over the cap a short stand-in
        (its text is never stored, and a rerun must build the very same conversation to find its cached re-ask)."""
        size = record.get("oversize") or len(record["text"])
        if size > self.max_answer_chars:
            return f"[an answer of {size} characters, over the {self.max_answer_chars}-character cap, not repeated here]"
        return record["text"]

    def _log(self, record: dict[str, Any]) -> None:
        """Append to the cache; a disk error stops the run at once, so no more answers are paid for that cannot be kept."""
        try:
            self.cache.append(record)
        except CacheWriteError as exc:
            self.stop(str(exc))
            raise

    def _schema_rejected(self, message: str) -> None:
        with self._lock:
            if not self.structured:
                return
            self.structured = False
        self._log(
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

    # ------------------------------------------------------------------ one class

    def solve(self, class_name: str) -> Outcome:
        """Ask one class until its answer gives exactly K clean subclasses (a repair turn per unusable answer)."""
        others = [c for c in self.classes if c != class_name] if self.other_classes else []
        messages = self.first_messages(class_name)
        problem = ""
        for answer_index in range(self.max_retries + 1):
            try:
                record = self.ask(class_name, messages, answer_index)
            except _ClassFailed as exc:
                return Outcome(None, answer_index, str(exc))
            except _Aborted as exc:
                return Outcome(None, answer_index, f"{STOPPED} ({exc})")
            subclasses, problem = self._judge(class_name, record)
            if subclasses is not None:
                return Outcome(subclasses, answer_index + 1, messages=messages, text=record["text"])
            if answer_index < self.max_retries:
                self.stats.add(reasks=1)
                repair = self.template.render_repair(class_name, self.k, problem, self.domain, others)
                messages = [*messages, {"role": "assistant", "content": self._shown(record)}, {"role": "user", "content": repair}]
        return Outcome(None, self.max_retries + 1, f"no usable answer in {self.max_retries + 1} tries, last: {problem}")

    def repair_clash(self, class_name: str, previous: Outcome, clashes: dict[str, list[str]]) -> Outcome:
        """Ask one class again, naming the subclasses it shares with other classes (a repair turn)."""
        others = [c for c in self.classes if c != class_name] if self.other_classes else []
        repair = self.template.render_repair(class_name, self.k, clash_problem(class_name, clashes), self.domain, others)
        messages = [*(previous.messages or []), {"role": "assistant", "content": previous.text or ""},
                    {"role": "user", "content": repair}]
        self.stats.add(reasks=1)
        answer_index = previous.answers
        try:
            record = self.ask(class_name, messages, answer_index)
        except _ClassFailed as exc:
            return Outcome(None, answer_index + 1, str(exc))
        except _Aborted as exc:
            return Outcome(None, answer_index + 1, f"{STOPPED} ({exc})")
        subclasses, _ = self._judge(class_name, record)
        if subclasses is None:  # an unusable repair keeps the earlier answer; the clash check decides
            return Outcome(previous.subclasses, answer_index + 1, messages=messages, text=self._shown(record))
        return Outcome(subclasses, answer_index + 1, messages=messages, text=record["text"])

