"""OpenAI-compatible chat completions through the official `openai` SDK (OpenAI, vLLM, Ollama, llama.cpp...).

The SDK's own retries are off (`max_retries=0`): its exceptions are mapped to this package's
error classes and the generation loop retries. The client is thread safe, so one instance
serves every worker thread.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field

from llmseg.redact import redact_secrets, redact_url, url_secrets

from .base import (
    Completion,
    FatalBackendError,
    RequestRejected,
    Sampling,
    StructuredOutputUnsupported,
    TransientError,
)
from .registry import BACKENDS

log = logging.getLogger(__name__)
T = TypeVar("T")

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


def has_userinfo(url: str | None) -> bool:
    """Whether a URL carries user[:password]@ before its host."""
    try:
        return bool(url) and "@" in urlsplit(url).netloc
    except ValueError:
        return False


def public_url(url: str | None) -> str | None:
    """A base URL without user:password or query string, fit for a log or a sidecar."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
    except ValueError:  # a malformed URL (bad port, open bracket): keep only what is surely not secret
        return redact_url(url)
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def split_query(url: str | None) -> tuple[str | None, dict[str, str]]:
    """A base URL's query string as separate parameters (`?api-version=...`, `?api_key=...`).

    Why: the SDK appends `chat/completions` to the base URL's raw path *and query*, which would give
    `/v1/?k=vchat/completions`; sent as default query parameters they reach every request intact.
    """
    if not url or "?" not in url:
        return url, {}
    try:
        parts = urlsplit(url)
    except ValueError:
        return url, {}
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", parts.fragment)), dict(parse_qsl(parts.query, keep_blank_values=True))


def _seconds(value: str, scale: float = 1.0) -> float | None:
    """A finite, non-negative number of seconds from a header value, or None when it is not a number."""
    try:
        seconds = float(value) * scale
    except (TypeError, ValueError):
        return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from `retry-after-ms` or `retry-after` (seconds or an HTTP date); None if unreadable.

    A server's header is untrusted input: `Retry-After: soon` or a broken date means "no hint"
    (the usual backoff applies), never an exception that ends the run.
    """
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value:
        seconds = _seconds(value, 1e-3)
        if seconds is not None:
            return seconds
    value = headers.get("retry-after")
    if not value:
        return None
    seconds = _seconds(value)
    if seconds is not None:
        return seconds
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    try:
        return max(0.0, parsed.timestamp() - time.time())
    except (OverflowError, OSError, ValueError):
        return None


def _is_schema_complaint(status: int | None, message: str) -> bool:
    lowered = message.lower()
    return status in (400, 422) and any(word in lowered for word in _SCHEMA_WORDS)


def _excerpt(text: str, limit: int = 120) -> str:
    """The start of an unexpected body, quoted, for an error message."""
    return json.dumps(text[:limit] + ("..." if len(text) > limit else ""), ensure_ascii=True)


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
        # lazy import: start-up time (openai takes ~0.6 s to import; the registry imports this module to check --backend openai settings before one is built)
        from openai import OpenAI, Timeout

        self.model = model
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        self._key = resolve_api_key(api_key, self.base_url, api_key_env)
        # what must never be written or printed: the key and the base URL's credentials
        self._secrets = [*([self._key] if self._key != PLACEHOLDER_KEY else []), *url_secrets(self.base_url)]
        if self._key != PLACEHOLDER_KEY and has_userinfo(self.base_url):
            # the SDK's HTTP client turns user:password@ into `Authorization: Basic ...`, replacing the key's Bearer header
            log.warning("--base-url holds user:password@: it is sent as HTTP Basic auth instead of the API key, "
                        "so the key is not sent; drop user:password@ from --base-url to send the key")
        self.timeout = timeout
        # a server that is not there should be known in seconds, not after the read timeout
        connect = min(timeout, CONNECT_TIMEOUT_S)
        base, query = split_query(self.base_url)
        self.client = OpenAI(api_key=self._key, base_url=base, default_query=query or None, max_retries=0,
                             timeout=Timeout(timeout, connect=connect))
        # Until the server has answered once, a refused/unresolvable connection means a wrong URL or a
        # server that is not running: stop at once (retries are for a server that answered before).
        self.answered = False
        # Request adaptations learnt from the server's 400s (e.g. reasoning models), kept for the run.
        self.adaptations: list[str] = []
        self._lock = threading.Lock()
        self._idle_http: list[Any] = []  # HTTP clients not in use (see _post)

    def redact(self, text: str) -> str:
        """`text` with the API key and the base URL's credentials (should a server echo them) replaced by ***."""
        return redact_secrets(text, self._secrets)

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "model": self.model,
            "base_url": public_url(str(self.client.base_url)),
            "timeout": self.timeout,
            "adaptations": list(self.adaptations),
        }

    def complete(self, messages: list[dict[str, str]], *, schema: dict[str, Any] | None, sampling: Sampling) -> Completion:
        import openai  # lazy import: start-up time (this module stays openai-free until a backend is built; see __init__)

        where = public_url(str(self.client.base_url))
        for _ in range(len(_ADAPTATIONS) + 1):
            kwargs = self.request_body(messages, schema, sampling)
            expired = threading.Event()
            try:
                raw = self._post(kwargs, expired)
                break
            except openai.APIStatusError as exc:
                self.answered = True
                if not self._adapt(exc):
                    raise self._map_status(exc) from exc
            except openai.APITimeoutError as exc:
                raise TransientError(f"timed out after {self.timeout:g} s ({where})") from exc
            except Exception as exc:
                if expired.is_set():  # the watchdog closed the connection: whatever broke, it is the deadline
                    raise TransientError(f"timed out after {self.timeout:g} s in all ({where})") from exc
                if isinstance(exc, openai.APIConnectionError):
                    cause = exc.__cause__ or exc
                    if not self.answered:
                        raise FatalBackendError(self.redact(
                            f"cannot connect to {where}: {type(cause).__name__}: {cause}. Is the server running "
                            "and is --base-url right (scheme, host, port, /v1)?"
                        )) from exc
                    raise TransientError(self.redact(f"connection error to {where}: {cause}")) from exc
                if isinstance(exc, openai.APIError):  # e.g. a response the SDK could not read: may be transient
                    raise TransientError(self.redact(f"bad response from {where}: {exc}")) from exc
                raise
        else:
            raise RequestRejected(f"the server keeps rejecting the request parameters ({', '.join(self.adaptations)})")
        self.answered = True
        return self._completion(raw, where)

    def _post(self, kwargs: dict[str, Any], expired: threading.Event) -> tuple[str, Any]:
        """Send one chat request and read its whole answer within `timeout` seconds in all: (body text, headers)."""

        def exchange(client: Any) -> tuple[str, Any]:
            raw = client.chat.completions.with_raw_response.create(**kwargs)
            return raw.text, raw.headers  # read in full here, under the watchdog

        return self.within_deadline(exchange, expired)

    def within_deadline(self, call: Callable[[Any], T], expired: threading.Event) -> T:
        """`call(client)` with the whole exchange bounded by `timeout` seconds; `expired` is set when it ran out.

        The SDK's timeout bounds each read, so a server that trickles a byte at a time would never time
        out. Each exchange in flight therefore has an HTTP client (connection pool) of its own, and a
        watchdog closes that client when the deadline passes: the socket is closed, the blocked read
        fails and the request really stops (the caller sees whatever error that gives, with `expired`
        set). A client that finished in time is reused (keep-alive). `call` must read the whole
        response before it returns.
        """
        http_client = self._take_http_client()

        def expire() -> None:
            expired.set()
            http_client.close()

        watchdog = threading.Timer(self.timeout, expire)
        watchdog.daemon = True
        watchdog.start()
        try:
            result = call(self.client.with_options(http_client=http_client))
        except BaseException:
            watchdog.cancel()
            http_client.close()  # a failed exchange may leave the connection in any state: never reuse it
            raise
        watchdog.cancel()
        if expired.is_set():
            http_client.close()
        else:
            self._give_http_client(http_client)
        return result  # read in full, even if the deadline passed just after: the answer is good

    def _take_http_client(self) -> Any:
        import openai  # lazy import: start-up time (as in complete)

        with self._lock:
            if self._idle_http:
                return self._idle_http.pop()
        return openai.DefaultHttpxClient()

    def _give_http_client(self, http_client: Any) -> None:
        with self._lock:
            self._idle_http.append(http_client)

    def _completion(self, raw: tuple[str, Any], where: str | None) -> Completion:
        """A Completion from a 200 body; anything that is not a chat completion is a failed attempt.

        A proxy's HTML page, a JSON list or a choice without a message would otherwise end the run
        with a traceback; as a TransientError the class is asked again, then reported. Every string
        that came back is redacted: a server that echoes the key must not get it into the answer log.
        """
        text, headers = raw
        try:
            body = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise TransientError(self.redact(f"bad response from {where}: HTTP 200 but the body is not JSON: {_excerpt(text)}")) from exc
        if not isinstance(body, dict):
            raise TransientError(f"bad response from {where}: HTTP 200 but the body is a JSON {type(body).__name__}, not an object")
        choices = body.get("choices")
        if not choices:
            raise TransientError("the server answered with no choices")
        choice = choices[0] if isinstance(choices, list) else None
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict) or not isinstance(message.get("content"), str | None):
            raise TransientError(f"bad response from {where}: HTTP 200 but choices[0] holds no message with text content")
        assert isinstance(choice, dict)  # message is a dict, so the choice holding it was one
        usage = found if isinstance(found := body.get("usage"), dict) else {}
        request_id = headers.get("x-request-id") if headers is not None else None
        return Completion(
            text=self.redact(message.get("content") or ""),  # a refusal leaves no content: unusable, asked again
            finish_reason=self._clean(choice.get("finish_reason")),
            request_id=self._clean(request_id) or self._clean(body.get("id")),
            system_fingerprint=self._clean(body.get("system_fingerprint")),
            model=self._clean(body.get("model")),
            usage={k: int(v) for k in ("prompt_tokens", "completion_tokens", "total_tokens")
                   if isinstance(v := usage.get(k), int | float) and not isinstance(v, bool) and math.isfinite(v)},
            extra={"response_id": self._clean(body.get("id")), "refusal": self._clean(message.get("refusal"))},
        )

    def _clean(self, value: Any) -> str | None:
        """A metadata field as a redacted string (None stays None); servers may send any JSON there."""
        if value is None:
            return None
        return self.redact(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)[:200])

    def request_body(self, messages: list[dict[str, str]], schema: dict[str, Any] | None, sampling: Sampling) -> dict[str, Any]:
        """The chat-completions request for these messages, as this server takes it: what `complete` sends and `batch` uploads."""
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
        body = getattr(exc, "body", None)
        detail = f" - {body[:300]}" if isinstance(body, str) and body.strip() else ""  # a plain-text error page: say what it says
        message = self.redact(f"HTTP {status}: {exc.message}{detail}")
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
        with self._lock:
            idle, self._idle_http = self._idle_http, []
        for http_client in idle:
            http_client.close()
        self.client.close()
