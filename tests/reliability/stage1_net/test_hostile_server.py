"""Items 18 and 19 of issue 21: a server that answers 200 with garbage, a bad Retry-After, or trickles bytes.

All through the real openai SDK over HTTP to the bundled scripted server.
"""

from __future__ import annotations

import time

import pytest

from llmseg.stage1.backends.base import Sampling, TransientError
from llmseg.stage1.backends.openai_compat import OpenAIBackend, parse_retry_after
from llmseg.stage1.generate import Backoff, GenerationError, generate_label_set
from llmseg.stage1.testing import ScriptedLLMServer, raw, raw_http, trickle, valid

CLASSES = ["background", "cat", "dog"]
FIVE = ["tabby cat", "Siamese cat", "black cat", "Persian cat", "kitten"]
FAST = Backoff(base=0.01, cap=0.05)

MALFORMED = {
    "html page": raw_http("<html><body>502 Bad Gateway</body></html>", content_type="text/html"),
    "empty body": raw_http(b""),
    "json list": raw_http('[{"choices": []}]'),
    "json string": raw_http('"hello"'),
    "choice without message": raw_http('{"id": "x", "choices": [{"message": 5, "finish_reason": "stop"}]}'),
    "content not text": raw_http('{"id": "x", "choices": [{"message": {"role": "assistant", "content": [1]}}]}'),
    "truncated json": raw_http('{"id": "x", "choices": [{"mess'),
    "retry-after soon": raw_http('{"error": {"message": "slow down"}}', status=429, headers=[("Retry-After", "soon")]),
}


def run(server, **kwargs):
    options = dict(backend="openai", model="scripted", base_url=server.base_url, backoff=FAST, progress=False)
    options.update(kwargs)
    return generate_label_set(CLASSES, **options)


@pytest.mark.parametrize("name", list(MALFORMED))
def test_a_malformed_answer_is_a_failed_attempt_that_is_retried(name):
    with ScriptedLLMServer({"cat": [MALFORMED[name], valid(FIVE)]}) as server:
        label_set, meta = run(server)
        assert server.count("cat") == 2  # asked again after the bad answer
    assert label_set.root["cat"] == FIVE
    assert meta.model_extra["stats"]["retries"] == 1


@pytest.mark.parametrize("name", list(MALFORMED))
def test_a_server_that_only_answers_garbage_fails_that_class_by_name(name):
    with ScriptedLLMServer({"cat": [MALFORMED[name]] * 3}) as server:
        with pytest.raises(GenerationError) as caught:
            run(server, max_retries=2)
        assert server.count("cat") == 3
    assert set(caught.value.failed) == {"cat"}  # the other classes were answered and are not failures
    assert "gave up after 3 failed requests" in caught.value.failed["cat"]


@pytest.mark.parametrize("value", ["soon", "", "nan", "inf", "-inf", "Tue, 99 Foo 2024 99:99:99 GMT", "1e999", "\x00"])
def test_retry_after_that_is_not_a_number_or_date_gives_no_hint(value):
    assert parse_retry_after({"retry-after": value}) is None
    assert parse_retry_after({"retry-after-ms": value}) is None


def test_retry_after_still_honoured_when_readable():
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "1500"}) == 1.5


def _complete(server, timeout):
    backend = OpenAIBackend("scripted", base_url=server.base_url, timeout=timeout)
    try:
        return backend.complete([{"role": "user", "content": "Class: cat\nNumber of subtypes: 5"}],
                                schema=None, sampling=Sampling())
    finally:
        backend.close()


def test_a_trickling_server_times_out_as_one_request():
    """One byte every 0.2 s never stalls a read for 1 s; the whole request must still stop after about 1 s.

    The trickled reply takes about 60 s in all: before the fix the request waited for it and succeeded.
    """
    with ScriptedLLMServer({"cat": [trickle(0.2, valid(FIVE))]}) as server:
        started = time.monotonic()
        with pytest.raises(TransientError, match="timed out after 1 s"):
            _complete(server, timeout=1.0)
        elapsed = time.monotonic() - started
    assert elapsed < 10.0, f"the request ran {elapsed:.1f} s with --timeout 1"


def test_a_trickling_server_is_retried_then_the_class_succeeds():
    with ScriptedLLMServer({"cat": [trickle(0.2, valid(["x"] * 5)), valid(FIVE)]}) as server:
        started = time.monotonic()
        label_set, meta = run(server, timeout=1.0)
        elapsed = time.monotonic() - started
        assert server.count("cat") == 2
    assert label_set.root["cat"] == FIVE and meta.model_extra["stats"]["retries"] == 1
    assert elapsed < 15.0


def test_a_fast_answer_is_not_cut_by_the_deadline():
    with ScriptedLLMServer({"cat": [trickle(0.001, valid(FIVE))]}) as server:
        completion = _complete(server, timeout=5.0)
    assert FIVE[0] in completion.text


def test_an_answer_nested_thousands_deep_is_unusable_not_a_crash():
    """The answer text (not the HTTP body) is hostile: the class is asked again, naming the problem."""
    with ScriptedLLMServer({"cat": [raw("[" * 5000 + "]" * 5000), valid(FIVE)]}) as server:
        label_set, meta = run(server)
        repair = server.requests_for("cat")[1].messages[-1]["content"]
    assert label_set.root["cat"] == FIVE and meta.model_extra["stats"]["reasks"] == 1
    assert "nested too deeply" in repair
