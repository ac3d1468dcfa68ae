"""Issue 11 (stage one): an unreachable server, a missing model folder and subclasses shared by classes fail fast."""

from __future__ import annotations

import socket

import pytest
from typer.testing import CliRunner

from llmseg.cli import app
from llmseg.stage1.backends.base import FatalBackendError, Sampling, TransientError
from llmseg.stage1.backends.hf_local import check_model_source
from llmseg.stage1.backends.openai_compat import OpenAIBackend
from llmseg.stage1.generate import GenerationError, find_clashes, generate_label_set
from llmseg.stage1.testing.server import ScriptedLLMServer, valid

SAME = ["red one", "blue one", "big one", "small one", "old one"]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed once the with block ends: connections are refused


def test_cli_against_a_closed_port_stops_at_once_naming_the_url(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    out = tmp_path / "ls.json"
    res = CliRunner().invoke(app, ["subclasses", "pascal_voc", "--base-url", url, "--model", "m", "--out", str(out)])
    assert res.exit_code != 0
    assert f"cannot connect to {url}" in res.output and "--base-url" in res.output
    assert not out.exists()


def test_a_connection_lost_after_the_server_answered_is_transient():
    backend = OpenAIBackend("m", base_url=f"http://127.0.0.1:{_closed_port()}/v1")
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(FatalBackendError, match="cannot connect"):
        backend.complete(messages, schema=None, sampling=Sampling())
    backend.answered = True  # as after a first answer: now a dropped connection is retried
    with pytest.raises(TransientError, match="connection error"):
        backend.complete(messages, schema=None, sampling=Sampling())


def test_hf_model_folder_missing_or_empty(tmp_path):
    with pytest.raises(FatalBackendError, match=f"no model folder at {tmp_path / 'X'}"):
        check_model_source(str(tmp_path / "X"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FatalBackendError, match=f"no config.json in {tmp_path / 'empty'}"):
        check_model_source(str(tmp_path / "empty"))
    with pytest.raises(FatalBackendError, match="not in the Hugging Face cache"):  # HF_HUB_OFFLINE=1 (conftest)
        check_model_source("nobody/no-such-model-xyz")


def test_find_clashes_is_case_insensitive():
    assert find_clashes({"a": ["X", "y"], "b": ["x", "z"], "c": ["z"]}) == {"x": ["a", "b"], "z": ["b", "c"]}


def test_shared_subclasses_are_asked_again_naming_the_clash(classes, fast):
    fixed = ["cat toy", "cat bed", "cat tree", "cat bowl", "cat door"]
    with ScriptedLLMServer({"cat": [valid(SAME), valid(fixed)], "dog": [valid(SAME)]}) as server:
        label_set, _ = generate_label_set(classes, backend="openai", model="scripted", base_url=server.base_url,
                                          backoff=fast, progress=False)
        repairs = [r for r in server.log if len(r.body["messages"]) > 2]
    assert label_set.root["cat"] == fixed and not find_clashes(label_set.root)
    assert repairs and all("also given for" in r.body["messages"][-1]["content"] for r in repairs)
    assert any("'red one'" in r.body["messages"][-1]["content"] for r in repairs)


def test_a_model_that_answers_every_class_alike_fails_naming_the_classes(classes, fast):
    scripts = {c: [valid(SAME)] * 5 for c in classes}
    with ScriptedLLMServer(scripts) as server:
        with pytest.raises(GenerationError) as info:
            generate_label_set(classes, backend="openai", model="scripted", base_url=server.base_url,
                               backoff=fast, progress=False)
    assert set(info.value.failed) == set(classes)
    assert "'red one' given for" in str(info.value) and "mock" in str(info.value)


def test_shared_subclasses_can_be_allowed_explicitly(classes, fast):
    with ScriptedLLMServer({c: [valid(SAME)] for c in classes}) as server:
        label_set, _ = generate_label_set(classes, backend="openai", model="scripted", base_url=server.base_url,
                                          backoff=fast, progress=False, allow_shared=True)
        assert server.request_count == len(classes)  # nobody asked again
    assert all(label_set.root[c] == SAME for c in classes)
