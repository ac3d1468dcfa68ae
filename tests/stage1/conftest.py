"""Fixtures for stage-one tests: a clean environment (no real key or URL leaks in) and small class lists."""

from __future__ import annotations

import pytest

from llmseg.stage1.generate import Backoff

FAST = Backoff(base=0.01, cap=0.05)
CLASSES = ["background", "cat", "dog", "car", "tree"]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def classes() -> list[str]:
    return list(CLASSES)


@pytest.fixture
def fast() -> Backoff:
    return FAST
