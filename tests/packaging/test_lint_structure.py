"""`tools/lint_structure.py` (in `make lint`): imports inside functions and long functions say why, or the lint fails."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "lint_structure.py"


def _lint(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(TOOL), *map(str, paths)], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "module.py"
    path.write_text(text)
    return path


def test_the_package_passes():
    result = _lint()
    assert result.returncode == 0, result.stdout
    assert result.stdout.strip().endswith("0 structure breaches")


def test_an_import_inside_a_function_without_a_reason_is_named(tmp_path: Path):
    path = _write(tmp_path, "def load():\n    import json\n    return json\n")
    result = _lint(path)
    assert result.returncode == 1
    assert f"{path}:2: import inside load()" in result.stdout


@pytest.mark.parametrize(
    "body",
    [
        "    # lazy import: start-up time (llmseg --help does not load torch)\n    import json\n    import csv\n",
        "    import json  # lazy import: optional dependency (the app extra)\n",
        "    if True:\n        # lazy import: optional dependency (scipy)\n        from json import loads\n",
    ],
)
def test_a_tagged_run_of_imports_passes(tmp_path: Path, body: str):
    result = _lint(_write(tmp_path, "def load():\n" + body + "    return 1\n"))
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(
    "body",
    [
        # a reason that is neither of the two allowed ones
        "    # lazy import: avoids a cycle\n    import json\n",
        # the tag covers the run under it, not an import after other code
        "    # lazy import: start-up time\n    import json\n    x = 1\n    import csv\n",
        # a nested function's import is its own: the outer tag does not reach it
        "    # lazy import: start-up time\n    import json\n    def inner():\n        import csv\n",
    ],
)
def test_an_untagged_import_is_caught(tmp_path: Path, body: str):
    result = _lint(_write(tmp_path, "def load():\n" + body + "    return 1\n"))
    assert result.returncode == 1
    assert "import inside" in result.stdout


def _function(lines: int, comment: str = "") -> str:
    body = "".join(f"    x{i} = {i}\n" for i in range(lines - 2))
    return f"{comment}def long():\n{body}    return 0\n"


def test_a_function_over_60_lines_is_named_with_its_length(tmp_path: Path):
    assert _lint(_write(tmp_path, _function(60))).returncode == 0
    result = _lint(_write(tmp_path, _function(61)))
    assert result.returncode == 1
    assert "long() is 61 lines (over 60)" in result.stdout


def test_a_long_function_with_a_reason_passes(tmp_path: Path):
    result = _lint(_write(tmp_path, _function(80, "# long function: the option list is the signature\n")))
    assert result.returncode == 0, result.stdout
    # an empty reason is not one
    assert _lint(_write(tmp_path, _function(80, "# long function:\n"))).returncode == 1
