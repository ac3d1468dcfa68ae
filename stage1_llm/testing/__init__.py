"""Test doubles shipped with the package, reused by tests, benchmarks and the offline demo.

`ScriptedLLMServer` is an OpenAI-compatible chat-completions server on 127.0.0.1 whose answers
are scripted per class (see `llmseg.stage1.testing.server` for how requests are matched to classes).
"""

from .server import (
    ScriptedLLMServer,
    Step,
    duplicates,
    echo_credentials,
    generic_answer,
    http_error,
    prose,
    rate_limited,
    raw,
    raw_http,
    server_error,
    slow,
    trickle,
    valid,
    wrong_count,
)

__all__ = [
    "ScriptedLLMServer",
    "Step",
    "duplicates",
    "echo_credentials",
    "generic_answer",
    "http_error",
    "prose",
    "rate_limited",
    "raw",
    "raw_http",
    "server_error",
    "slow",
    "trickle",
    "valid",
    "wrong_count",
]
