"""Item 20: an answer's size is capped, and each answer is stored once (re-asks refer to earlier answers by key)."""

from __future__ import annotations

import pytest

from llmseg.io import read_jsonl
from llmseg.stage1.cache import AnswerCache, request_key
from llmseg.stage1.generate import GenerationError, generate_label_set
from llmseg.stage1.testing.server import ScriptedLLMServer, raw, valid

CLASSES = ["background", "cat", "dog"]
CAT = ["tabby cat", "Siamese cat", "black cat", "Persian cat", "kitten"]


def run(server, fast, cache, **kwargs):
    options = dict(backend="openai", model="scripted", base_url=server.base_url, backoff=fast, progress=False, cache_path=cache)
    return generate_label_set(CLASSES, **{**options, **kwargs})


def test_reasks_store_earlier_answers_by_key_and_keys_stay_those_of_the_full_messages(fast, tmp_path):
    cache = tmp_path / "log.jsonl"
    big = [raw(f"{letter} " * 30_000) for letter in "xyz"]  # three unusable 60 kB answers (under the cap), then a good one
    with ScriptedLLMServer({"cat": [*big, valid(CAT)]}) as server:
        label_set, _ = run(server, fast, cache)
        sent = [r.messages for r in server.requests_for("cat")]
    assert label_set.root["cat"] == CAT
    assert len(sent) == 4 and sum(len(str(m)) for m in sent[-1]) > 180_000  # the server did get them by value
    # by value the log held each answer once more per later try: 60 kB * (3 + 2 + 1) on top of the 180 kB
    assert cache.stat().st_size < 1.2 * 180_000
    store = AnswerCache(cache)
    cat = [r for r in read_jsonl(cache) if r["kind"] == "answer" and r["class"] == "cat"]
    assert [sum("answer_ref" in m for m in r["messages"]) for r in cat] == [0, 1, 2, 3]
    for record, messages in zip(cat, sent, strict=True):
        assert store.expand(record["messages"]) == messages
        key = request_key(backend="openai", model="scripted", prompt_sha256=record["prompt_sha256"], messages=messages,
                          schema=None if not record["structured"] else _schema(), sampling=record["sampling"])
        assert key == record["key"]  # computed on the full conversation, as caches written before
    with ScriptedLLMServer() as server:  # a rerun replays every try from the log
        again, _ = run(server, fast, cache)
        assert server.request_count == 0
    assert again.root == label_set.root


def _schema():
    from llmseg.stage1.parse import answer_schema

    return answer_schema()


def test_an_answer_over_the_cap_is_an_unusable_answer_that_names_the_cap_and_is_not_stored(fast, tmp_path):
    cache = tmp_path / "log.jsonl"
    with ScriptedLLMServer({"cat": [raw("meow " * 40_000), valid(CAT)]}) as server:
        label_set, meta = run(server, fast, cache)
        repair = server.requests_for("cat")[1].messages
    assert label_set.root["cat"] == CAT and meta.per_class_attempts["cat"] == 2
    assert "over the answer size cap of 65536 characters" in repair[-1]["content"]
    assert repair[-2]["role"] == "assistant" and len(repair[-2]["content"]) < 200  # a stand-in, not 200 kB again
    assert cache.stat().st_size < 30_000
    over = [r for r in read_jsonl(cache) if r.get("oversize")]
    assert [(r["class"], r["oversize"], r["text"]) for r in over] == [("cat", 200_000, "")]
    with ScriptedLLMServer() as server:  # the rerun builds the same conversation and finds both tries cached
        run(server, fast, cache)
        assert server.request_count == 0


def test_a_class_whose_every_answer_is_over_the_cap_fails_naming_the_cap(fast, tmp_path):
    with ScriptedLLMServer({"cat": [raw("a" * 2_000)] * 3}) as server, pytest.raises(GenerationError) as caught:
        run(server, fast, tmp_path / "log.jsonl", max_answer_chars=1_000, max_retries=2)
    assert list(caught.value.failed) == ["cat"]
    assert "over the answer size cap of 1000 characters" in caught.value.failed["cat"]


def test_a_batch_answer_over_the_cap_is_stored_as_its_size_only(fast, tmp_path):
    from llmseg.stage1.batch import BatchOptions

    cache = tmp_path / "log.jsonl"
    with ScriptedLLMServer({"cat": [raw("purr " * 1_000), valid(CAT)]}) as server:
        label_set, _ = run(server, fast, cache, max_answer_chars=1_000, batch=True,
                           batch_options=BatchOptions(poll_interval=0.01, max_interval=0.02, timeout=30))
    assert label_set.root["cat"] == CAT
    first = next(r for r in read_jsonl(cache) if r["kind"] == "answer" and r["class"] == "cat")
    assert (first["text"], first["oversize"], first["meta"]["batch_id"]) == ("", 5_000, "batch_scripted_1")


def test_the_cli_takes_the_cap_and_refuses_a_cap_below_one(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from llmseg.cli import app

    root = tmp_path / "label_sets"
    (root / "toy").mkdir(parents=True)
    (root / "toy" / "classes.txt").write_text("\n".join(CLASSES) + "\n", encoding="utf-8")
    monkeypatch.setenv("LLMSEG_LABEL_SETS", str(root))
    runner = CliRunner()
    with ScriptedLLMServer({"cat": [raw("x" * 300), valid(CAT)]}) as server:
        base = ["subclasses", "toy", "--base-url", server.base_url, "--quiet", "--backoff-base", "0.01"]
        refused = runner.invoke(app, [*base, "--max-answer-chars", "0", "--out", str(tmp_path / "a.json")])
        done = runner.invoke(app, [*base, "--max-answer-chars", "200", "--out", str(tmp_path / "b.json")])
        repair = server.requests_for("cat")[-1].messages[-1]["content"]
    assert refused.exit_code == 2 and "max_answer_chars must be at least 1" in refused.output
    assert done.exit_code == 0, done.output
    assert "over the answer size cap of 200 characters" in repair
