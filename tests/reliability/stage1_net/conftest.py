"""Fixtures for stage one's network and input tests: no real key or URL from the environment leaks in."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """A private label_sets/ folder with a 3-class `toy` dataset, so default outputs land in tmp_path."""
    root = tmp_path / "label_sets"
    (root / "toy").mkdir(parents=True)
    (root / "toy" / "classes.txt").write_text("background\ncat\ndog\n", encoding="utf-8")
    monkeypatch.setenv("LLMSEG_LABEL_SETS", str(root))
    return root
