"""Cache and resume: answers are replayed by key; a run killed with SIGKILL resumes with only the missing classes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from llmseg.io import read_jsonl
from llmseg.labelset import load_label_set, load_meta
from llmseg.stage1.cache import AnswerCache
from llmseg.stage1.generate import generate_label_set
from llmseg.stage1.testing.server import ScriptedLLMServer, raw


def run(server, classes, fast, cache, **kwargs):
    options = dict(backend="openai", model="scripted", base_url=server.base_url, backoff=fast, progress=False, cache_path=cache)
    options.update(kwargs)
    return generate_label_set(classes, **options)


def test_rerun_replays_the_cache_and_changed_settings_miss_it(classes, fast, tmp_path):
    cache = tmp_path / "log.jsonl"
    with ScriptedLLMServer({"cat": [raw("oops")]}) as server:
        first, _ = run(server, classes, fast, cache)
        assert server.request_count == len(classes) + 1
    with ScriptedLLMServer() as server:
        again, meta = run(server, classes, fast, cache)
        assert server.request_count == 0  # everything, including the re-asked chain for 'cat', from the log
        assert meta.model_extra["stats"]["cached"] == len(classes) + 1
        assert again.root == first.root
        run(server, classes, fast, cache, refresh=True)
        assert server.request_count == len(classes)
        run(server, classes, fast, cache, seed=1)
        assert server.request_count == 2 * len(classes)  # the seed is part of the key
        run(server, classes, fast, cache, prompt="subclasses.chils.v1")
        assert server.request_count == 3 * len(classes)  # so is the prompt


def test_truncated_last_line_is_skipped(classes, fast, tmp_path):
    cache = tmp_path / "log.jsonl"
    with ScriptedLLMServer() as server:
        run(server, classes, fast, cache)
    with open(cache, "a", encoding="utf-8") as fh:
        fh.write('{"kind": "answer", "key": "abc", "text": "half a li')  # what a kill mid-write leaves
    assert len(AnswerCache(cache)) == len(classes)
    with ScriptedLLMServer() as server:
        run(server, classes, fast, cache)
        assert server.request_count == 0


def test_log_records_request_metadata(classes, fast, tmp_path):
    cache = tmp_path / "log.jsonl"
    with ScriptedLLMServer() as server:
        run(server, classes, fast, cache)
    answers = [r for r in read_jsonl(cache) if r["kind"] == "answer"]
    assert len(answers) == len(classes) and len({r["key"] for r in answers}) == len(classes)
    meta = answers[0]["meta"]
    assert meta["request_id"].startswith("req_scripted_") and meta["system_fingerprint"] == "fp_llmseg_scripted"
    assert meta["finish_reason"] == "stop" and meta["usage"]["total_tokens"] > 0
    assert answers[0]["sampling"]["temperature"] == 0.0 and answers[0]["prompt_sha256"]


def _answered(cache) -> set[str]:
    return {r["class"] for r in read_jsonl(cache) if r.get("kind") == "answer"}


def test_sigkill_mid_run_then_resume_asks_only_the_missing_classes(tmp_path):
    classes = [f"class {i:02d}" for i in range(12)]
    classes_file = tmp_path / "toy" / "classes.txt"
    classes_file.parent.mkdir()
    classes_file.write_text("\n".join(classes) + "\n", encoding="utf-8")
    out = tmp_path / "toy" / "top5.scripted.json"
    cache = tmp_path / "toy" / ".cache" / "top5.scripted.jsonl"
    with ScriptedLLMServer(latency=0.25) as server:
        command = [
            sys.executable, "-c", "from llmseg.cli import main; main()",
            "subclasses", "toy", "--classes-file", str(classes_file), "--model", "scripted",
            "--base-url", server.base_url, "--concurrency", "1", "--quiet", "--out", str(out),
        ]  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while len(_answered(cache)) < 4:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the run never logged 4 answers"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        assert process.returncode == -signal.SIGKILL
        first_run = len(server.classes_requested())  # a request killed before its body was read names no class
        done = _answered(cache)
        assert 4 <= len(done) < len(classes)
        assert not out.exists()  # written only when complete

        server.latency = 0.0
        resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert resumed.returncode == 0, resumed.stderr
        asked_again = server.classes_requested()[first_run:]
    missing = [c for c in classes if c not in done]
    assert asked_again == missing  # only the missing classes, each once, in order (concurrency 1)
    label_set = load_label_set(out, classes)
    assert label_set.classes == classes
    meta = load_meta(out)
    assert meta.model_extra["stats"]["cached"] == len(done)
    assert meta.model_extra["stats"]["requests"] == len(missing)
    assert "12 classes" in resumed.stdout and f"({len(done)} answers from cache)" in resumed.stdout
