"""The one small interface every stage-one backend implements, and the errors it may raise.

A backend turns chat messages (plus an optional JSON schema) into answer text and metadata.
It never retries: the generation loop (`llmseg.stage1.generate`) owns retries, backoff, rate
limits and the cache, so that the policy is the same for every backend and testable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from llmseg.errors import LlmsegError


@dataclass(frozen=True)
class Sampling:
    """Decoding settings; part of every cache key. Greedy (temperature 0) with a fixed seed by default."""

    temperature: float = 0.0
    seed: int | None = 0
    max_tokens: int = 512
    top_p: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "seed": self.seed, "max_tokens": self.max_tokens, "top_p": self.top_p}


@dataclass
class Completion:
    """One answer: its text and what the server said about it (request id, usage, fingerprint...)."""

    text: str
    finish_reason: str | None = None
    request_id: str | None = None
    system_fingerprint: str | None = None
    model: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def meta(self) -> dict[str, Any]:
        record = {
            "finish_reason": self.finish_reason,
            "request_id": self.request_id,
            "system_fingerprint": self.system_fingerprint,
            "model": self.model,
            "usage": self.usage,
        }
        record.update(self.extra)
        return record


class BackendError(LlmsegError, RuntimeError):
    """A request failed; `retryable` says whether asking again may help."""

    retryable = False
    fatal = False  # True: no other request can succeed either (bad key, unknown model): stop the run

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class TransientError(BackendError):
    """429, 5xx, a timeout or a dropped connection: retry with backoff (honouring `retry_after`)."""

    retryable = True


class RequestRejected(BackendError):
    """The server refused this request (a 4xx other than 429): asking the same again will not help."""


class FatalBackendError(BackendError):
    """Authentication failed, the model does not exist, the backend cannot load: stop the whole run."""

    fatal = True


class StructuredOutputUnsupported(BackendError):
    """The server rejected `response_format` json_schema: fall back to JSON in plain text."""


class Backend(Protocol):
    """What the generation loop needs from a backend."""

    name: str  # "openai" or "hf": recorded as the label set's generator
    model: str
    supports_schema: bool  # whether `complete` can honour a JSON schema at all
    max_concurrency: int | None  # None: no limit of its own; 1: one request at a time (a local model)

    def complete(self, messages: list[dict[str, str]], *, schema: dict[str, Any] | None, sampling: Sampling) -> Completion:
        """Send one request; raise a BackendError subclass on failure."""
        ...

    def describe(self) -> dict[str, Any]:
        """Provenance for the sidecar (never a secret)."""
        ...

    def close(self) -> None: ...
