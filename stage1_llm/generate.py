"""Stage one's engine: ask a backend for K subclasses of every class, robustly, resumably.

`generate_label_set(...)` is the public API; `llmseg subclasses` is a thin layer over it.

Per class (classes run in parallel, `concurrency` at a time, with an optional client-side
requests-per-minute limit):

1. render the prompt template into chat messages;
2. look the request up in the cache (`llmseg.stage1.cache`); otherwise send it, retrying 429,
   5xx, timeouts and connection errors with exponential backoff and jitter, honouring
   `Retry-After` (up to `max_retries` retries per request);
3. parse and normalise the answer (`llmseg.stage1.parse`); if it does not give exactly K clean
   subclasses, append the answer and a "repair" turn saying what was wrong and ask again
   (up to `max_retries` re-asks). Entries are never invented, padded or cut.

Every answer is logged before it is used, so a killed run resumes where it stopped: answers
already in the log (same key) are replayed, not requested. If the server rejects
`response_format` json_schema, the run falls back to JSON in plain text for good (and notes
it in the log so that a resumed run starts there). Classes that never get a usable answer
make the run raise `GenerationError` naming each of them, after all the others are logged.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from llmseg.errors import ConfigError, LlmsegError
from llmseg.labelset import LabelSet, LabelSetMeta, validate_label_set

from .backends import Backend, Sampling, make_backend
from .backends.base import BackendError, StructuredOutputUnsupported
from .batch import BatchOptions, prefill_from_batch
from .cache import AnswerCache, CacheWriteError, capped_text, request_key
from .parse import answer_schema, parse_answer
from .prompts import DEFAULT_PROMPT, PromptTemplate, load_prompt

_STOPPED = "not finished: the run stopped"
DEFAULT_MAX_ANSWER_CHARS = 64 * 1024  # an answer of K names is a few hundred characters; more is a runaway or hostile server
log = logging.getLogger(__name__)


class GenerationError(LlmsegError, RuntimeError):
    """Some classes never got a usable answer; `failed` maps each to the reason. The rest is in the cache."""

    def __init__(self, failed: dict[str, str], *, total: int, cache_path: Path | None, aborted: str | None = None):
        self.failed = failed
        self.total = total
        self.cache_path = cache_path
        self.aborted = aborted
        lines = [f"stage one failed for {len(failed)} of {total} classes:"]
        stopped = [name for name, reason in failed.items() if reason.startswith(_STOPPED)]
        lines += [f"  - '{name}': {reason}" for name, reason in failed.items() if name not in stopped]
        if aborted:
            lines.append(f"  the run stopped: {aborted}")
        if stopped:
            lines.append(f"  {len(stopped)} classes not finished because the run stopped: " + ", ".join(f"'{n}'" for n in stopped))
        if cache_path is not None and total > len(failed):
            lines.append(f"the {total - len(failed)} usable answers are saved in {cache_path}; rerun the same command to resume")
        super().__init__("\n".join(lines))


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
class _Outcome:
    subclasses: list[str] | None
    answers: int
    reason: str | None = None
    messages: list[dict[str, str]] | None = None  # the conversation that gave `subclasses` (for a clash repair)
    text: str | None = None  # the answer text


CLASH_ROUNDS = 2  # re-asks of the classes that share a subclass before the run fails naming them


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
    pass


class _Run:
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

    def sampling_for(self, answer_index: int) -> Sampling:
        """The first answer's sampling, or for a repair turn (answer_index > 0) the repair temperature if set.

        A greedy model tends to repeat its rejected answer word for word after the repair message;
        sampling the repair (seeded per try, so reruns replay from the cache) lets it move.
        """
        if answer_index == 0 or self.repair_temperature is None:
            return self.sampling
        seed = None if self.sampling.seed is None else self.sampling.seed + answer_index
        return replace(self.sampling, temperature=self.repair_temperature, seed=seed)

    def _key(self, messages: list[dict[str, str]], structured: bool, sampling: Sampling | None = None) -> str:
        return request_key(
            backend=self.backend.name,
            model=self.backend.model,
            prompt_sha256=self.template.sha256,
            messages=messages,
            schema=self.schema if structured else None,
            sampling=(sampling or self.sampling).as_dict(),
        )

    def _redact(self, text: str) -> str:
        redact = getattr(self.backend, "redact", None)
        return redact(text) if redact else text

    def ask(self, class_name: str, messages: list[dict[str, str]], answer_index: int) -> dict[str, Any]:
        """One answer (a cache record) for these messages: replayed from the log, else requested and logged."""
        sampling = self.sampling_for(answer_index)
        if not self.refresh:
            modes = [self.structured, not self.structured] if self.schema is not None else [False]
            for structured in modes:
                record = self.cache.get(self._key(messages, structured, sampling))
                if record is not None:
                    self.stats.add(cached=1)
                    self._remember(record)
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
                raise _ClassFailed(f"the server rejected the request: {self._redact(str(exc))}") from exc
            except BackendError as exc:
                message = self._redact(str(exc))
                self._log(
                    {"kind": "error", "class": class_name, "answer": answer_index, "status": exc.status, "error": message}
                )
                if exc.fatal:
                    self._abort(message)
                    raise _Aborted(message) from exc
                if not exc.retryable:
                    raise _ClassFailed(f"the server rejected the request: {message}") from exc
                if transport_failures >= self.max_retries:
                    raise _ClassFailed(f"gave up after {transport_failures + 1} failed requests, last: {message}") from exc
                self.stats.add(retries=1)
                if self.abort.wait(self.backoff.delay(transport_failures, exc.retry_after, self._rng)):
                    raise _Aborted(self.abort_reason) from exc
                transport_failures += 1
                continue
            usage = completion.usage
            self.stats.add(prompt_tokens=usage.get("prompt_tokens", 0), completion_tokens=usage.get("completion_tokens", 0))
            if completion.system_fingerprint:
                with self._lock:
                    self.fingerprints.add(completion.system_fingerprint)
            record = {
                "kind": "answer",
                "key": self._key(messages, structured, sampling),
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
            self._log(record)
            self._remember(record)
            return record

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
            self._abort(str(exc))
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
                "message": self._redact(message),
            }
        )

    def _abort(self, reason: str) -> None:
        with self._lock:
            if self.abort_reason is None:
                self.abort_reason = reason
        self.abort.set()

    # ------------------------------------------------------------------ one class

    def solve(self, class_name: str) -> _Outcome:
        others = [c for c in self.classes if c != class_name] if self.other_classes else []
        messages = self.template.render(class_name, self.k, self.domain, others)
        problem = ""
        for answer_index in range(self.max_retries + 1):
            try:
                record = self.ask(class_name, messages, answer_index)
            except _ClassFailed as exc:
                return _Outcome(None, answer_index, str(exc))
            except _Aborted as exc:
                return _Outcome(None, answer_index, f"{_STOPPED} ({exc})")
            subclasses, problem = self._judge(class_name, record)
            if subclasses is not None:
                return _Outcome(subclasses, answer_index + 1, messages=messages, text=record["text"])
            if answer_index < self.max_retries:
                self.stats.add(reasks=1)
                repair = self.template.render_repair(class_name, self.k, problem, self.domain, others)
                messages = [*messages, {"role": "assistant", "content": self._shown(record)}, {"role": "user", "content": repair}]
        return _Outcome(None, self.max_retries + 1, f"no usable answer in {self.max_retries + 1} tries, last: {problem}")

    def repair_clash(self, class_name: str, previous: _Outcome, clashes: dict[str, list[str]]) -> _Outcome:
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
            return _Outcome(None, answer_index + 1, str(exc))
        except _Aborted as exc:
            return _Outcome(None, answer_index + 1, f"{_STOPPED} ({exc})")
        subclasses, _ = self._judge(class_name, record)
        if subclasses is None:  # an unusable repair keeps the earlier answer; the clash check decides
            return _Outcome(previous.subclasses, answer_index + 1, messages=messages, text=self._shown(record))
        return _Outcome(subclasses, answer_index + 1, messages=messages, text=record["text"])


class _ClassFailed(Exception):
    pass


def model_slug(model: str) -> str:
    """A short file-name-safe form of a model name: `Qwen/Qwen2.5-7B-Instruct` -> `qwen2.5-7b-instruct`."""
    import re

    tail = model.rstrip("/\\").replace("\\", "/").split("/")[-1] or model
    slug = re.sub(r"[^a-z0-9._-]+", "-", tail.lower()).strip("-.")
    return slug or "model"


def generate_label_set(
    classes: Sequence[str],
    *,
    backend: str,
    model: str,
    k: int = 5,
    prompt: str | Path | PromptTemplate = DEFAULT_PROMPT,
    base_url: str | None = None,
    api_key: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    concurrency: int = 8,
    rpm: float | None = None,
    max_retries: int = 5,
    timeout: float = 60.0,
    temperature: float = 0.0,
    seed: int | None = 0,
    max_tokens: int = 512,
    include_class_name: bool = False,
    other_classes: bool = True,
    structured: bool = True,
    cache_path: Path | None = None,
    refresh: bool = False,
    dataset_name: str | None = None,
    domain: str | None = None,
    device: str | None = None,
    dtype: str = "auto",
    backoff: Backoff | None = None,
    progress: bool = True,
    backend_instance: Backend | None = None,
    batch: bool = False,
    batch_options: BatchOptions | None = None,
    gguf_file: str | None = None,
    allow_shared: bool = False,
    repair_temperature: float | None = None,
    max_answer_chars: int = DEFAULT_MAX_ANSWER_CHARS,
) -> tuple[LabelSet, LabelSetMeta]:
    """Ask the LLM for exactly `k` subclasses of every class; return the label set and its provenance.

    backend/model: `"openai"` (any OpenAI-compatible server: `base_url`, `api_key` or the env var
    named by `api_key_env`; a placeholder key for local servers) or `"hf"` (a hub id or local
    folder; `device`, `dtype`). `backend_instance` reuses an already built backend.
    prompt: a bundled template id or a `.md` file (see `llmseg.stage1.prompts`).
    max_retries: per request for transport errors, and per class for unusable answers.
    cache_path: the jsonlines log that makes reruns resume; None keeps answers in memory only.
    refresh: ignore cached answers (new ones are still logged).
    other_classes: put the dataset's other class names into the prompt ({other_classes}).
    structured: ask for json_schema structured output where the backend supports it.
    batch: send every class's first request as one OpenAI Batch API job (`llmseg.stage1.batch`;
    openai backend only), then parse, validate and repair as usual. `batch_options`: polling and prices.
    gguf_file: hf backend: load this GGUF file (a path, or a name inside the `model` folder or hub repo).
    allow_shared: accept subclasses given for several classes; by default those classes are asked
    again naming the clash (CLASH_ROUNDS times), then GenerationError names them.
    repair_temperature: sample repair turns (re-asks after an unusable or clashing answer) at this
    temperature, seeded per try; None: the same sampling as the first answer.
    max_answer_chars: an answer longer than this is an unusable answer (re-asked, naming the cap);
    its text is not stored, only its size.

    Raises GenerationError naming every class without a usable answer (the others stay cached),
    FatalBackendError when the backend cannot work at all (bad key, unknown model), ValueError
    for bad arguments.
    """
    names = [str(c) for c in classes]
    if not names:
        raise ConfigError("no classes to generate subclasses for")
    duplicates = sorted({c for c in names if names.count(c) > 1})
    if duplicates:
        raise ConfigError(f"duplicate class names: {', '.join(duplicates)}")
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    if concurrency < 1 or max_retries < 0:
        raise ConfigError("concurrency must be >= 1 and max_retries >= 0")
    if max_answer_chars < 1:
        raise ConfigError(f"max_answer_chars must be at least 1, got {max_answer_chars}")
    template = prompt if isinstance(prompt, PromptTemplate) else load_prompt(prompt)
    sampling = Sampling(temperature=temperature, seed=seed, max_tokens=max_tokens)
    own_backend = backend_instance is None
    engine = backend_instance or make_backend(
        backend, model, base_url=base_url, api_key=api_key, api_key_env=api_key_env, timeout=timeout, device=device, dtype=dtype, gguf_file=gguf_file
    )
    if engine.max_concurrency:
        concurrency = min(concurrency, engine.max_concurrency)
    cache = AnswerCache(cache_path)
    run = _Run(
        classes=names,
        backend=engine,
        template=template,
        k=k,
        sampling=sampling,
        cache=cache,
        refresh=refresh,
        max_retries=max_retries,
        backoff=backoff or Backoff(),
        limiter=RateLimiter(rpm),
        domain=domain or "natural photographs",
        other_classes=other_classes,
        structured=structured,
        repair_temperature=repair_temperature,
        max_answer_chars=max_answer_chars,
    )
    started = time.monotonic()
    batch_report = None
    try:
        if batch:
            batch_report = prefill_from_batch(run, names, batch_options)
            run.stats.add(prompt_tokens=batch_report.prompt_tokens, completion_tokens=batch_report.completion_tokens)
        outcomes = _run_all(run, names, concurrency, progress)
        clashes = {} if allow_shared else _resolve_clashes(run, outcomes, concurrency)
    finally:
        run.stats.wall_s = time.monotonic() - started
        if own_backend:
            engine.close()
    failed = {name: outcomes[name].reason or "no answer" for name in names if outcomes[name].subclasses is None}
    if failed:
        raise GenerationError(failed, total=len(names), cache_path=cache_path, aborted=run.abort_reason)
    if clashes:
        shared = "; ".join(f"'{name}' given for {', '.join(repr(c) for c in classes)}" for name, classes in clashes.items())
        involved = sorted({c for classes in clashes.values() for c in classes}, key=names.index)
        raise GenerationError(
            {c: f"shares subclasses with other classes after {CLASH_ROUNDS} re-asks" for c in involved},
            total=len(names), cache_path=cache_path,
            aborted=f"subclasses shared by several classes cannot separate them: {shared}; is the model a real "
                    "LLM (a mock or echo model answers every class alike)?",
        )

    # every class has its subclasses here (the others raised above); the test only narrows the type
    label_set = LabelSet({name: found for name in names if (found := outcomes[name].subclasses) is not None})
    if include_class_name:
        label_set = label_set.with_class_names()
    report = validate_label_set(label_set.root, names, source="generated label set")
    if report.errors:  # cannot happen with a correct parser; fail loudly rather than write a bad file
        raise RuntimeError("generated label set is invalid:\n" + "\n".join(str(e) for e in report.errors))
    meta = LabelSetMeta(
        generator=engine.name,
        model=engine.model,
        dataset=dataset_name,
        prompt_id=template.id,
        prompt_sha256=template.sha256,
        k=k,
        sampling=sampling.as_dict(),
        per_class_attempts={name: outcomes[name].answers for name in names},
        backend=engine.describe(),  # after the run: includes what was learnt (adaptations)
        prompt_version=template.version,
        prompt_path=str(template.path) if template.path else None,
        include_class_name=include_class_name,
        other_classes_in_prompt=other_classes,
        domain=run.domain,
        structured_output="json_schema" if run.structured else "text",
        system_fingerprints=sorted(run.fingerprints),
        max_retries=max_retries,
        repair_temperature=repair_temperature,
        stats=run.stats.as_dict(),
        cache=str(cache_path) if cache_path else None,
        warnings=[str(issue) for issue in report.warnings],
        **({"batch": batch_report.as_dict()} if batch_report is not None else {}),
    )
    return label_set, meta


def _resolve_clashes(run: _Run, outcomes: dict[str, _Outcome], concurrency: int) -> dict[str, list[str]]:
    """Re-ask (up to CLASH_ROUNDS times) the classes that share a subclass; the clashes left (empty = none)."""
    def current() -> dict[str, list[str]]:
        if any(o.subclasses is None for o in outcomes.values()):
            return {}  # some classes failed: that is reported first
        return find_clashes({name: list(o.subclasses or []) for name, o in outcomes.items()})

    clashes = current()
    for _ in range(CLASH_ROUNDS):
        if not clashes or run.abort.is_set():
            break
        involved = sorted({c for classes in clashes.values() for c in classes}, key=run.classes.index)
        log.warning("stage one: %d subclasses are shared by several classes; asking %s again",
                    len(clashes), ", ".join(involved))
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="stage1-clash") as pool:
            futures = {c: pool.submit(run.repair_clash, c, outcomes[c], clashes) for c in involved}
            repaired = {c: future.result() for c, future in futures.items()}
        outcomes.update(repaired)
        clashes = current()
    return clashes


def _run_all(run: _Run, names: list[str], concurrency: int, progress: bool) -> dict[str, _Outcome]:
    from tqdm.auto import tqdm

    outcomes: dict[str, _Outcome] = {}
    bar = tqdm(total=len(names), desc="subclasses", unit="class", disable=not progress, dynamic_ncols=True)
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="stage1")
    try:
        futures = {pool.submit(run.solve, name): name for name in names}
        for future in as_completed(futures):
            name = futures[future]
            outcome = future.result()
            outcomes[name] = outcome
            if outcome.subclasses is None:
                run.stats.add(failed=1)
            bar.update(1)
            bar.set_postfix(retries=run.stats.retries, reasks=run.stats.reasks, failed=run.stats.failed, cached=run.stats.cached)
    except BaseException:
        run._abort("interrupted")
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        bar.close()
    pool.shutdown(wait=True)
    return outcomes
