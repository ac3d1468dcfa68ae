"""Every robustness rule of stage one, through the real openai SDK over HTTP to the scripted server."""

from __future__ import annotations

import json

import pytest

from llmseg.io import read_jsonl
from llmseg.labelset import validate_label_set
from llmseg.stage1.backends.base import FatalBackendError
from llmseg.stage1.backends.openai_compat import PLACEHOLDER_KEY
from llmseg.stage1.generate import GenerationError, generate_label_set
from llmseg.stage1.testing.server import (
    FINGERPRINT,
    ScriptedLLMServer,
    duplicates,
    http_error,
    prose,
    rate_limited,
    raw,
    server_error,
    slow,
    valid,
    wrong_count,
)

FIVE = ["tabby cat", "Siamese cat", "black cat", "Persian cat", "kitten"]


def run(server, classes, fast, **kwargs):
    options = dict(backend="openai", model="scripted", base_url=server.base_url, backoff=fast, progress=False)
    options.update(kwargs)
    return generate_label_set(classes, **options)


def test_valid_answers_give_a_valid_label_set_with_provenance(classes, fast):
    with ScriptedLLMServer({"cat": [valid(FIVE)]}) as server:
        label_set, meta = run(server, classes, fast, dataset_name="toy")
        assert server.request_count == len(classes)
        first = server.log[0]
    assert label_set.classes == classes
    assert label_set.root["cat"] == FIVE
    assert label_set.root["dog"] == [f"dog variant {i}" for i in range(1, 6)]
    assert not validate_label_set(label_set.root, classes).errors
    # structured output, greedy, seeded, placeholder key for a local server
    assert first.response_format == "json_schema"
    assert first.body["temperature"] == 0 and first.body["seed"] == 0 and first.body["model"] == "scripted"
    assert first.authorization == f"Bearer {PLACEHOLDER_KEY}"
    assert meta.generator == "openai" and meta.model == "scripted" and meta.k == 5 and meta.dataset == "toy"
    assert meta.prompt_id == "subclasses.visual.v1" and len(meta.prompt_sha256) == 64
    extra = meta.model_extra
    assert extra["structured_output"] == "json_schema" and extra["system_fingerprints"] == [FINGERPRINT]
    assert extra["stats"]["requests"] == len(classes) and extra["stats"]["prompt_tokens"] > 0
    assert meta.per_class_attempts == {c: 1 for c in classes}


def test_prose_wrapped_json_is_accepted(classes, fast):
    with ScriptedLLMServer({"cat": [prose(FIVE)]}) as server:
        label_set, _ = run(server, classes, fast)
        assert server.count("cat") == 1
    assert label_set.root["cat"] == FIVE


@pytest.mark.parametrize(
    "bad, problem",
    [
        (wrong_count(3), "3 usable distinct subclasses instead of exactly 5"),
        (wrong_count(7), "7 usable distinct subclasses instead of exactly 5"),
        (duplicates(["a", "b", "c"]), "duplicate"),
        (raw("I cannot answer in JSON, sorry."), "no complete JSON"),
        (raw('{"subclasses": ["tabby", "Siam', finish_reason="length"), "cut off"),
        (valid(["dog", "tabby", "calico", "sphynx", "manx"]), "name of another class"),
        (valid(["", " ", "tabby", "calico", "sphynx"]), "empty entr"),
    ],
)
def test_unusable_answer_is_reasked_with_the_problem_named(classes, fast, bad, problem):
    with ScriptedLLMServer({"cat": [bad, valid(FIVE)]}) as server:
        label_set, meta = run(server, classes, fast)
        asked = server.requests_for("cat")
    assert label_set.root["cat"] == FIVE  # the second answer, nothing invented or trimmed
    assert len(asked) == 2 and meta.per_class_attempts["cat"] == 2
    follow_up = asked[1].messages
    assert follow_up[:2] == asked[0].messages  # same conversation...
    assert follow_up[2]["role"] == "assistant"  # ...with the bad answer...
    assert follow_up[3]["role"] == "user" and problem in follow_up[3]["content"]  # ...and what was wrong with it
    assert meta.model_extra["stats"]["reasks"] == 1


def test_answer_with_a_dropped_duplicate_but_k_left_is_used(classes, fast):
    with ScriptedLLMServer({"cat": [valid([*FIVE, "Tabby  Cat"])]}) as server:
        label_set, _ = run(server, classes, fast)
        assert server.count("cat") == 1
    assert label_set.root["cat"] == FIVE


def test_class_never_answered_fails_by_name_after_the_others_are_cached(classes, fast, tmp_path):
    cache = tmp_path / "log.jsonl"
    short = [wrong_count(4) for _ in range(3)]
    with ScriptedLLMServer({"cat": short, "tree": [raw("nope")] * 3}) as server:
        with pytest.raises(GenerationError) as info:
            run(server, classes, fast, max_retries=2, cache_path=cache)
        assert server.count("cat") == 3 and server.count("tree") == 3  # 1 + max_retries each
    error = info.value
    assert set(error.failed) == {"cat", "tree"}
    assert "'cat'" in str(error) and "'tree'" in str(error) and "2 of 5 classes" in str(error)
    assert "4 usable distinct subclasses instead of exactly 5" in error.failed["cat"]
    assert str(cache) in str(error)
    answered = {r["class"] for r in read_jsonl(cache) if r["kind"] == "answer"}
    assert answered == set(classes)  # every answer, good or bad, was logged


def test_429_honours_retry_after(classes, fast):
    with ScriptedLLMServer({"cat": [rate_limited(0.6), valid(FIVE)]}) as server:
        label_set, meta = run(server, classes, fast, concurrency=2)
        asked = server.requests_for("cat")
    assert [r.status for r in asked] == [429, 200]
    # the backoff base is 10 ms: only the Retry-After header explains a wait this long
    assert asked[1].time - asked[0].time >= 0.55
    assert label_set.root["cat"] == FIVE and meta.model_extra["stats"]["retries"] == 1


@pytest.mark.parametrize("failure", [server_error(500), server_error(503), http_error(408)])
def test_5xx_and_408_are_retried(classes, fast, failure):
    with ScriptedLLMServer({"dog": [failure, failure, valid(FIVE)]}) as server:
        label_set, meta = run(server, classes, fast)
        assert [r.status for r in server.requests_for("dog")] == [failure.status, failure.status, 200]
    assert label_set.root["dog"] == FIVE and meta.model_extra["stats"]["retries"] == 2


def test_transport_retries_are_bounded(classes, fast):
    with ScriptedLLMServer({"dog": [server_error()] * 10}) as server:
        with pytest.raises(GenerationError) as info:
            run(server, classes, fast, max_retries=2)
        assert server.count("dog") == 3
    assert list(info.value.failed) == ["dog"] and "HTTP 500" in info.value.failed["dog"]


def test_timeout_is_retried(classes, fast):
    with ScriptedLLMServer({"car": [slow(3.0), valid(FIVE)]}) as server:
        label_set, meta = run(server, classes, fast, timeout=0.5)
        assert server.count("car") == 2
    assert label_set.root["car"] == FIVE and meta.model_extra["stats"]["retries"] == 1


def test_connection_errors_are_retried_then_fail_every_class(classes, fast):
    with ScriptedLLMServer() as server:
        url = server.base_url
    with pytest.raises(GenerationError) as info:  # nothing listens there any more
        generate_label_set(classes, backend="openai", model="m", base_url=url, backoff=fast, max_retries=1, progress=False)
    assert set(info.value.failed) == set(classes)
    # a server that never answered: the first refused connection stops the run, naming the URL (no retries)
    assert all(f"cannot connect to {url}" in reason for reason in info.value.failed.values())


def test_json_schema_rejection_falls_back_to_text_once(classes, fast, tmp_path):
    cache = tmp_path / "log.jsonl"
    with ScriptedLLMServer({"cat": [prose(FIVE)]}, reject_json_schema=True) as server:
        label_set, meta = run(server, classes, fast, concurrency=1, cache_path=cache)
        formats = [r.response_format for r in server.log]
        statuses = [r.status for r in server.log]
    assert formats[0] == "json_schema" and statuses[0] == 400
    assert formats[1:] == [None] * len(classes) and statuses[1:] == [200] * len(classes)  # remembered for the run
    assert label_set.root["cat"] == FIVE and meta.model_extra["structured_output"] == "text"
    notes = [r for r in read_jsonl(cache) if r["kind"] == "note"]
    assert len(notes) == 1 and notes[0]["event"] == "json_schema_rejected"
    # a later run against the same server starts in text mode and asks nothing new (all cached)
    with ScriptedLLMServer(reject_json_schema=True) as server:
        run(server, classes, fast, concurrency=1, cache_path=cache)
        assert server.request_count == 0


def test_other_4xx_fails_the_class_without_retrying(classes, fast):
    with ScriptedLLMServer({"tree": [http_error(400, "maximum context length exceeded")]}) as server:
        with pytest.raises(GenerationError) as info:
            run(server, classes, fast)
        assert server.count("tree") == 1
    assert "maximum context length" in info.value.failed["tree"]


def test_bad_key_stops_the_whole_run(classes, fast):
    steps = [http_error(401, "Incorrect API key provided")]
    with ScriptedLLMServer({c: list(steps) for c in classes}) as server:
        with pytest.raises(GenerationError) as info:
            run(server, classes, fast, concurrency=1)
        assert server.request_count == 1  # no point asking the other classes
    assert info.value.aborted and "check the API key" in info.value.aborted
    assert set(info.value.failed) == set(classes)


def test_missing_key_for_openai_is_a_clear_error(classes):
    with pytest.raises(FatalBackendError, match="OPENAI_API_KEY"):
        generate_label_set(classes, backend="openai", model="gpt-4o-mini", progress=False)


def test_include_class_name_is_added_after_the_llm(classes, fast):
    with ScriptedLLMServer({"cat": [valid(FIVE)], "dog": [valid(["dog", "poodle", "beagle", "pug", "husky"])]}) as server:
        label_set, meta = run(server, classes, fast, include_class_name=True)
        prompts = [m["content"] for r in server.log for m in r.messages]
    assert label_set.root["cat"] == ["cat", *FIVE]
    assert label_set.root["dog"] == ["dog", "poodle", "beagle", "pug", "husky"]  # already there: not twice
    assert meta.model_extra["include_class_name"] is True
    assert not any("include" in p.lower() for p in prompts)  # not the LLM's choice
    assert not validate_label_set(label_set.root, classes).errors


def test_other_class_names_are_in_the_prompt_unless_disabled(classes, fast):
    with ScriptedLLMServer() as server:
        run(server, classes, fast, concurrency=1)
        with_others = server.requests_for("cat")[0].messages[-1]["content"]
    with ScriptedLLMServer() as server:
        run(server, classes, fast, concurrency=1, other_classes=False)
        without = server.requests_for("cat")[0].messages[-1]["content"]
    assert "background, dog, car, tree" in with_others
    assert "dog" not in without


def test_rpm_spaces_request_starts(classes, fast, monkeypatch):
    """The limiter's schedule on a fake clock (no wall-clock timing): starts exactly 60/rpm apart, across threads."""
    import threading

    from llmseg.stage1 import generate, pacing

    class Clock:
        def __init__(self):
            self.now, self.lock, self.starts = 100.0, threading.Lock(), []

        def monotonic(self):
            with self.lock:
                return self.now

        def sleep(self, seconds):
            with self.lock:
                self.starts.append(self.now + seconds)  # when this caller may start

    clock = Clock()
    monkeypatch.setattr(pacing, "time", clock)  # the limiter lives in `pacing` (generate re-exports it)
    limiter = generate.RateLimiter(600)  # one start every 0.1 s
    threads = [threading.Thread(target=limiter.acquire) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(round(t - 100.0, 9) for t in clock.starts) == [0.1, 0.2, 0.3, 0.4]  # the first starts at once
    monkeypatch.undo()
    with ScriptedLLMServer() as server:  # and the run really goes through the limiter
        calls = []
        real = generate.RateLimiter.acquire
        monkeypatch.setattr(generate.RateLimiter, "acquire", lambda self: (calls.append(self.interval), real(self))[1])
        run(server, classes, fast, concurrency=5, rpm=6000)
        assert len(calls) == len(server.log) and set(calls) == {0.01}


def test_api_key_never_reaches_a_file(classes, fast, tmp_path):
    sentinel = "sk-SENTINEL-9f8e7d6c5b4a"
    cache = tmp_path / "log.jsonl"
    echo = http_error(400, f"Incorrect request for key {sentinel}")  # a server echoing the key
    with ScriptedLLMServer({"tree": [echo]}) as server:
        with pytest.raises(GenerationError) as info:
            run(server, classes, fast, api_key=sentinel, cache_path=cache)
        assert server.log[0].authorization == f"Bearer {sentinel}"  # it was really used
    assert sentinel not in str(info.value)
    text = cache.read_text(encoding="utf-8")
    assert sentinel not in text and "***" in text
    assert json.loads(text.splitlines()[0])  # the log is real JSON lines


def test_reasoning_model_parameter_errors_are_adapted_to(classes, fast):
    steps = [
        http_error(400, "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead."),
        http_error(400, "Unsupported value: 'temperature' does not support 0 with this model. Only the default (1) value is supported."),
        valid(FIVE),
    ]
    with ScriptedLLMServer({"background": steps}) as server:
        label_set, meta = run(server, classes, fast, concurrency=1)
        bodies = [r.body for r in server.log]
    assert label_set.root["background"] == FIVE
    assert "max_tokens" in bodies[0] and "max_completion_tokens" in bodies[1] and "temperature" in bodies[1]
    assert all("max_tokens" not in b and "temperature" not in b for b in bodies[2:])
    assert meta.model_extra["backend"]["adaptations"] == ["max_completion_tokens", "default-temperature"]
    assert meta.model_extra["stats"]["retries"] == 0


def test_repair_temperature_samples_the_re_asks_seeded_per_try_and_replays_from_the_cache(tmp_path, fast):
    """A greedy model repeats its rejected answer; --repair-temperature sends the re-asks sampled."""
    from llmseg.stage1.generate import generate_label_set
    from llmseg.stage1.testing.server import ScriptedLLMServer, valid

    script = {"cat": [valid(["tabby", "dog"]), valid(["tabby", "siamese"])]}  # 'dog' is another class
    cache = tmp_path / "log.jsonl"
    with ScriptedLLMServer(script) as server:
        label_set, meta = generate_label_set(
            ["cat", "dog"], backend="openai", model="m", base_url=server.base_url, k=2, temperature=0.0, seed=7,
            repair_temperature=0.8, cache_path=cache, backoff=fast, progress=False,
        )
        sent = [(r.body.get("temperature"), r.body.get("seed")) for r in server.log if r.class_name == "cat"]
    assert label_set.root["cat"] == ["tabby", "siamese"] and meta.model_extra["repair_temperature"] == 0.8
    assert sent == [(0.0, 7), (0.8, 8)]  # first answer as asked; the repair sampled, seed + try number
    with ScriptedLLMServer({}) as server:  # a rerun replays both answers from the log: no request at all
        again, _ = generate_label_set(
            ["cat", "dog"], backend="openai", model="m", base_url=server.base_url, k=2, temperature=0.0, seed=7,
            repair_temperature=0.8, cache_path=cache, backoff=fast, progress=False,
        )
        assert again.root == label_set.root and not [r for r in server.log if r.class_name == "cat"]
