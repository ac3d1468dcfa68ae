"""The scripted server on its own: class matching, scripts in order, the default generator, errors."""

from __future__ import annotations

import json

import pytest

from llmseg.stage1.generate import generate_label_set
from llmseg.stage1.testing.server import ScriptedLLMServer, http_error, raw, valid


def _client(server):
    from openai import OpenAI

    return OpenAI(api_key="k", base_url=server.base_url, max_retries=0)


def _ask(client, text, **kwargs):
    return client.chat.completions.create(model="m", messages=[{"role": "user", "content": text}], **kwargs)


def test_scripts_are_keyed_by_the_class_line_and_used_in_order():
    with ScriptedLLMServer({"red car": [raw("first"), valid(["a"])]}) as server:
        client = _client(server)
        prompt = "Some words.\nClass: red car\nNumber of subtypes: 2\n"
        assert _ask(client, prompt).choices[0].message.content == "first"
        assert json.loads(_ask(client, prompt).choices[0].message.content) == {"subclasses": ["a"]}
        default = json.loads(_ask(client, prompt).choices[0].message.content)  # script used up: the default
        assert default == {"subclasses": ["red car variant 1", "red car variant 2"]}
        assert server.count("red car") == 3 and [r.k for r in server.log] == [2, 2, 2]
        assert [m.id for m in client.models.list().data] == ["scripted"]


def test_unknown_class_is_a_400_and_errors_carry_openai_bodies():
    import openai

    with ScriptedLLMServer({"x": [http_error(503, "overloaded")]}) as server:
        client = _client(server)
        with pytest.raises(openai.BadRequestError, match="no line matching"):
            _ask(client, "no class line here")
        with pytest.raises(openai.InternalServerError, match="overloaded"):
            _ask(client, "Class: x")
        assert [r.status for r in server.log] == [400, 503]


def test_a_default_generator_answers_every_class():
    """How the offline demo plugs its curated subclasses in."""
    curated = {"cat": ["tabby cat", "kitten"], "dog": ["beagle", "pug"]}
    with ScriptedLLMServer(default=lambda name, k: curated[name][:k]) as server:
        label_set, meta = generate_label_set(
            ["cat", "dog"], backend="openai", model="demo", base_url=server.base_url, k=2, progress=False
        )
    assert label_set.root == curated and meta.generator == "openai" and meta.model == "demo"


def test_json_schema_rejection_mode_accepts_plain_requests():
    import openai

    with ScriptedLLMServer(reject_json_schema=True) as server:
        client = _client(server)
        schema = {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"}}}
        with pytest.raises(openai.BadRequestError, match="response_format"):
            _ask(client, "Class: cat", response_format=schema)
        assert _ask(client, "Class: cat", response_format={"type": "json_object"}).choices[0].finish_reason == "stop"


def test_a_failing_generator_is_a_500_naming_the_class(fast):
    from llmseg.stage1.generate import GenerationError

    def answer(name, k):
        raise KeyError(name)

    with ScriptedLLMServer(default=answer) as server:
        with pytest.raises(GenerationError) as info:
            generate_label_set(["cat"], backend="openai", model="m", base_url=server.base_url, backoff=fast,
                               max_retries=1, progress=False)  # fmt: skip
        assert [(r.status, r.step) for r in server.log] == [(500, "generator-error")] * 2
    assert "HTTP 500" in info.value.failed["cat"] and "generator failed for class 'cat'" in info.value.failed["cat"]
