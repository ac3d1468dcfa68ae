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
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmseg.errors import ConfigError, LlmsegError
from llmseg.labelset import LabelSet, LabelSetMeta, validate_label_set

from .answers import DEFAULT_MAX_ANSWER_CHARS
from .backends import Backend, Sampling, make_backend
from .batch import BatchOptions, BatchReport, prefill_from_batch
from .cache import AnswerCache
from .conversation import STOPPED, Outcome, find_clashes, repair_clash, solve
from .pacing import Backoff, RateLimiter
from .prompts import DEFAULT_PROMPT, PromptTemplate, load_prompt
from .session import RunStats, Session

__all__ = [  # Backoff, RateLimiter, RunStats, find_clashes live in `pacing`, `session`, `conversation`; re-exported here
    "CLASH_ROUNDS", "DEFAULT_MAX_ANSWER_CHARS", "Backoff", "GenerateSettings", "GenerationError", "RateLimiter", "RunStats",
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


def _cli(**options: Any) -> dict[str, Any]:
    """A field's command-line extras (see `llmseg.stage1.options`)."""
    return {"cli": options}


NOT_ON_CLI: dict[str, Any] = {"cli": False}  # a Python object or a value the command computes itself


class GenerateSettings(BaseModel):
    """How `generate_label_set` asks: backend, sampling, retries, cache, output options.

    Each field's description is also its `llmseg subclasses generate` help (the options are made
    from these fields, `llmseg.stage1.options`); a new setting is one field here plus the code
    that reads it. Bounds are checked when the settings are built: a bad value is a ConfigError
    naming the field.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=True)

    k: int = Field(5, ge=1, description="Subclasses per class.")
    backend: str = Field("openai", description="openai (any OpenAI-compatible server), hf (local transformers model) or another name registered in llmseg.stage1.backends.BACKENDS.")
    model: str | None = Field(None, description="Model name (openai; default gpt-4o-mini) or hub id / local folder (hf).")
    base_url: str | None = Field(None, description="OpenAI-compatible server URL, e.g. http://localhost:8000/v1 (default: $OPENAI_BASE_URL or OpenAI).")
    api_key_env: str = Field("OPENAI_API_KEY", description="Name of the environment variable holding the API key.")
    api_key: str | None = Field(None, description="The API key itself (discouraged: it lands in your shell history; prefer --api-key-env).")
    prompt: str | Path | PromptTemplate = Field(DEFAULT_PROMPT, description="Prompt template: a bundled id (subclasses.visual.v1, subclasses.chils.v1) or a .md file.")
    domain: str | None = Field(None, description="Image domain for the prompt (default: the dataset's, e.g. 'natural photographs').")
    other_classes: bool = Field(True, description="Name the dataset's other classes in the prompt so the LLM avoids them.",
                                json_schema_extra=_cli(decls=("--other-classes/--no-other-classes",)))
    concurrency: int = Field(8, ge=1, description="Requests in flight at once.")
    rpm: float | None = Field(None, description="Client-side limit on requests per minute.")
    max_retries: int = Field(5, ge=0, description="Retries per request (429/5xx/timeouts) and re-asks per class (unusable answers).")
    timeout: float = Field(60.0, description="Seconds before a request times out (then it is retried).")
    temperature: float = Field(0.0, description="Sampling temperature (0 = greedy, the default).")
    repair_temperature: float | None = Field(None, description="Sample re-asks (after an unusable or clashing answer) at this temperature, seeded per try; a greedy model otherwise tends to repeat its rejected answer.")
    seed: int | None = Field(0, description="Sampling seed sent with every request.")
    max_tokens: int = Field(512, description="Answer token limit.")
    max_answer_chars: int = Field(DEFAULT_MAX_ANSWER_CHARS, ge=1, description="An answer longer than this many characters is unusable (asked again, naming the cap) and is not stored.",
                                  json_schema_extra=_cli(min=None))  # no range on the command line: the ConfigError names the field
    include_class_name: bool = Field(False, description="Also list each class name among its own subclasses (added after the LLM answers).",
                                     json_schema_extra=_cli(decls=("--include-class-name/--no-include-class-name",)))
    allow_shared: bool = Field(False, description="Accept a subclass given for several classes (by default those classes are asked again, then the run fails naming them).",
                               json_schema_extra=_cli(decls=("--allow-shared-subclasses/--no-allow-shared-subclasses",)))
    structured: bool = Field(True, description="Ask for json_schema structured output (falls back to JSON in text if the server refuses).",
                             json_schema_extra=_cli(decls=("--structured/--no-structured",)))
    device: str | None = Field(None, description="hf: torch device (default cuda if available, else cpu).")
    dtype: str = Field("auto", description="hf: auto, float32, float16 or bfloat16.")
    refresh: bool = Field(False, description="Ignore cached answers and ask again (new answers are still logged).",
                          json_schema_extra=_cli(decls=("--refresh",)))
    batch: bool = Field(False, description="openai: send every class's first request as one Batch API job (cheaper for large vocabularies; resumable by the batch id in the cache); failed answers are repaired one by one.",
                        json_schema_extra=_cli(decls=("--batch",)))
    gguf_file: str | None = Field(None, description="hf: load this GGUF file (a path, or a file name inside --model's folder or hub repo; needs the gguf package).")
    # Python API only: the command fills these from its own options (--cache, --quiet, --backoff-base, --batch-*)
    cache_path: Path | None = Field(None, description="The jsonlines log that makes reruns resume; None keeps answers in memory only.", json_schema_extra=NOT_ON_CLI)
    dataset_name: str | None = Field(None, description="The dataset's name, recorded in the sidecar.", json_schema_extra=NOT_ON_CLI)
    backoff: Backoff | None = Field(None, description="Retry backoff (None: Backoff()).", json_schema_extra=NOT_ON_CLI)
    progress: bool = Field(True, description="Show a progress bar.", json_schema_extra=NOT_ON_CLI)
    # Any: Backend is a typing.Protocol, which pydantic cannot check with isinstance
    backend_instance: Any = Field(None, description="An already built backend to reuse (not closed afterwards); None: build one.", json_schema_extra=NOT_ON_CLI)
    batch_options: BatchOptions | None = Field(None, description="--batch: polling and prices.", json_schema_extra=NOT_ON_CLI)

    @classmethod
    def build(cls, settings: GenerateSettings | None = None, **overrides: Any) -> GenerateSettings:
        """`settings` (or the defaults) with `overrides` applied, validated: a ConfigError names an unknown or bad field."""
        values = {**(dict(settings) if settings is not None else {}), **overrides}
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise ConfigError("; ".join(_describe(error) for error in exc.errors())) from None


def _describe(error: Any) -> str:
    """One pydantic error as the message a ConfigError gives: `k must be at least 1, got 0`."""
    name = ".".join(str(part) for part in error["loc"]) or "settings"
    if error["type"] == "extra_forbidden":
        return f"unknown setting '{name}' (see GenerateSettings for the settings there are)"
    if error["type"] == "greater_than_equal":
        return f"{name} must be at least {error['ctx']['ge']}, got {error['input']!r}"
    return f"{name}: {error['msg']}, got {error['input']!r}"


def generate_label_set(
    classes: Sequence[str], settings: GenerateSettings | None = None, **overrides: Any
) -> tuple[LabelSet, LabelSetMeta]:
    """Ask the LLM for exactly `k` subclasses of every class; return the label set and its provenance.

    settings: a `GenerateSettings` (every field has its description there); keyword `overrides`
    are its fields by name, applied on top (`generate_label_set(classes, backend="openai",
    model="gpt-4o-mini", k=5)`). The main ones:
    backend/model: `"openai"` (any OpenAI-compatible server: `base_url`, `api_key` or the env var
    named by `api_key_env`; a placeholder key for local servers; model default gpt-4o-mini) or
    `"hf"` (a hub id or local folder; `device`, `dtype`). `backend_instance` reuses an already built backend.
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
    FatalBackendError when the backend cannot work at all (bad key, unknown model), ConfigError
    for bad arguments (naming the setting).
    """
    names = _class_names(classes)
    s = GenerateSettings.build(settings, **overrides)
    template = s.prompt if isinstance(s.prompt, PromptTemplate) else load_prompt(s.prompt)
    engine: Backend = s.backend_instance or _make_backend(s)
    try:
        run = _session(names, s, template, engine)
        outcomes, clashes, batch_report = _ask_all(run, names, s, engine)
    finally:
        if s.backend_instance is None:
            engine.close()
    _raise_if_failed(names, outcomes, clashes, s.cache_path, run.abort_reason)
    # every class has its subclasses here (the others raised above); the test only narrows the type
    label_set = LabelSet({name: found for name in names if (found := outcomes[name].subclasses) is not None})
    if s.include_class_name:
        label_set = label_set.with_class_names()
    report = validate_label_set(label_set.root, names, source="generated label set")
    if report.errors:  # cannot happen with a correct parser; fail loudly rather than write a bad file
        raise RuntimeError("generated label set is invalid:\n" + "\n".join(str(e) for e in report.errors))
    meta = _provenance(s, run, engine, outcomes, batch_report, warnings=[str(issue) for issue in report.warnings])
    return label_set, meta


def _class_names(classes: Sequence[str]) -> list[str]:
    """The class names as strings; a ConfigError when there are none or one is given twice."""
    names = [str(c) for c in classes]
    if not names:
        raise ConfigError("no classes to generate subclasses for")
    duplicates = sorted({c for c in names if names.count(c) > 1})
    if duplicates:
        raise ConfigError(f"duplicate class names: {', '.join(duplicates)}")
    return names


def _make_backend(s: GenerateSettings) -> Backend:
    """The backend the settings name (model default: gpt-4o-mini; the hf backend needs one)."""
    model = s.model or ("gpt-4o-mini" if s.backend != "hf" else None)
    if model is None:
        raise ConfigError("the hf backend needs a model (a hub id or a local folder)")
    return make_backend(
        s.backend, model, base_url=s.base_url, api_key=s.api_key, api_key_env=s.api_key_env, timeout=s.timeout,
        device=s.device, dtype=s.dtype, gguf_file=s.gguf_file,
    )


def _session(names: list[str], s: GenerateSettings, template: PromptTemplate, engine: Backend) -> Session:
    """The run's shared state for these settings (the cache opened, the limiter and backoff made)."""
    return Session(
        classes=names,
        backend=engine,
        template=template,
        k=s.k,
        sampling=Sampling(temperature=s.temperature, seed=s.seed, max_tokens=s.max_tokens),
        cache=AnswerCache(s.cache_path),
        refresh=s.refresh,
        max_retries=s.max_retries,
        backoff=s.backoff or Backoff(),
        limiter=RateLimiter(s.rpm),
        domain=s.domain or "natural photographs",
        other_classes=s.other_classes,
        structured=s.structured,
        repair_temperature=s.repair_temperature,
        max_answer_chars=s.max_answer_chars,
    )


def _ask_all(
    run: Session, names: list[str], s: GenerateSettings, engine: Backend
) -> tuple[dict[str, Outcome], dict[str, list[str]], BatchReport | None]:
    """Every class asked (the batch first when asked for), then clashes re-asked: (outcomes, clashes left, batch report)."""
    concurrency = min(s.concurrency, engine.max_concurrency) if engine.max_concurrency else s.concurrency
    started = time.monotonic()
    batch_report = None
    try:
        if s.batch:
            batch_report = prefill_from_batch(run, names, s.batch_options)
            run.stats.add(prompt_tokens=batch_report.prompt_tokens, completion_tokens=batch_report.completion_tokens)
        outcomes = _run_all(run, names, concurrency, s.progress)
        clashes = {} if s.allow_shared else _resolve_clashes(run, outcomes, concurrency)
    finally:
        run.stats.wall_s = time.monotonic() - started
    return outcomes, clashes, batch_report


def _raise_if_failed(
    names: list[str], outcomes: dict[str, Outcome], clashes: dict[str, list[str]], cache_path: Path | None, aborted: str | None
) -> None:
    """GenerationError naming every class without a usable answer, else every class still sharing subclasses."""
    failed = {name: outcomes[name].reason or "no answer" for name in names if outcomes[name].subclasses is None}
    if failed:
        raise GenerationError(failed, total=len(names), cache_path=cache_path, aborted=aborted)
    if clashes:
        shared = "; ".join(f"'{name}' given for {', '.join(repr(c) for c in classes)}" for name, classes in clashes.items())
        involved = sorted({c for classes in clashes.values() for c in classes}, key=names.index)
        raise GenerationError(
            {c: f"shares subclasses with other classes after {CLASH_ROUNDS} re-asks" for c in involved},
            total=len(names), cache_path=cache_path,
            aborted=f"subclasses shared by several classes cannot separate them: {shared}; is the model a real "
                    "LLM (a mock or echo model answers every class alike)?",
        )


def _provenance(
    s: GenerateSettings, run: Session, engine: Backend, outcomes: dict[str, Outcome], batch_report: BatchReport | None,
    warnings: list[str],
) -> LabelSetMeta:
    """The sidecar: what asked, with which prompt and sampling, how many tries per class, and the run's counters."""
    template = run.template
    return LabelSetMeta(
        generator=engine.name,
        model=engine.model,
        dataset=s.dataset_name,
        prompt_id=template.id,
        prompt_sha256=template.sha256,
        k=s.k,
        sampling=run.sampling.as_dict(),
        per_class_attempts={name: outcomes[name].answers for name in run.classes},
        backend=engine.describe(),  # after the run: includes what was learnt (adaptations)
        prompt_version=template.version,
        prompt_path=str(template.path) if template.path else None,
        include_class_name=s.include_class_name,
        other_classes_in_prompt=s.other_classes,
        domain=run.domain,
        structured_output="json_schema" if run.structured else "text",
        system_fingerprints=sorted(run.fingerprints),
        max_retries=s.max_retries,
        repair_temperature=s.repair_temperature,
        stats=run.stats.as_dict(),
        cache=str(s.cache_path) if s.cache_path else None,
        warnings=warnings,
        **({"batch": batch_report.as_dict()} if batch_report is not None else {}),
    )


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
            futures = {c: pool.submit(repair_clash, run, c, outcomes[c], clashes) for c in involved}
            repaired = {c: future.result() for c, future in futures.items()}
        outcomes.update(repaired)
        clashes = current()
    return clashes


def _run_all(run: Session, names: list[str], concurrency: int, progress: bool) -> dict[str, Outcome]:
    # lazy import: start-up time (importing generate, as `llmseg --help` does, does not pay for tqdm)
    from tqdm.auto import tqdm

    outcomes: dict[str, Outcome] = {}
    bar = tqdm(total=len(names), desc="subclasses", unit="class", disable=not progress, dynamic_ncols=True)
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="stage1")
    try:
        futures = {pool.submit(solve, run, name): name for name in names}
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
