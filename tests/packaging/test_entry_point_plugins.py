"""A distribution installed beside llmseg adds registry entries through entry points, without being imported
by anyone: here an LLM backend, installed with pip into a folder and used by name from the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PLUGIN_MODULE = '''
"""A stand-in LLM: answers each class with '<class> canned <i>'."""
import json
import re

from llmseg.stage1.backends import Completion


class CannedBackend:
    name = "canned"
    supports_schema = False
    max_concurrency = 1

    def __init__(self, model, **settings):
        self.model = model

    def complete(self, messages, *, schema, sampling):
        text = messages[-1]["content"]
        name = re.search(r"^Class: (.+)$", text, re.MULTILINE).group(1).strip()
        k = int(re.search(r"exactly (\\d+)", text).group(1))
        return Completion(text=json.dumps({"subclasses": [f"{name} canned {i}" for i in range(k)]}),
                          finish_reason="stop", model=self.model)

    def describe(self):
        return {"backend": self.name, "model": self.model}

    def close(self):
        pass
'''

PLUGIN_PYPROJECT = """
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "llmseg-canned-plugin"
version = "0.1"

[project.entry-points."llmseg.backends"]
canned = "llmseg_canned_plugin:CannedBackend"

[tool.setuptools]
py-modules = ["llmseg_canned_plugin"]
"""


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    source = tmp_path_factory.mktemp("plugin-src")
    (source / "pyproject.toml").write_text(textwrap.dedent(PLUGIN_PYPROJECT))
    (source / "llmseg_canned_plugin.py").write_text(PLUGIN_MODULE)
    site = tmp_path_factory.mktemp("plugin-site")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--no-index", "--target", str(site), str(source)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert list(site.glob("llmseg_canned_plugin-0.1.dist-info/entry_points.txt"))
    return site


def _llmseg(args: list[str], site: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "llmseg.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


def test_an_installed_plugin_backend_is_used_from_the_cli(plugin_site, tmp_path):
    (tmp_path / "classes.txt").write_text("zebra\nkettle\n")
    out = tmp_path / "canned.json"
    done = _llmseg(["subclasses", "generate", "pascal_voc", "--classes-file", "classes.txt", "--backend", "canned",
                    "--model", "m-1", "--k", "2", "--out", str(out), "--cache", "cache.jsonl", "--quiet"],
                   plugin_site, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(out.read_text()) == {"zebra": ["zebra canned 0", "zebra canned 1"],
                                           "kettle": ["kettle canned 0", "kettle canned 1"]}
    meta = json.loads(out.with_suffix(".meta.json").read_text())
    assert meta["generator"] == "canned" and meta["model"] == "m-1"


def test_without_the_plugin_the_name_is_unknown(tmp_path):
    (tmp_path / "classes.txt").write_text("zebra\n")
    done = _llmseg(["subclasses", "generate", "pascal_voc", "--classes-file", "classes.txt", "--backend", "canned",
                    "--model", "m", "--out", str(tmp_path / "x.json"), "--quiet"], tmp_path / "nowhere", tmp_path)
    assert done.returncode == 2 and "canned" in done.stderr and "openai" in done.stderr
