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
import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from llmseg.errors import ConfigError, LlmsegError
from llmseg.labelset import LabelSet, LabelSetMeta, validate_label_set

from .backends import Backend, Sampling, make_backend
from .batch import BatchOptions, prefill_from_batch
from .cache import AnswerCache
from .prompts import DEFAULT_PROMPT, PromptTemplate, load_prompt
from .session import (
    DEFAULT_MAX_ANSWER_CHARS,
    STOPPED,
    Backoff,
    Outcome,
    RateLimiter,
    RunStats,
    Session,
    find_clashes,
)

__all__ = [  # Backoff, RateLimiter, RunStats and find_clashes live in `session`; callers have always found them here
    "CLASH_ROUNDS", "DEFAULT_MAX_ANSWER_CHARS", "Backoff", "GenerationError", "RateLimiter", "RunStats",
    "find_clashes", "generate_label_set", "model_slug",
]

log = logging.getLogger(__name__)


class GenerationError(LlmsegError, RuntimeError):
    """Some classes never got a usable answer; `failed` maps each to the reason. The rest is in the cache."""

    def __init__(self, failed: dict[str, str], *, total: int, cache_path: Path | None, aborted: str | None = None):
        self.failed = failed
        self.total = total
        self.cache_path = cache_path
        self.aborted = aborted
        lines = [f"stage one failed for {len(failed)} of {total} classes:"]
        stopped = [name for name, reason in failed.items() if reason.startswith(STOPPED)]
        lines += [f"  - '{name}': {reason}" for name, reason in failed.items() if name not in stopped]
        if aborted:
            lines.append(f"  the run stopped: {aborted}")
        if stopped:
            lines.append(f"  {len(stopped)} classes not finished because the run stopped: " + ", ".join(f"'{n}'" for n in stopped))
        if cache_path is not None and total > len(failed):
            lines.append(f"the {total - len(failed)} usable answers are saved in {cache_path}; rerun the same command to resume")
        super().__init__("\n".join(lines))


CLASH_ROUNDS = 2  # re-asks of the classes that share a subclass before the run fails naming them


def model_slug(model: str) -> str:
    """A short file-name-safe form of a model name: `Qwen/Qwen2.5-7B-Instruct` -> `qwen2.5-7b-instruct`."""
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
    run = Session(
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


def _resolve_clashes(run: Session, outcomes: dict[str, Outcome], concurrency: int) -> dict[str, list[str]]:
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


def _run_all(run: Session, names: list[str], concurrency: int, progress: bool) -> dict[str, Outcome]:
    from tqdm.auto import tqdm  # start-up time: importing generate (the CLI's --help) does not pay for tqdm

    outcomes: dict[str, Outcome] = {}
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
        run.stop("interrupted")
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        bar.close()
    pool.shutdown(wait=True)
    return outcomes
