"""A built-in registry entry whose module fails to import is named, with its error, on every lookup."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from llmseg.errors import ConfigError, PluginImportError
from llmseg.registry import Registry


def test_failing_builtin_module_is_named_on_every_lookup(tmp_path, monkeypatch):
    (tmp_path / "llmseg_test_broken_plugin.py").write_text("raise RuntimeError('half-installed wheel')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry: Registry = Registry("method", builtins={"broken": "llmseg_test_broken_plugin:Thing", "other": "json:loads"})
    for _ in range(2):
        with pytest.raises(PluginImportError) as info:
            registry.entry("broken")
        message = str(info.value)
        assert "'broken'" in message and "llmseg_test_broken_plugin" in message
        assert "RuntimeError: half-installed wheel" in message
    assert "broken" in registry.names()  # still listed: the lookup names the import error, not 'unknown'
    assert registry.get("other") is __import__("json").loads


def test_module_that_registers_nothing_is_named(tmp_path, monkeypatch):
    (tmp_path / "llmseg_test_empty_plugin.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry: Registry = Registry("backbone", builtins={"ghost": "llmseg_test_empty_plugin"})
    with pytest.raises(PluginImportError, match="llmseg_test_empty_plugin.*registers no 'ghost'"):
        registry.entry("ghost")
    with pytest.raises(ConfigError, match="unknown backbone 'nope'"):
        registry.entry("nope")


def test_real_builtin_method_module_failing_is_named_twice():
    """The real METHODS registry, in a fresh interpreter whose import of the built-in methods fails."""
    code = textwrap.dedent(
        """
        import importlib.abc, sys
        class Broken(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "llmseg.stage2.methods.builtin":
                    raise OSError("simulated: libtorch_cpu.so cannot be opened")
        sys.meta_path.insert(0, Broken())
        from llmseg.stage2.registry_tables import METHODS
        for _ in range(2):
            try:
                METHODS.entry("dense")
            except Exception as exc:
                print(type(exc).__name__, "|", exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert len(lines) == 2, out.stdout + out.stderr
    for line in lines:
        assert line.startswith("PluginImportError |")
        assert "method 'dense'" in line and "llmseg.stage2.methods.builtin" in line
        assert "OSError: simulated: libtorch_cpu.so cannot be opened" in line
        assert "unknown method" not in line
