"""Item 6: a batch output file with bad lines, or a batch that expires half done, keeps every good answer.

Through the real openai SDK against the scripted server's Files and Batches API; the server's
`rewrite_output` hook serves a crafted output file and `expire_after` ends a batch early.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from llmseg.cli import app
from llmseg.io import read_jsonl
from llmseg.stage1.batch import BatchError, BatchOptions
from llmseg.stage1.generate import generate_label_set
from llmseg.stage1.testing.server import ScriptedLLMServer, generic_answer

QUICK = BatchOptions(poll_interval=0.01, max_interval=0.02, timeout=30)
CLASSES = ["background", "cat", "dog", "car", "tree", "bus"]


def run(server, classes, fast, cache, **kwargs):
    return generate_label_set(classes, backend="openai", model="scripted", base_url=server.base_url, backoff=fast,
                              progress=False, cache_path=cache, batch=True, batch_options=QUICK, **kwargs)


def _spoil(data: bytes) -> bytes:
    """Keep line 1 (background); line 2 not JSON, 3 a JSON list, 4 a string response, 5 a string body, 6 cut short."""
    lines = data.decode().splitlines()
    by_id = {json.loads(line)["custom_id"]: line for line in lines}
    string_body = json.loads(by_id["4"])
    string_body["response"]["body"] = "<html>oops</html>"
    return "\n".join([
        by_id["0"],
        by_id["1"][: len(by_id["1"]) // 2] + " garbage",
        "[1, 2, 3]",
        json.dumps({"custom_id": "3", "response": "oops", "error": None}),
        json.dumps(string_body),
        by_id["5"][:-7],  # the tail of the file, cut short
    ]).encode()


def test_bad_output_lines_are_reported_and_only_their_classes_asked_again(fast, tmp_path):
    cache = tmp_path / "log.jsonl"
    with ScriptedLLMServer() as server:
        server.batches.rewrite_output = _spoil
        label_set, meta = run(server, CLASSES, fast, cache)
        over_http = [r.class_name for r in server.log if r.authorization is not None]
    assert sorted(over_http) == sorted(CLASSES[1:])  # the good line's class is not paid for again
    assert label_set.root == {c: generic_answer(c, 5) for c in CLASSES}
    report = meta.model_extra["batch"]
    assert report["answered"] == 1 and sorted(report["failed"]) == sorted(CLASSES[1:])
    assert report["bad_lines"] == [
        "output file line 2: not JSON (cut short?)",
        "output file line 3: not a JSON object",
        "output file line 4: 'response' is str, not an object",
        "output file line 5: 'response.body' is str, not an object",
        "output file line 6: not JSON (cut short?)",
    ]
    batch_answers = [r for r in read_jsonl(cache) if r["kind"] == "answer" and r["meta"].get("batch_id")]
    assert [r["class"] for r in batch_answers] == ["background"]
    # a rerun neither crashes on the same file nor asks anything again
    with ScriptedLLMServer() as server:
        again, _ = run(server, CLASSES, fast, cache)
        assert server.request_count == 0 and server.batches.created == 0
    assert again.root == label_set.root


def test_an_expired_batch_keeps_its_answers_and_the_rerun_pays_only_for_the_missing_one(fast, tmp_path):
    classes = CLASSES[:3]
    cache = tmp_path / "log.jsonl"
    with ScriptedLLMServer() as server:
        server.batches.expire_after = 2
        with pytest.raises(BatchError, match="ended with status 'expired'") as caught:
            run(server, classes, fast, cache)
        assert "2 answers it gave are kept in the cache" in str(caught.value) and "for the other 1" in str(caught.value)
        assert {r["class"] for r in read_jsonl(cache) if r["kind"] == "answer"} == set(classes[:2])
        first = server.request_count
        server.batches.expire_after = None
        label_set, meta = run(server, classes, fast, cache)
        second_job = list(server.batches.jobs.values())[-1]
        second_input = server.files.get(second_job.input_file_id).data.decode().splitlines()
        assert server.request_count - first == 1  # one batch line: only the missing class is paid for
    assert first == 2
    assert [json.loads(line)["custom_id"] for line in second_input] == ["2"]
    assert label_set.root == {c: generic_answer(c, 5) for c in classes}
    assert meta.model_extra["batch"]["answered"] == 1


def test_the_cli_names_an_expired_batch_without_a_traceback(tmp_path, monkeypatch):
    root = tmp_path / "label_sets"
    (root / "toy").mkdir(parents=True)
    (root / "toy" / "classes.txt").write_text("\n".join(CLASSES[:3]) + "\n", encoding="utf-8")
    monkeypatch.setenv("LLMSEG_LABEL_SETS", str(root))
    with ScriptedLLMServer() as server:
        server.batches.expire_after = 1
        result = CliRunner().invoke(app, ["subclasses", "toy", "--base-url", server.base_url, "--quiet", "--batch",
                                          "--batch-poll-interval", "0.01", "--out", str(tmp_path / "x.json")])
    assert result.exit_code == 2, result.output  # a named error (LlmsegError), not a traceback (exit 1)
    assert "error:" in result.output and "expired" in result.output and "1 answers it gave are kept" in " ".join(result.output.split())
