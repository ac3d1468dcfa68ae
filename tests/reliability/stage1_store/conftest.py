"""Fixtures for stage one's storage tests: a clean environment, a private rescue folder, fast backoff."""

from __future__ import annotations

import pytest

from llmseg.stage1.generate import Backoff

FAST = Backoff(base=0.01, cap=0.05)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("LLMSEG_RESCUE_DIR", str(tmp_path / "rescue"))


@pytest.fixture
def fast() -> Backoff:
    return FAST
