"""The LLM backend registry: a backend added from outside the package is used by name, settings validated."""

from __future__ import annotations

import json
import re

import pytest
from pydantic import BaseModel, ConfigDict
from typer.testing import CliRunner

from llmseg.cli import app
from llmseg.errors import ConfigError
from llmseg.labelset import load_label_set
from llmseg.stage1.backends import BACKENDS, Completion, backend_settings, make_backend
from llmseg.stage1.generate import generate_label_set

CLASSES = ["zebra", "kettle", "lantern"]


class CannedSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timeout: float = 1.0  # a setting the generation loop passes to every backend
    suffix: str = "kind"


class CannedBackend:
    """Answers each class with '<class> <suffix> <i>' read off the prompt's 'Class: ...' line."""

    name = "canned"
    supports_schema = False
    max_concurrency = 1

    def __init__(self, model: str, *, timeout: float = 1.0, suffix: str = "kind"):
        self.model, self.timeout, self.suffix = model, timeout, suffix
        self.prompts: list[str] = []
        self.closed = False

    def complete(self, messages, *, schema, sampling):
        text = messages[-1]["content"]
        self.prompts.append(text)
        class_name = re.search(r"^Class: (.+)$", text, re.MULTILINE).group(1).strip()
        k = int(re.search(r"exactly (\d+)", text).group(1))
        items = [f"{class_name} {self.suffix} {i}" for i in range(k)]
        return Completion(text=json.dumps({"subclasses": items}), finish_reason="stop", model=self.model)

    def describe(self):
        return {"backend": self.name, "model": self.model, "timeout": self.timeout, "suffix": self.suffix}

    def close(self):
        self.closed = True


@pytest.fixture
def canned():
    built: list[CannedBackend] = []

    def builder(model: str, **settings):
        backend = CannedBackend(model, **settings)
        built.append(backend)
        return backend

    BACKENDS.register("canned", config=CannedSettings, help="test backend")(builder)
    yield built
    BACKENDS.unregister("canned")


def test_a_backend_registered_outside_the_package_is_used_by_name(canned):
    assert "canned" in BACKENDS and "canned" in BACKENDS.names()
    label_set, meta = generate_label_set(CLASSES, backend="canned", model="m-1", k=3, timeout=7.5, other_classes=False,
                                         progress=False)
    (backend,) = canned
    assert backend.timeout == 7.5 and backend.closed  # the loop's own option reached it through its settings model
    assert len(backend.prompts) == len(CLASSES)
    assert label_set.root == {c: [f"{c} kind {i}" for i in range(3)] for c in CLASSES}
    assert meta.generator == "canned" and meta.model == "m-1" and meta.backend["timeout"] == 7.5


def test_settings_keep_only_declared_fields_and_validate(canned):
    assert backend_settings("canned", {"timeout": 3, "device": "cuda", "base_url": None}) == {"timeout": 3.0, "suffix": "kind"}
    assert make_backend("canned", "m", suffix="sort", dtype="auto").suffix == "sort"
    with pytest.raises(ConfigError, match=r"backend 'canned': timeout"):
        backend_settings("canned", {"timeout": "soon"})
    with pytest.raises(ConfigError, match=r"backend 'hf': dtype"):
        make_backend("hf", "some/model", dtype="int3")


def test_builtin_backends_and_unknown_names():
    assert {"openai", "hf"} <= set(BACKENDS.names())
    assert set(BACKENDS.entry("openai").config.model_fields) == {"base_url", "api_key", "api_key_env", "timeout"}
    assert set(BACKENDS.entry("hf").config.model_fields) == {"device", "dtype", "trust_remote_code", "gguf_file"}
    with pytest.raises(ConfigError, match=r"unknown backend 'vllm': use one of .*hf.*openai"):
        make_backend("vllm", "m")


def test_cli_accepts_a_registered_backend(canned, tmp_path, monkeypatch):
    root = tmp_path / "label_sets"
    (root / "toy").mkdir(parents=True)
    (root / "toy" / "classes.txt").write_text("\n".join(CLASSES) + "\n", encoding="utf-8")
    monkeypatch.setenv("LLMSEG_LABEL_SETS", str(root))
    out = tmp_path / "toy.json"
    result = CliRunner().invoke(
        app, ["subclasses", "generate", "toy", "--backend", "canned", "--model", "m", "--k", "2", "--quiet", "--out", str(out)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert load_label_set(out, CLASSES).root["kettle"] == ["kettle kind 0", "kettle kind 1"]
