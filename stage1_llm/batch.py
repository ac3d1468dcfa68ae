"""Stage one for large vocabularies: every class's first request in one OpenAI Batch API job.

`prefill_from_batch(run, names, ...)` sends the first request of every class whose answer is not
in the cache as one batch (a jsonl of chat-completion requests, `custom_id` = the class's index,
uploaded with `files.create(purpose="batch")`, then `batches.create(endpoint=
"/v1/chat/completions", completion_window="24h")`), polls `batches.retrieve` at a bounded
interval up to a timeout, downloads the output (and error) file and logs every answer in the
cache under the very key the per-class loop looks up. The ordinary loop then runs: batch
answers are replayed from the cache and go through the same parsing, validation and repair
turn; classes whose batch line failed are simply asked one by one.

Resumable: the batch id is logged (a `batch_submitted` note keyed by a hash of the requests)
before the first poll, so a rerun after a kill polls the same batch instead of paying for a
new one; a `batch_collected` note marks a batch whose output is already in the cache.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmseg.errors import LlmsegError
from llmseg.io import stable_hash

from .session import Session

DONE = ("completed", "failed", "expired", "cancelled")


class BatchError(LlmsegError, RuntimeError):
    """The batch could not be submitted, failed, or did not finish in time (its id is in the cache)."""


@dataclass(frozen=True)
class BatchOptions:
    """How to run the batch: poll every `poll_interval` s (doubling up to `max_interval`) for at most `timeout` s.

    prices: optional USD per million (prompt, completion) tokens, for the cost line of the summary.
    """

    poll_interval: float = 10.0
    max_interval: float = 300.0
    timeout: float = 24 * 3600.0
    completion_window: str = "24h"
    prices: tuple[float, float] | None = None


@dataclass
class BatchReport:
    """What the batch did: its id, how many lines came back usable or failed, the tokens and cost."""

    batch_id: str | None = None
    submitted: int = 0
    answered: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    resumed: bool = False
    polls: int = 0
    cost_usd: float | None = None
    bad_lines: list[str] = field(default_factory=list)  # "output file line 3: not JSON", one per unusable line

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def summary(self) -> str:
        cost = f", ${self.cost_usd:.4f}" if self.cost_usd is not None else ""
        again = " (resumed)" if self.resumed else ""
        bad = f"; {len(self.bad_lines)} unusable output lines: " + "; ".join(self.bad_lines[:5]) if self.bad_lines else ""
        more = f" (and {len(self.bad_lines) - 5} more)" if len(self.bad_lines) > 5 else ""
        return (
            f"batch {self.batch_id}{again}: {self.submitted} requests, {self.answered} answered, {len(self.failed)} failed "
            f"(asked one by one), {self.prompt_tokens} prompt + {self.completion_tokens} completion tokens{cost}{bad}{more}"
        )


def cost_usd(prompt_tokens: int, completion_tokens: int, prices: tuple[float, float] | None) -> float | None:
    """USD for these tokens at `prices` = (per million prompt tokens, per million completion tokens)."""
    if prices is None:
        return None
    return prompt_tokens * prices[0] / 1e6 + completion_tokens * prices[1] / 1e6


def _first_requests(run: Session, names: list[str]) -> list[tuple[str, list[dict[str, str]], str]]:
    """(class, first-turn messages, cache key) of every class; the key is what `Session.ask` looks up first."""
    requests = []
    for name in names:
        messages = run.first_messages(name)
        requests.append((name, messages, run.key(messages, run.structured)))
    return requests


def prefill_from_batch(run: Session, names: list[str], options: BatchOptions | None = None) -> BatchReport:
    """Put every uncached class's first answer into `run.cache` through one Batch API job."""
    options = options or BatchOptions()
    client = getattr(run.backend, "client", None)
    build = getattr(run.backend, "request_body", None)
    if client is None or build is None or not hasattr(client, "batches"):
        raise BatchError(f"--batch needs the openai backend (an OpenAI-compatible server with the Batch API), not '{run.backend.name}'")
    requests = _first_requests(run, names)
    batch_key = stable_hash([key for _, _, key in requests])
    report = BatchReport()
    if run.refresh:
        raise BatchError("--batch cannot be combined with --refresh: give a new --cache file instead")
    if run.cache.notes(event="batch_collected", batch_key=batch_key):
        return report  # already downloaded: its answers are in the cache
    pending = [(i, r) for i, r in enumerate(requests) if run.cache.get(r[2]) is None]
    ended = {n.get("batch_id") for n in run.cache.notes(event="batch_ended", batch_key=batch_key)}
    submitted = [n for n in run.cache.notes(event="batch_submitted", batch_key=batch_key) if n.get("batch_id") not in ended]
    if not pending and not submitted:
        return report
    if submitted:
        note = submitted[-1]
        report.batch_id, report.resumed, report.submitted = note["batch_id"], True, int(note.get("requests", 0))
        by_id = {str(i): r for i, r in enumerate(requests)}
    else:
        by_id = {str(i): r for i, r in pending}
        report.batch_id = _submit(run, client, build, pending, batch_key, options)
        report.submitted = len(pending)
    batch = _wait(run, client, report, options)
    if batch.status != "completed":  # expired, cancelled, failed: keep every line it did answer
        _collect(run, client, batch, by_id, report)
        run.cache.append({"kind": "note", "event": "batch_ended", "batch_key": batch_key, "batch_id": report.batch_id,
                          "status": batch.status, **_counts(report)})
        errors = getattr(batch, "errors", None)
        missing = sum(1 for _, _, key in by_id.values() if run.cache.get(key) is None)
        raise BatchError(
            f"batch {report.batch_id} ended with status '{batch.status}'{f': {errors}' if errors else ''}; "
            f"{report.answered} answers it gave are kept in the cache; rerun the same command to submit a new batch "
            f"for the other {missing}, or drop --batch to ask them class by class"
            + (f"; unusable output lines: {'; '.join(report.bad_lines[:5])}" if report.bad_lines else "")
        )
    _collect(run, client, batch, by_id, report)
    report.cost_usd = cost_usd(report.prompt_tokens, report.completion_tokens, options.prices)
    run.cache.append({"kind": "note", "event": "batch_collected", "batch_key": batch_key, "batch_id": report.batch_id, **_counts(report)})
    return report


def _counts(report: BatchReport) -> dict[str, Any]:
    return {
        "answered": report.answered,
        "failed": len(report.failed),
        "prompt_tokens": report.prompt_tokens,
        "completion_tokens": report.completion_tokens,
    }


class DeadlinePassed(Exception):
    """A Batch API call whose answer did not arrive in full within `--timeout` seconds."""


def _bounded(run: Session, client: Any, call: Callable[[Any], Any]) -> Any:
    """`call(client)` for a small JSON answer (create, retrieve), bounded like a chat request: `--timeout` s in all.

    Why: the SDK's timeout bounds each read only, so a server trickling bytes would hold a poll forever.
    File uploads and downloads keep the SDK's per-read timeout: their size, not the server, sets how long they take.
    """
    within = getattr(run.backend, "within_deadline", None)
    if within is None:
        return call(client)
    expired = threading.Event()
    try:
        return within(call, expired)
    except Exception as exc:
        if expired.is_set():
            raise DeadlinePassed(f"no complete answer within {getattr(run.backend, 'timeout', 0):g} s") from exc
        raise


def _submit(run: Session, client: Any, build: Any, pending: list, batch_key: str, options: BatchOptions) -> str:
    import openai  # lazy import: start-up time (openai takes ~0.6 s to import; only --batch needs it, and `import llmseg.cli` loads this module)

    schema = run.schema if run.structured else None
    lines = []
    for index, (_, messages, _) in pending:
        body = build(messages, schema, run.sampling)
        lines.append(json.dumps({"custom_id": str(index), "method": "POST", "url": "/v1/chat/completions", "body": body}, ensure_ascii=False))
    data = ("\n".join(lines) + "\n").encode("utf-8")
    try:
        uploaded = client.files.create(file=("stage1_batch.jsonl", io.BytesIO(data)), purpose="batch")
        batch = _bounded(run, client, lambda c: c.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window=options.completion_window))
    except (openai.APIError, DeadlinePassed) as exc:
        raise BatchError(f"could not submit the batch: {run.redact(str(exc))}") from exc
    run.cache.append(
        {
            "kind": "note",
            "event": "batch_submitted",
            "batch_key": batch_key,
            "batch_id": batch.id,
            "input_file_id": uploaded.id,
            "requests": len(lines),
            "backend": run.backend.name,
            "model": run.backend.model,
            "base_url": run.base_url,
        }
    )
    return str(batch.id)


def _wait(run: Session, client: Any, report: BatchReport, options: BatchOptions) -> Any:
    import openai  # lazy import: start-up time (openai takes ~0.6 s to import; only --batch needs it, and `import llmseg.cli` loads this module)

    deadline = time.monotonic() + options.timeout
    interval = options.poll_interval
    failures = 0
    while True:
        try:
            batch = _bounded(run, client, lambda c: c.batches.retrieve(report.batch_id))
            failures = 0
        except (openai.APIConnectionError, openai.APITimeoutError, openai.InternalServerError, openai.RateLimitError,
                DeadlinePassed) as exc:
            failures += 1
            if failures > run.max_retries:
                raise BatchError(f"batch {report.batch_id}: polling failed {failures} times: {run.redact(str(exc))}; rerun to resume") from exc
            batch = None
        except openai.APIError as exc:
            raise BatchError(f"batch {report.batch_id}: {run.redact(str(exc))}") from exc
        report.polls += 1
        if batch is not None and batch.status in DONE:
            return batch
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            status = batch.status if batch is not None else "unknown"
            raise BatchError(
                f"batch {report.batch_id} still '{status}' after {options.timeout:g} s; its id is in the cache: rerun the same command to resume waiting"
            )
        if run.abort.wait(min(interval, remaining)):
            raise BatchError(f"batch {report.batch_id}: interrupted; rerun the same command to resume waiting")
        interval = min(options.max_interval, interval * 2)


def _lines(run: Session, client: Any, file_id: str | None, which: str) -> list[tuple[str, Any]]:
    """(where, parsed JSON or None) of each non-empty line of a batch output or error file.

    Each line is decoded on its own, so one line that is not UTF-8 JSON (or is cut short at the
    end) spoils only itself; `where` ("output file line 3") names it in the report.
    """
    import openai  # lazy import: start-up time (openai takes ~0.6 s to import; only --batch needs it, and `import llmseg.cli` loads this module)

    if not file_id:
        return []
    try:
        content = client.files.content(file_id)
        data = content.content if isinstance(getattr(content, "content", None), bytes) else str(content.text).encode("utf-8")
    except openai.APIError as exc:
        raise BatchError(f"could not download the batch's {which} file {file_id}: {run.redact(str(exc))}; rerun to try again") from exc
    lines = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            value = None
        lines.append((f"{which} file line {number}", value))
    return lines


@dataclass
class _Line:
    """One output line, checked: the answer text and its metadata, or why it cannot be used."""

    custom_id: str | None
    problem: str | None = None  # the line's shape is wrong (reported as a bad line)
    error: str | None = None  # a well-formed line saying the request failed (HTTP status, batch_expired)
    status: Any = None
    text: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


def _check(value: Any) -> _Line:
    """What one parsed output line says, with every field's type checked (a hostile file gives a problem, not a crash)."""
    if not isinstance(value, dict):
        return _Line(None, "not a JSON object")
    custom_id = value.get("custom_id")
    custom_id = str(custom_id) if isinstance(custom_id, (str, int)) and not isinstance(custom_id, bool) else None
    if custom_id is None:
        return _Line(None, "no custom_id")
    response, error = value.get("response"), value.get("error")
    if response is not None and not isinstance(response, dict):
        return _Line(custom_id, f"'response' is {type(response).__name__}, not an object")
    response = response or {}
    body, status = response.get("body"), response.get("status_code")
    if body is not None and not isinstance(body, dict):
        return _Line(custom_id, f"'response.body' is {type(body).__name__}, not an object", status=status)
    body = body or {}
    choices = body.get("choices")
    if error or status != 200 or not choices:
        message = error or body.get("error") or {"message": "no choices"}
        message = message.get("message") if isinstance(message, dict) else message
        return _Line(custom_id, error=f"HTTP {status}: {message}" if status is not None else str(message), status=status)
    choice = choices[0] if isinstance(choices, list) else None
    message = choice.get("message") if isinstance(choice, dict) else None
    text = message.get("content") if isinstance(message, dict) else None
    if not isinstance(text, (str, type(None))) or not isinstance(message, dict):
        return _Line(custom_id, "'choices[0].message.content' is not a string", status=status)
    assert isinstance(choice, dict)  # message is a dict, so the choice holding it was one
    usage = found if isinstance(found := body.get("usage"), dict) else {}
    fingerprint = body.get("system_fingerprint") if isinstance(body.get("system_fingerprint"), str) else None
    meta = {
        "finish_reason": choice.get("finish_reason") if isinstance(choice.get("finish_reason"), str) else None,
        "request_id": response.get("request_id") if isinstance(response.get("request_id"), str) else None,
        "system_fingerprint": fingerprint,
        "model": body.get("model") if isinstance(body.get("model"), str) else None,
        "usage": {k: v for k, v in usage.items() if k in ("prompt_tokens", "completion_tokens", "total_tokens") and type(v) is int and v >= 0},
        "response_id": body.get("id") if isinstance(body.get("id"), str) else None,
    }
    return _Line(custom_id, status=status, text=text or "", meta=meta)


def _collect(run: Session, client: Any, batch: Any, by_id: dict[str, tuple], report: BatchReport) -> None:
    """Log every usable output line as an answer record (the per-class loop replays them).

    A line that cannot be used is named in `report.bad_lines`; its class (when the line says
    which) is simply asked one by one later, like a class whose request failed in the batch.
    """
    answered: set[str] = set()
    failures: dict[str, str] = {}
    lines = _lines(run, client, batch.output_file_id, "output") + _lines(run, client, getattr(batch, "error_file_id", None), "error")
    for where, value in lines:
        line = _check(value) if value is not None else _Line(None, "not JSON (cut short?)")
        if line.custom_id is not None and line.custom_id not in by_id:
            line.problem = line.problem or f"unknown custom_id {line.custom_id[:40]!r}"
        if line.problem is not None:
            report.bad_lines.append(f"{where}: {line.problem}")
            if line.custom_id in by_id:
                failures.setdefault(line.custom_id, f"{where}: {line.problem}")
            continue
        custom_id = line.custom_id
        assert custom_id is not None  # _check names a problem for every line without one
        if custom_id in answered:
            continue
        name, messages, key = by_id[custom_id]
        if line.error is not None:
            failures.setdefault(custom_id, line.error)
            run.cache.append({"kind": "error", "class": name, "answer": 0, "status": line.status,
                              "error": run.redact(line.error), "batch_id": report.batch_id})
            continue
        answered.add(custom_id)
        usage = line.meta["usage"]
        report.prompt_tokens += usage.get("prompt_tokens", 0)
        report.completion_tokens += usage.get("completion_tokens", 0)
        if line.meta["system_fingerprint"]:
            run.note_fingerprint(line.meta["system_fingerprint"])
        report.answered += 1
        # a server may echo the key: redacted before it is logged or parsed, as over HTTP
        meta = {**{k: run.redact(v) if isinstance(v, str) else v for k, v in line.meta.items()}, "batch_id": report.batch_id}
        run.cache.append(run.answers.record(
            key=key, class_name=name, messages=messages, answer_index=0, structured=run.structured, sampling=run.sampling,
            text=run.redact(line.text), meta=meta,
        ))
    for custom_id, (name, _, key) in by_id.items():
        if custom_id not in answered and run.cache.get(key) is None:
            report.failed[name] = failures.get(custom_id, "no line in the batch output")
