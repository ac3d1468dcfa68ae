"""OpenAI-compatible chat completions through the official `openai` SDK (OpenAI, vLLM, Ollama, llama.cpp...).

The SDK's own retries are off (`max_retries=0`): its exceptions are mapped to this package's
error classes and the generation loop retries. The client is thread safe, so one instance
serves every worker thread.
"""

from __future__ import annotations

import email.utils
import os
import threading
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field

from .base import (
    Completion,
    FatalBackendError,
    RequestRejected,
    Sampling,
    StructuredOutputUnsupported,
    TransientError,
)
from .registry import BACKENDS

CONNECT_TIMEOUT_S = 10.0
PLACEHOLDER_KEY = "sk-no-key-required"  # local servers (vLLM, Ollama, llama.cpp) ignore the key
_SCHEMA_WORDS = ("response_format", "json_schema", "structured output", "guided_json")


# A 400 whose message holds all these words means: change this parameter and send again.
_ADAPTATIONS = {
    "max_completion_tokens": ("max_tokens", "max_completion_tokens"),  # "use 'max_completion_tokens' instead"
    "default-temperature": ("temperature", "unsupported"),  # "temperature does not support 0 ... only the default (1)"
}


def resolve_api_key(api_key: str | None, base_url: str | None, env_var: str = "OPENAI_API_KEY") -> str:
    """The key to send: given, else from `env_var`, else a placeholder when talking to a non-OpenAI server."""
    if api_key:
        return api_key
    from_env = os.environ.get(env_var)
    if from_env:
        return from_env
    if base_url and "api.openai.com" not in base_url:
        return PLACEHOLDER_KEY
    raise FatalBackendError(
        f"no API key: set the environment variable {env_var} (or pass --api-key-env NAME), or give --base-url for a local server"
    )


def public_url(url: str | None) -> str | None:
    """A base URL without user:password or query string, fit for a log or a sidecar."""
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from `retry-after-ms` or `retry-after` (seconds or an HTTP date)."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        if parsed is None:
            return None
        return max(0.0, parsed.timestamp() - time.time())


def _is_schema_complaint(status: int | None, message: str) -> bool:
    lowered = message.lower()
    return status in (400, 422) and any(word in lowered for word in _SCHEMA_WORDS)


class OpenAISettings(BaseModel):
    """Settings of the `openai` backend (any OpenAI-compatible server)."""

    model_config = ConfigDict(extra="forbid")

    base_url: str | None = Field(None, description="server URL, e.g. http://localhost:8000/v1 (default $OPENAI_BASE_URL or OpenAI)")
    api_key: str | None = Field(None, repr=False, description="the key itself (prefer api_key_env)")
    api_key_env: str = Field("OPENAI_API_KEY", min_length=1, description="environment variable holding the key")
    timeout: float = Field(60.0, gt=0, description="seconds before a request times out")


@BACKENDS.register("openai", config=OpenAISettings, help="any OpenAI-compatible chat-completions server")
class OpenAIBackend:
    """Chat completions over HTTP; `schema` is sent as `response_format` when given."""

    name = "openai"
    supports_schema = True
    max_concurrency: int | None = None

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
    ):
        from openai import OpenAI, Timeout

        self.model = model
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        self._key = resolve_api_key(api_key, self.base_url, api_key_env)
        self.timeout = timeout
        # a server that is not there should be known in seconds, not after the read timeout
        connect = min(timeout, CONNECT_TIMEOUT_S)
        self.client = OpenAI(api_key=self._key, base_url=self.base_url, max_retries=0,
                             timeout=Timeout(timeout, connect=connect))
        # Until the server has answered once, a refused/unresolvable connection means a wrong URL or a
        # server that is not running: stop at once (retries are for a server that answered before).
        self.answered = False
        # Request adaptations learnt from the server's 400s (e.g. reasoning models), kept for the run.
        self.adaptations: list[str] = []
        self._lock = threading.Lock()

    def redact(self, text: str) -> str:
        """`text` with the API key (should a server echo it) replaced by ***."""
        return text.replace(self._key, "***") if self._key and self._key != PLACEHOLDER_KEY else text

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "model": self.model,
            "base_url": public_url(str(self.client.base_url)),
            "timeout": self.timeout,
            "adaptations": list(self.adaptations),
        }

    def complete(self, messages: list[dict[str, str]], *, schema: dict[str, Any] | None, sampling: Sampling) -> Completion:
        import openai

        for _ in range(len(_ADAPTATIONS) + 1):
            kwargs = self._request(messages, schema, sampling)
            try:
                response = self.client.chat.completions.create(**kwargs)
                break
            except openai.APITimeoutError as exc:
                raise TransientError(f"timed out after {self.timeout:g} s ({public_url(str(self.client.base_url))})") from exc
            except openai.APIConnectionError as exc:
                cause = exc.__cause__ or exc
                where = public_url(str(self.client.base_url))
                if not self.answered:
                    raise FatalBackendError(self.redact(
                        f"cannot connect to {where}: {type(cause).__name__}: {cause}. Is the server running "
                        "and is --base-url right (scheme, host, port, /v1)?"
                    )) from exc
                raise TransientError(self.redact(f"connection error to {where}: {cause}")) from exc
            except openai.APIStatusError as exc:
                self.answered = True
                if not self._adapt(exc):
                    raise self._map_status(exc) from exc
            except openai.APIError as exc:  # e.g. a response the SDK could not read: may be transient
                raise TransientError(self.redact(f"bad response: {exc}")) from exc
        else:
            raise RequestRejected(f"the server keeps rejecting the request parameters ({', '.join(self.adaptations)})")
        self.answered = True
        if not response.choices:
            raise TransientError("the server answered with no choices")
        choice = response.choices[0]
        usage = response.usage.model_dump(include={"prompt_tokens", "completion_tokens", "total_tokens"}) if response.usage else {}
        message = choice.message
        text = message.content or ""  # a refusal leaves no content: unusable, asked again
        return Completion(
            text=text,
            finish_reason=choice.finish_reason,
            request_id=getattr(response, "_request_id", None) or response.id,
            system_fingerprint=response.system_fingerprint,
            model=response.model,
            usage={k: int(v) for k, v in usage.items() if v is not None},
            extra={"response_id": response.id, "refusal": getattr(message, "refusal", None)},
        )

    def _request(self, messages: list[dict[str, str]], schema: dict[str, Any] | None, sampling: Sampling) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages}
        if "default-temperature" not in self.adaptations:
            kwargs["temperature"] = sampling.temperature
        if sampling.seed is not None:
            kwargs["seed"] = sampling.seed
        if sampling.top_p is not None:
            kwargs["top_p"] = sampling.top_p
        if sampling.max_tokens:
            name = "max_completion_tokens" if "max_completion_tokens" in self.adaptations else "max_tokens"
            kwargs[name] = sampling.max_tokens
        if schema is not None:
            kwargs["response_format"] = schema
        return kwargs

    def _adapt(self, exc: Any) -> bool:
        """Learn from a 400 that a parameter must change (OpenAI reasoning models); True: send again."""
        if exc.status_code != 400:
            return False
        text = f"{exc.message} {getattr(exc, 'body', '')}".lower()
        for name, needles in _ADAPTATIONS.items():
            if all(n in text for n in needles):
                with self._lock:  # already learnt by another thread: this request went out before
                    if name not in self.adaptations:
                        self.adaptations.append(name)
                return True
        return False

    def _map_status(self, exc: Any) -> Exception:
        status = exc.status_code
        message = self.redact(f"HTTP {status}: {exc.message}")
        retry_after = parse_retry_after(exc.response.headers if exc.response is not None else None)
        if status == 500 and "json_schema" in f"{exc.message} {getattr(exc, 'body', '')}".lower():
            # llama-cpp-python's server answers a response_format it does not know with a 500 (a validation error)
            return StructuredOutputUnsupported(message, status=status)
        if status in (408, 409, 429) or status >= 500:
            return TransientError(message, status=status, retry_after=retry_after)
        if _is_schema_complaint(status, str(exc.message) + str(getattr(exc, "body", ""))):
            return StructuredOutputUnsupported(message, status=status)
        if status in (401, 403, 404):
            hint = {401: "check the API key", 403: "the key may not be allowed to use this model", 404: f"is '{self.model}' served there?"}[status]
            return FatalBackendError(f"{message} ({hint})", status=status)
        return RequestRejected(message, status=status)

    def close(self) -> None:
        self.client.close()
