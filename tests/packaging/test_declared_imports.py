"""`make lint` runs deptry: an import of a package pyproject.toml does not declare fails the lint step."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("shared", "stage1_llm", "stage2_segment", "label_sets", "prompts")

pytest.importorskip("deptry")


def _deptry(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deptry", str(root), "--no-ansi"], capture_output=True,
                          text=True, cwd=root, timeout=300)


@pytest.fixture
def tree_copy(tmp_path: Path) -> Path:
    root = tmp_path / "llmseg"
    root.mkdir()
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    for name in SOURCES:
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__", ".cache"))
    return root


def test_checkout_declares_every_import(tree_copy: Path):
    result = _deptry(tree_copy)
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_undeclared_import_fails_the_check(tree_copy: Path):
    # the openai 3.x break: importing the SDK's old transport library without declaring it
    (tree_copy / "stage1_llm" / "backends" / "transport.py").write_text("import httpx\n\nTIMEOUT = httpx.Timeout(5.0)\n")
    result = _deptry(tree_copy)
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "transport.py" in out and "'httpx'" in out
