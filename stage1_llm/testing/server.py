"""A scripted OpenAI-compatible chat-completions server, for tests, benchmarks and the offline demo.

    from llmseg.stage1.testing.server import ScriptedLLMServer, valid, prose, raw, http_error, rate_limited

    with ScriptedLLMServer(scripts={"cat": [rate_limited(0.05), raw("not json"), valid([...])]}) as server:
        generate_label_set(classes, backend="openai", model="scripted", base_url=server.base_url)
        assert server.count("cat") == 3

It listens on 127.0.0.1 on a free port (standard library only) and speaks enough of the API
for the real `openai` SDK: `POST /v1/chat/completions` and `GET /v1/models`, plus the Files
(`POST /v1/files`, `GET /v1/files/{id}[/content]`) and Batch (`POST /v1/batches`,
`GET /v1/batches/{id}`, `POST /v1/batches/{id}/cancel`) APIs, in memory: a batch completes on its
`batch_polls`-th retrieve (0: at once), answering each line through the same scripts, and
writes an output file (2xx lines) and an error file (the others). Batch lines are logged like
HTTP requests, with `authorization` None.

How a request is matched to a class: the server searches the request's user messages, first
to last, for `class_pattern` (default: a line `Class: <name>`, which the bundled prompt
templates end with) and takes K from `k_pattern` (default: a line `Number of subtypes: <k>`,
else 5). Scripts are keyed by that exact class name. Each class's script is a list of steps
used one per request, in order; once a class's script is used up (or it has none) the
server answers with `default(class_name, k)`: by default `["<class> variant 1", ...]`.
A request whose class cannot be found gets a 400.

Hostile servers for the fault tests: `raw_http(body, status=...)` sends exactly these bytes (a non-JSON
200, a JSON list, a plain-text error page), `trickle(interval)` sends a reply one byte at a time, and
`echo_credentials()` answers with the key, basic-auth user:password and query values it was sent.

`latency` delays every answer; `reject_json_schema=True` answers 400 to any request with
`response_format` of type json_schema, the way servers without structured output do. Every
request is logged (`server.log`, `server.count(...)`); nothing is written to disk.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP as HTTP_POLICY
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

AnswerGenerator = Callable[[str, int], list[str]]
DEFAULT_CLASS_PATTERN = r"^Class: (?P<name>.+?)[ \t]*$"
DEFAULT_K_PATTERN = r"^Number of subtypes: (?P<k>\d+)[ \t]*$"
FINGERPRINT = "fp_llmseg_scripted"


def generic_answer(class_name: str, k: int) -> list[str]:
    """The default answer: `k` distinct made-up names (fine for tests, not for segmentation)."""
    return [f"{class_name} variant {i + 1}" for i in range(k)]


@dataclass(frozen=True)
class Step:
    """One scripted reply: an answer text (status 200) or an HTTP error, optionally delayed."""

    kind: str
    content: str | None = None
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    finish_reason: str = "stop"
    error_body: dict[str, Any] | None = None
    items: tuple[str, ...] | None = None  # for "json"/"prose": the list to serialise; None = the default answer
    body: bytes | None = None  # for "bytes": exactly this response body
    content_type: str = "application/json"
    trickle: float = 0.0  # > 0: send the whole response (status line, headers, body) one byte per this many seconds


def valid(items: Iterable[str] | None = None, delay: float = 0.0) -> Step:
    """A clean JSON answer `{"subclasses": items}` (None: the default generator's answer)."""
    return Step("json", items=None if items is None else tuple(items), delay=delay)


def prose(items: Iterable[str] | None = None, delay: float = 0.0) -> Step:
    """The JSON wrapped in chatter and a ```json fence, as chat models like to answer."""
    return Step("prose", items=None if items is None else tuple(items), delay=delay)


def raw(text: str, *, finish_reason: str = "stop", delay: float = 0.0) -> Step:
    """Exactly this answer text: invalid JSON, a truncated answer (finish_reason='length'), prose..."""
    return Step("raw", content=text, finish_reason=finish_reason, delay=delay)


def wrong_count(n: int, delay: float = 0.0) -> Step:
    """A well-formed answer with `n` entries (the test decides whether that is wrong)."""
    return Step("json", items=tuple(f"item {i + 1}" for i in range(n)), delay=delay)


def duplicates(items: Iterable[str], delay: float = 0.0) -> Step:
    """A JSON answer listing every item twice (varying case and spacing the second time)."""
    items = list(items)
    doubled = items + [f"  {i.upper()} " for i in items]
    return Step("json", items=tuple(doubled), delay=delay)


def http_error(status: int, message: str | None = None, *, retry_after: float | None = None, delay: float = 0.0) -> Step:
    """An HTTP error with an OpenAI-style error body (and a Retry-After header if given)."""
    headers = (("Retry-After", f"{retry_after:g}"),) if retry_after is not None else ()
    body = {"error": {"message": message or f"scripted error {status}", "type": "server_error", "param": None, "code": None}}
    return Step("http", status=status, headers=headers, delay=delay, error_body=body)


def raw_http(
    body: bytes | str, *, status: int = 200, content_type: str = "application/json",
    headers: Iterable[tuple[str, str]] = (), delay: float = 0.0,
) -> Step:
    """Exactly this HTTP response body: a non-JSON 200, a JSON list, a plain-text error page..."""
    data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    return Step("bytes", status=status, headers=tuple(headers), delay=delay, body=data, content_type=content_type)


def trickle(interval: float, then: Step | None = None) -> Step:
    """`then` (default: a valid answer) sent one byte every `interval` seconds, headers included:
    a server that never stalls long enough for a per-read timeout."""
    step = then or valid()
    return Step(step.kind, step.content, step.status, step.headers, step.delay, step.finish_reason, step.error_body,
                step.items, step.body, step.content_type, interval)


def echo_credentials(status: int = 200) -> Step:
    """An answer (status 200) or an error message (other statuses) that repeats the credentials the request
    carried: the bearer key, a basic-auth user:password and the query string. A hostile or buggy server."""
    return Step("echo", status=status)


def rate_limited(retry_after: float = 1.0) -> Step:
    """429 Too Many Requests with a Retry-After header (seconds)."""
    return http_error(429, "Rate limit reached (scripted)", retry_after=retry_after)


def server_error(status: int = 500) -> Step:
    return http_error(status, "The server had an error while processing your request (scripted)")


def slow(seconds: float, then: Step | None = None) -> Step:
    """`then` (default: a valid answer) after `seconds`: with a short client timeout, a timeout."""
    step = then or valid()
    return Step(step.kind, step.content, step.status, step.headers, seconds, step.finish_reason, step.error_body,
                step.items, step.body, step.content_type, step.trickle)


@dataclass
class LoggedRequest:
    """What the server saw and did for one request."""

    n: int
    path: str
    class_name: str | None
    k: int | None
    step: str
    status: int
    body: dict[str, Any]
    authorization: str | None
    time: float = field(default_factory=time.monotonic)

    @property
    def response_format(self) -> str | None:
        fmt = self.body.get("response_format")
        return fmt.get("type") if isinstance(fmt, dict) else None

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.body.get("messages") or []


class ScriptedLLMServer:
    """The server; a context manager that starts it on enter and stops it on exit."""

    def __init__(
        self,
        scripts: dict[str, Iterable[Step]] | None = None,
        *,
        default: AnswerGenerator | None = None,
        latency: float = 0.0,
        reject_json_schema: bool = False,
        class_pattern: str = DEFAULT_CLASS_PATTERN,
        k_pattern: str = DEFAULT_K_PATTERN,
        model: str = "scripted",
        batch_polls: int = 0,
    ):
        self.scripts: dict[str, list[Step]] = {name: list(steps) for name, steps in (scripts or {}).items()}
        self.default = default or generic_answer
        self.latency = latency
        self.reject_json_schema = reject_json_schema
        self.class_pattern = re.compile(class_pattern, re.MULTILINE)
        self.k_pattern = re.compile(k_pattern, re.MULTILINE)
        self.model = model
        self.log: list[LoggedRequest] = []
        self._lock = threading.Lock()
        self.files = _Files()
        self.batches = _Batches(self, polls=batch_polls)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:<port>/v1`, the URL to give the client (still known after stop())."""
        if self._url is None:
            raise RuntimeError("the server was never started: use it as a context manager or call start()")
        return self._url

    def start(self) -> ScriptedLLMServer:
        handler = type("Handler", (_Handler,), {"owner": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        host, port = self._httpd.server_address[:2]
        assert isinstance(host, str)  # an AF_INET server's host is a str (the stub also allows bytes)
        self._url = f"http://{host}:{port}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="scripted-llm", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> ScriptedLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ inspection

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self.log)

    def count(self, class_name: str | None = None, *, status: int | None = None) -> int:
        """Requests seen (for one class and/or with one response status)."""
        with self._lock:
            return sum(
                1
                for r in self.log
                if (class_name is None or r.class_name == class_name) and (status is None or r.status == status)
            )

    def requests_for(self, class_name: str) -> list[LoggedRequest]:
        with self._lock:
            return [r for r in self.log if r.class_name == class_name]

    def classes_requested(self) -> list[str]:
        with self._lock:
            return [r.class_name for r in self.log if r.class_name is not None]

    def add_script(self, class_name: str, *steps: Step) -> None:
        with self._lock:
            self.scripts.setdefault(class_name, []).extend(steps)

    # ------------------------------------------------------------------ behaviour

    def find_class(self, messages: list[dict[str, Any]]) -> tuple[str | None, int]:
        for message in messages:
            if message.get("role") != "user" or not isinstance(message.get("content"), str):
                continue
            found = self.class_pattern.search(message["content"])
            if found:
                k_match = self.k_pattern.search(message["content"])
                return found.group("name"), int(k_match.group("k")) if k_match else 5
        return None, 5

    def next_step(self, class_name: str) -> Step:
        with self._lock:
            script = self.scripts.get(class_name)
            if script:
                return script.pop(0)
        return valid()

    def chat(self, path: str, body: dict[str, Any], auth: str | None
             ) -> tuple[int, dict[str, Any] | RawReply, list[tuple[str, str]]]:
        """One chat-completions request (over HTTP or as a batch line): status, JSON payload, headers."""
        entry = LoggedRequest(0, path, None, None, "", 0, body, auth)
        if not path.split("?", 1)[0].rstrip("/").endswith("/chat/completions"):
            entry.step, entry.status = "no-route", 404
            self.record(entry)
            return 404, {"error": {"message": f"no route {path}", "type": "invalid_request_error"}}, []
        class_name, k = self.find_class(body.get("messages") or [])
        entry.class_name, entry.k = class_name, k
        fmt = body.get("response_format")
        if self.reject_json_schema and isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            entry.step, entry.status = "reject-json-schema", 400
            self.record(entry)
            message = "response_format type 'json_schema' is not supported by this server"
            return 400, {"error": {"message": message, "type": "invalid_request_error", "param": "response_format", "code": None}}, []
        if class_name is None:
            entry.step, entry.status = "unknown-class", 400
            self.record(entry)
            message = f"scripted server: no line matching {self.class_pattern.pattern!r} in the user messages"
            return 400, {"error": {"message": message, "type": "invalid_request_error"}}, []
        step = self.next_step(class_name)
        entry.step, entry.status = step.kind, step.status
        self.record(entry)
        delay = self.latency + step.delay
        if delay:
            time.sleep(delay)
        if step.kind == "http":
            return step.status, step.error_body or {}, list(step.headers)
        if step.kind == "bytes":
            return step.status, RawReply(step.body or b"", step.content_type, step.trickle), list(step.headers)
        if step.kind == "echo" and step.status != 200:
            message = "scripted error; you sent: " + " ".join(request_credentials(entry))
            return step.status, {"error": {"message": message, "type": "server_error"}}, list(step.headers)
        try:
            payload = _completion(entry, step, self, class_name, k)
        except Exception as exc:  # a failing answer generator: say so instead of dropping the connection
            message = f"scripted server: the answer generator failed for class '{class_name}': {exc!r}"
            entry.step, entry.status = "generator-error", 500
            return 500, {"error": {"message": message, "type": "server_error"}}, []
        if step.trickle:
            return 200, RawReply(json.dumps(payload).encode("utf-8"), "application/json", step.trickle), [("x-request-id", f"req_scripted_{entry.n}")]
        return 200, payload, [("x-request-id", f"req_scripted_{entry.n}")]

    def record(self, entry: LoggedRequest) -> None:
        with self._lock:
            entry.n = len(self.log) + 1
            self.log.append(entry)


class _Handler(BaseHTTPRequestHandler):
    owner: ScriptedLLMServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes: avoid the 40 ms delayed-ACK stall

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, payload: dict[str, Any] | RawReply, headers: Iterable[tuple[str, str]] = ()) -> None:
        if isinstance(payload, RawReply):
            self._send_raw(status, payload, headers)
            return
        data = json.dumps(payload).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout): nothing to do
            pass

    def _send_raw(self, status: int, reply: RawReply, headers: Iterable[tuple[str, str]]) -> None:
        head = [f"HTTP/1.1 {status} Scripted", f"Content-Type: {reply.content_type}", f"Content-Length: {len(reply.data)}"]
        head += [f"{name}: {value}" for name, value in headers]
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + reply.data
        try:
            if not reply.trickle:
                self.wfile.write(data)
                return
            for byte in data:  # one byte at a time, never silent for long
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(reply.trickle)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up: nothing to do
            self.close_connection = True

    def _send_bytes(self, data: bytes) -> None:
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_GET(self) -> None:
        owner = self.owner
        route = self.path.split("?", 1)[0].rstrip("/")
        if route.endswith("/models"):
            self._send(200, {"object": "list", "data": [{"id": owner.model, "object": "model", "owned_by": "llmseg"}]})
        elif "/files/" in route:
            file_id, _, rest = route.split("/files/", 1)[1].partition("/")
            found = owner.files.get(file_id)
            if found is None:
                self._send(404, {"error": {"message": f"no file {file_id}", "type": "invalid_request_error"}})
            elif rest == "content":
                self._send_bytes(found.data)
            else:
                self._send(200, found.info())
        elif "/batches/" in route:
            status, payload = owner.batches.retrieve(route.split("/batches/", 1)[1])
            interval = owner.batches.take_trickle()
            self._send(status, RawReply(json.dumps(payload).encode("utf-8"), "application/json", interval) if interval else payload)
        else:
            self._send(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})

    def do_POST(self) -> None:
        owner = self.owner
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length)
        route = self.path.split("?", 1)[0].rstrip("/")
        if route.endswith("/files"):
            status, payload = owner.files.upload(self.headers.get("Content-Type") or "", data)
            self._send(status, payload)
            return
        try:
            body = json.loads(data or b"{}")
        except json.JSONDecodeError:
            self._send(400, {"error": {"message": "body is not JSON", "type": "invalid_request_error"}})
            return
        if route.endswith("/batches"):
            self._send(*owner.batches.create(body))
            return
        if route.endswith("/cancel") and "/batches/" in route:
            self._send(*owner.batches.cancel(route.split("/batches/", 1)[1].split("/")[0]))
            return
        status, reply, headers = owner.chat(self.path, body, self.headers.get("Authorization"))
        self._send(status, reply, headers)


@dataclass(frozen=True)
class RawReply:
    """A response body sent as is (not serialised from a dict), optionally trickled byte by byte."""

    data: bytes
    content_type: str = "application/json"
    trickle: float = 0.0


def request_credentials(entry: LoggedRequest) -> list[str]:
    """What a request carried that is secret: the bearer key or basic user:password, and its query values."""
    found = []
    scheme, _, value = (entry.authorization or "").partition(" ")
    if scheme.lower() == "bearer" and value:
        found.append(value)
    elif scheme.lower() == "basic" and value:
        found.append(base64.b64decode(value).decode("utf-8", "replace"))
    found += [v for _, v in parse_qsl(urlsplit(entry.path).query) if v]
    return found


def _answer_text(step: Step, owner: ScriptedLLMServer, class_name: str, k: int, entry: LoggedRequest | None = None) -> str:
    if step.kind == "raw":
        return step.content or ""
    items = list(step.items) if step.items is not None else list(owner.default(class_name, k))
    if step.kind == "echo" and entry is not None:  # the first entries repeat the credentials
        echoed = [f"{class_name} {secret}" for secret in request_credentials(entry)][:k]
        items = echoed + items[: k - len(echoed)]
    payload = json.dumps({"subclasses": items}, ensure_ascii=False)
    if step.kind == "prose":
        return f"Sure! Here are the subtypes of {class_name}:\n\n```json\n{payload}\n```\n\nLet me know if you need more."
    return payload


def _completion(entry: LoggedRequest, step: Step, owner: ScriptedLLMServer, class_name: str, k: int) -> dict[str, Any]:
    text = _answer_text(step, owner, class_name, k, entry)
    prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in entry.messages)
    completion_tokens = len(text.split())
    return {
        "id": f"chatcmpl-scripted-{entry.n}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": entry.body.get("model") or owner.model,
        "system_fingerprint": FINGERPRINT,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": step.finish_reason,
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens},
    }


# ---------------------------------------------------------------------- Files and Batches API


@dataclass
class StoredFile:
    """An uploaded (or server-written) file: its bytes and the metadata the Files API reports."""

    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int = field(default_factory=lambda: int(time.time()))

    def info(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
        }


class _Files:
    """`POST /v1/files` (multipart upload), `GET /v1/files/{id}` and `GET /v1/files/{id}/content`, in memory."""

    def __init__(self) -> None:
        self._files: dict[str, StoredFile] = {}
        self._lock = threading.Lock()

    def add(self, filename: str, purpose: str, data: bytes) -> StoredFile:
        with self._lock:
            stored = StoredFile(f"file-scripted-{len(self._files) + 1}", filename, purpose, data)
            self._files[stored.id] = stored
        return stored

    def get(self, file_id: str) -> StoredFile | None:
        with self._lock:
            return self._files.get(file_id)

    def __len__(self) -> int:
        with self._lock:
            return len(self._files)

    def upload(self, content_type: str, data: bytes) -> tuple[int, dict[str, Any]]:
        if not content_type.startswith("multipart/form-data"):
            return 400, {"error": {"message": "files: expected multipart/form-data", "type": "invalid_request_error"}}
        message = BytesParser(policy=HTTP_POLICY).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + data)
        fields: dict[str, tuple[str | None, bytes]] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)  # bytes, or None for an empty or nested part
            fields[str(name)] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
        if "file" not in fields or "purpose" not in fields:
            return 400, {"error": {"message": "files: 'file' and 'purpose' are required", "type": "invalid_request_error"}}
        filename, content = fields["file"]
        stored = self.add(filename or "upload", fields["purpose"][1].decode(), content)
        return 200, stored.info()


@dataclass
class ScriptedBatch:
    """One batch job: it completes on the `polls`-th retrieve (0: already done when created)."""

    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    polls_left: int
    status: str = "validating"
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"total": 0, "completed": 0, "failed": 0})
    retrievals: int = 0
    created_at: int = field(default_factory=lambda: int(time.time()))

    def info(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "request_counts": dict(self.counts),
            "errors": None,
            "metadata": None,
        }


class _Batches:
    """`POST /v1/batches`, `GET /v1/batches/{id}`, `POST /v1/batches/{id}/cancel`.

    Each input line is answered through the same scripts as `/v1/chat/completions` (so a class's
    script steps are used by batch lines too); 2xx answers go to the output file, others to the
    error file, in the Batch API's line format.
    """

    def __init__(self, owner: ScriptedLLMServer, polls: int):
        self.owner = owner
        self.polls = polls
        self.jobs: dict[str, ScriptedBatch] = {}
        self._lock = threading.Lock()
        # Test hooks for a batch that goes wrong: `expire_after = n` answers only the first n lines and
        # ends 'expired' (the rest go to the error file as batch_expired, like the real API);
        # `rewrite_output(bytes) -> bytes` replaces the output file a finished batch serves.
        self.expire_after: int | None = None
        self.rewrite_output: Callable[[bytes], bytes] | None = None
        # `trickle_retrieves = n`: the next n answers to a retrieve are sent one byte per `trickle_interval` s
        # (a server that never stalls a read long enough for a per-read timeout, but never finishes either)
        self.trickle_retrieves = 0
        self.trickle_interval = 0.2

    def take_trickle(self) -> float:
        """The byte interval for this retrieve's answer (0: sent at once)."""
        with self._lock:
            if self.trickle_retrieves <= 0:
                return 0.0
            self.trickle_retrieves -= 1
            return self.trickle_interval

    @property
    def created(self) -> int:
        with self._lock:
            return len(self.jobs)

    def create(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        source = self.owner.files.get(str(body.get("input_file_id")))
        if source is None:
            return 400, {"error": {"message": f"batches: no file {body.get('input_file_id')!r}", "type": "invalid_request_error"}}
        with self._lock:
            job = ScriptedBatch(
                f"batch_scripted_{len(self.jobs) + 1}",
                source.id,
                str(body.get("endpoint")),
                str(body.get("completion_window")),
                self.polls,
            )
            self.jobs[job.id] = job
        if job.polls_left <= 0:
            self._finish(job)
        else:
            job.status = "in_progress"
        return 200, job.info()

    def retrieve(self, batch_id: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            job = self.jobs.get(batch_id)
        if job is None:
            return 404, {"error": {"message": f"no batch {batch_id}", "type": "invalid_request_error"}}
        job.retrievals += 1
        if job.status == "in_progress":
            job.polls_left -= 1
            if job.polls_left <= 0:
                self._finish(job)
        return 200, job.info()

    def cancel(self, batch_id: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            job = self.jobs.get(batch_id)
        if job is None:
            return 404, {"error": {"message": f"no batch {batch_id}", "type": "invalid_request_error"}}
        if job.status not in ("completed", "failed", "expired"):
            job.status = "cancelled"
        return 200, job.info()

    def _finish(self, job: ScriptedBatch) -> None:
        source = self.owner.files.get(job.input_file_id)
        lines = [line for line in (source.data.decode("utf-8").splitlines() if source else []) if line.strip()]
        out: list[str] = []
        errors: list[str] = []
        for number, line in enumerate(lines, start=1):
            request = json.loads(line)
            custom_id = request.get("custom_id")
            if self.expire_after is not None and number > self.expire_after:
                errors.append(json.dumps({"id": f"batch_req_{job.id}_{number}", "custom_id": custom_id, "response": None, "error": {
                    "code": "batch_expired", "message": "This request could not be executed before the completion window expired."}}))
                continue
            status, payload, _ = self.owner.chat(str(request.get("url")), request.get("body") or {}, None)
            # a raw_http step in a batch: its body as a string
            body = payload.data.decode("utf-8", "replace") if isinstance(payload, RawReply) else payload
            record = {"id": f"batch_req_{job.id}_{number}", "custom_id": custom_id}
            if 200 <= status < 300:
                record |= {"response": {"status_code": status, "request_id": f"req_{job.id}_{number}", "body": body}, "error": None}
                out.append(json.dumps(record))
            else:
                record |= {"response": {"status_code": status, "request_id": f"req_{job.id}_{number}", "body": body}, "error": None}
                errors.append(json.dumps(record))
        job.counts = {"total": len(lines), "completed": len(out), "failed": len(errors)}
        if out:
            data = ("\n".join(out) + "\n").encode()
            if self.rewrite_output is not None:
                data = self.rewrite_output(data)
            job.output_file_id = self.owner.files.add(f"{job.id}_output.jsonl", "batch_output", data).id
        if errors:
            job.error_file_id = self.owner.files.add(f"{job.id}_error.jsonl", "batch_output", ("\n".join(errors) + "\n").encode()).id
        job.status = "expired" if self.expire_after is not None and len(lines) > self.expire_after else "completed"
