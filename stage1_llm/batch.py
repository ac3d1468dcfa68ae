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
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmseg.errors import LlmsegError
from llmseg.io import stable_hash

if TYPE_CHECKING:  # pragma: no cover
    from .generate import _Run

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

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def summary(self) -> str:
        cost = f", ${self.cost_usd:.4f}" if self.cost_usd is not None else ""
        again = " (resumed)" if self.resumed else ""
        return (
            f"batch {self.batch_id}{again}: {self.submitted} requests, {self.answered} answered, {len(self.failed)} failed "
            f"(asked one by one), {self.prompt_tokens} prompt + {self.completion_tokens} completion tokens{cost}"
        )


def cost_usd(prompt_tokens: int, completion_tokens: int, prices: tuple[float, float] | None) -> float | None:
    """USD for these tokens at `prices` = (per million prompt tokens, per million completion tokens)."""
    if prices is None:
        return None
    return prompt_tokens * prices[0] / 1e6 + completion_tokens * prices[1] / 1e6


def _first_requests(run: _Run, names: list[str]) -> list[tuple[str, list[dict[str, str]], str]]:
    """(class, first-turn messages, cache key) of every class; the key is what `_Run.ask` looks up first."""
    requests = []
    for name in names:
        others = [c for c in run.classes if c != name] if run.other_classes else []
        messages = run.template.render(name, run.k, run.domain, others)
        requests.append((name, messages, run._key(messages, run.structured)))
    return requests


def prefill_from_batch(run: _Run, names: list[str], options: BatchOptions | None = None) -> BatchReport:
    """Put every uncached class's first answer into `run.cache` through one Batch API job."""
    options = options or BatchOptions()
    client = getattr(run.backend, "client", None)
    build = getattr(run.backend, "_request", None)
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
    if batch.status != "completed":
        run.cache.append({"kind": "note", "event": "batch_ended", "batch_key": batch_key, "batch_id": report.batch_id, "status": batch.status})
        errors = getattr(batch, "errors", None)
        raise BatchError(
            f"batch {report.batch_id} ended with status '{batch.status}'{f': {errors}' if errors else ''}; "
            "rerun the same command to submit a new batch, or drop --batch to ask class by class"
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


def _submit(run: _Run, client: Any, build: Any, pending: list, batch_key: str, options: BatchOptions) -> str:
    import openai

    schema = run.schema if run.structured else None
    lines = []
    for index, (_, messages, _) in pending:
        body = build(messages, schema, run.sampling)
        lines.append(json.dumps({"custom_id": str(index), "method": "POST", "url": "/v1/chat/completions", "body": body}, ensure_ascii=False))
    data = ("\n".join(lines) + "\n").encode("utf-8")
    try:
        uploaded = client.files.create(file=("stage1_batch.jsonl", io.BytesIO(data)), purpose="batch")
        batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window=options.completion_window)
    except openai.APIError as exc:
        raise BatchError(f"could not submit the batch: {run._redact(str(exc))}") from exc
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


def _wait(run: _Run, client: Any, report: BatchReport, options: BatchOptions) -> Any:
    import openai

    deadline = time.monotonic() + options.timeout
    interval = options.poll_interval
    failures = 0
    while True:
        try:
            batch = client.batches.retrieve(report.batch_id)
            failures = 0
        except (openai.APIConnectionError, openai.APITimeoutError, openai.InternalServerError, openai.RateLimitError) as exc:
            failures += 1
            if failures > run.max_retries:
                raise BatchError(f"batch {report.batch_id}: polling failed {failures} times: {run._redact(str(exc))}; rerun to resume") from exc
            batch = None
        except openai.APIError as exc:
            raise BatchError(f"batch {report.batch_id}: {run._redact(str(exc))}") from exc
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


def _lines(client: Any, file_id: str | None) -> list[dict[str, Any]]:
    if not file_id:
        return []
    text = client.files.content(file_id).text
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _collect(run: _Run, client: Any, batch: Any, by_id: dict[str, tuple], report: BatchReport) -> None:
    """Log every usable output line as an answer record (the per-class loop replays them)."""
    seen: set[str] = set()
    for line in _lines(client, batch.output_file_id) + _lines(client, getattr(batch, "error_file_id", None)):
        custom_id = str(line.get("custom_id"))
        if custom_id not in by_id or custom_id in seen:
            continue
        seen.add(custom_id)
        name, messages, key = by_id[custom_id]
        response = line.get("response") or {}
        body = response.get("body") or {}
        status = response.get("status_code")
        choices = body.get("choices") or []
        if line.get("error") or status != 200 or not choices:
            error = line.get("error") or body.get("error") or {"message": "no choices"}
            message = error.get("message") if isinstance(error, dict) else str(error)
            report.failed[name] = f"HTTP {status}: {message}"
            run.cache.append({"kind": "error", "class": name, "answer": 0, "status": status, "error": run._redact(str(message)), "batch_id": report.batch_id})
            continue
        choice = choices[0]
        usage = {k: int(v) for k, v in (body.get("usage") or {}).items() if k in ("prompt_tokens", "completion_tokens", "total_tokens") and v is not None}
        report.prompt_tokens += usage.get("prompt_tokens", 0)
        report.completion_tokens += usage.get("completion_tokens", 0)
        if body.get("system_fingerprint"):
            run.fingerprints.add(body["system_fingerprint"])
        report.answered += 1
        run.cache.append(
            {
                "kind": "answer",
                "key": key,
                "class": name,
                "answer": 0,
                "backend": run.backend.name,
                "model": run.backend.model,
                "prompt_id": run.template.id,
                "prompt_sha256": run.template.sha256,
                "structured": run.structured,
                "sampling": run.sampling.as_dict(),
                "messages": messages,
                "text": (choice.get("message") or {}).get("content") or "",
                "meta": {
                    "finish_reason": choice.get("finish_reason"),
                    "request_id": response.get("request_id"),
                    "system_fingerprint": body.get("system_fingerprint"),
                    "model": body.get("model"),
                    "usage": usage,
                    "response_id": body.get("id"),
                    "batch_id": report.batch_id,
                },
            }
        )
    for custom_id, (name, _, _) in by_id.items():
        if custom_id not in seen and run.cache.get(by_id[custom_id][2]) is None:
            report.failed[name] = "no line in the batch output"
