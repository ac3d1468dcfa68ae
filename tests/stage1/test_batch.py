"""`--batch`: every class's first request in one Batch API job, through the real openai SDK and the scripted server."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from llmseg.io import read_jsonl
from llmseg.stage1.batch import BatchError, BatchOptions
from llmseg.stage1.generate import generate_label_set
from llmseg.stage1.testing.server import ScriptedLLMServer, generic_answer, http_error, raw, valid

QUICK = BatchOptions(poll_interval=0.01, max_interval=0.02, timeout=30)
FIVE = ["tabby cat", "Siamese cat", "black cat", "Persian cat", "kitten"]


def run(server, classes, fast, cache, **kwargs):
    options = dict(
        backend="openai", model="scripted", base_url=server.base_url, backoff=fast, progress=False, cache_path=cache,
        batch=True, batch_options=QUICK,
    )
    options.update(kwargs)
    return generate_label_set(classes, **options)


def _words(messages):
    return sum(len(str(m.get("content", "")).split()) for m in messages)


def test_one_batch_answers_every_class_and_usage_is_summed(classes, fast, tmp_path):
    prices = (2.5, 10.0)
    with ScriptedLLMServer({"cat": [valid(FIVE)]}, batch_polls=3) as server:
        label_set, meta = run(server, classes, fast, tmp_path / "log.jsonl", batch_options=BatchOptions(0.01, 0.02, 30, prices=prices))
        assert server.batches.created == 1
        job = next(iter(server.batches.jobs.values()))
        assert job.endpoint == "/v1/chat/completions" and job.completion_window == "24h"
        assert job.retrievals == 3  # completed on the third poll, then no more polling
        assert all(r.authorization is None for r in server.log)  # every answer came from the batch, none over HTTP
        assert sorted(server.classes_requested()) == sorted(classes)
        upload = server.files.get(job.input_file_id)
        lines = [json.loads(line) for line in upload.data.decode().splitlines()]
        assert upload.purpose == "batch" and len({line["custom_id"] for line in lines}) == len(classes)
        assert all(line["body"]["response_format"]["type"] == "json_schema" for line in lines)
        expected_prompt = sum(_words(r.messages) for r in server.log)
        expected_completion = sum(len(json.dumps({"subclasses": label_set.root[c]}).split()) for c in classes)
    assert label_set.root["cat"] == FIVE
    assert label_set.root["dog"] == generic_answer("dog", 5)
    report = meta.model_extra["batch"]
    assert report["answered"] == len(classes) and report["failed"] == {}
    assert (report["prompt_tokens"], report["completion_tokens"]) == (expected_prompt, expected_completion)
    assert report["cost_usd"] == pytest.approx(expected_prompt * 2.5e-6 + expected_completion * 10e-6)
    assert meta.model_extra["stats"]["requests"] == 0 and meta.model_extra["stats"]["cached"] == len(classes)
    assert meta.model_extra["stats"]["prompt_tokens"] == expected_prompt


def test_bad_batch_answers_get_the_ordinary_repair_turn_and_failed_lines_are_asked_again(classes, fast, tmp_path):
    scripts = {"cat": [raw("I cannot list cats."), valid(FIVE)], "dog": [http_error(500)]}
    with ScriptedLLMServer(scripts) as server:
        label_set, meta = run(server, classes, fast, tmp_path / "log.jsonl")
        cat = server.requests_for("cat")
        dog = server.requests_for("dog")
    assert [r.authorization is None for r in cat] == [True, False]  # batch line, then the repair turn over HTTP
    assert [m["role"] for m in cat[1].messages][-2:] == ["assistant", "user"]
    assert cat[1].messages[-2]["content"] == "I cannot list cats."
    assert "could not be used" in cat[1].messages[-1]["content"]
    assert [r.authorization is None for r in dog] == [True, False]  # error-file line, then one plain request
    assert len(dog[1].messages) == len(dog[0].messages)  # a first request again, not a repair
    assert label_set.root["cat"] == FIVE and label_set.root["dog"] == generic_answer("dog", 5)
    assert meta.per_class_attempts["cat"] == 2
    assert list(meta.model_extra["batch"]["failed"]) == ["dog"]
    assert meta.model_extra["stats"]["reasks"] == 1 and meta.model_extra["stats"]["requests"] == 2


def test_an_interrupted_run_resumes_the_same_batch_and_a_finished_one_is_not_resubmitted(classes, fast, tmp_path):
    cache = tmp_path / "log.jsonl"
    with ScriptedLLMServer(batch_polls=4) as server:
        with pytest.raises(BatchError, match="rerun the same command to resume"):
            run(server, classes, fast, cache, batch_options=BatchOptions(poll_interval=0.01, timeout=0))
        notes = [r for r in read_jsonl(cache) if r.get("event") == "batch_submitted"]
        assert len(notes) == 1 and server.batches.created == 1 and server.request_count == 0
        files_before = len(server.files)
        label_set, meta = run(server, classes, fast, cache)  # a fresh process would read the same log
        assert server.batches.created == 1  # the same batch, polled to its end
        assert meta.model_extra["batch"]["resumed"] and meta.model_extra["batch"]["batch_id"] == notes[0]["batch_id"]
        assert len(server.files) == files_before + 1  # only the output file was added, no new upload
        seen = server.request_count
        again, _ = run(server, classes, fast, cache)
        assert server.request_count == seen and server.batches.created == 1  # all from the log
    assert again.root == label_set.root


def test_a_failed_batch_is_replaced_on_rerun(classes, fast, tmp_path):
    cache = tmp_path / "log.jsonl"
    with ScriptedLLMServer(batch_polls=50) as server:
        with pytest.raises(BatchError):
            run(server, classes, fast, cache, batch_options=BatchOptions(poll_interval=0.01, timeout=0))
        next(iter(server.batches.jobs.values())).status = "expired"
        with pytest.raises(BatchError, match="ended with status 'expired'"):
            run(server, classes, fast, cache)
        server.batches.polls = 0
        label_set, _ = run(server, classes, fast, cache)
        assert server.batches.created == 2
    assert set(label_set.root) == set(classes)


def test_batch_needs_the_openai_backend_and_refuses_refresh(classes, fast, tmp_path):
    with ScriptedLLMServer() as server:
        with pytest.raises(BatchError, match="--refresh"):
            run(server, classes, fast, tmp_path / "log.jsonl", refresh=True)


def test_cli_batch_writes_the_label_set_and_prints_the_batch_line(tmp_path, classes, monkeypatch):
    from llmseg.cli import app

    root = tmp_path / "label_sets"
    (root / "toy").mkdir(parents=True)
    (root / "toy" / "classes.txt").write_text("\n".join(classes) + "\n", encoding="utf-8")
    monkeypatch.setenv("LLMSEG_LABEL_SETS", str(root))
    with ScriptedLLMServer(batch_polls=1) as server:
        args = ["subclasses", "toy", "--model", "m", "--base-url", server.base_url, "--quiet", "--batch",
                "--batch-poll-interval", "0.01", "--batch-prices", "0.15,0.6"]
        result = CliRunner().invoke(app, args, catch_exceptions=False)
        assert server.batches.created == 1
    assert result.exit_code == 0, result.output
    assert "batch batch_scripted_1:" in result.output and "$" in result.output
    assert (root / "toy" / "top5.m.json").is_file()


def test_a_trickled_poll_is_cut_at_the_timeout_and_polled_again(classes, fast, tmp_path):
    """A retrieve whose answer trickles one byte every 0.2 s (about two minutes for the whole reply) never
    trips the SDK's per-read timeout; --timeout bounds it in all, and the next poll gets the finished batch."""
    import time

    with ScriptedLLMServer({"cat": [valid(FIVE)]}, batch_polls=2) as server:
        server.batches.trickle_retrieves = 1
        started = time.monotonic()
        label_set, meta = run(server, classes, fast, tmp_path / "log.jsonl", timeout=1.0)
        elapsed = time.monotonic() - started
        job = next(iter(server.batches.jobs.values()))
        assert job.retrievals == 2 and server.batches.trickle_retrieves == 0  # the cut poll, then the finished one
    assert elapsed < 30, f"the trickled poll held the run {elapsed:.0f} s with --timeout 1"
    assert label_set.root["cat"] == FIVE and meta.model_extra["batch"]["answered"] == len(classes)
    assert meta.model_extra["batch"]["polls"] == 2  # the cut poll counts as one


def test_a_batch_answer_is_recorded_exactly_like_one_asked_over_http(classes, fast, tmp_path):
    """Both paths build their cache records with `AnswerLog.record`: same key, same fields, same stored conversation."""
    for cache, batch in (("batch.jsonl", True), ("http.jsonl", False)):
        with ScriptedLLMServer({"cat": [valid(FIVE)]}) as server:
            run(server, classes, fast, tmp_path / cache, batch=batch)
    answers = {
        cache: {r["class"]: r for r in read_jsonl(tmp_path / cache) if r.get("kind") == "answer"}
        for cache in ("batch.jsonl", "http.jsonl")
    }
    batch, direct = answers["batch.jsonl"], answers["http.jsonl"]
    assert sorted(batch) == sorted(direct) == sorted(classes)

    def without_meta(record):
        return {k: v for k, v in record.items() if k not in ("meta", "time")}

    for name in classes:
        assert batch[name]["meta"]["batch_id"] and "batch_id" not in direct[name]["meta"]
        assert without_meta(batch[name]) == without_meta(direct[name])
