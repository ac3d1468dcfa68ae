"""Issue 21 item 8: `llmseg evaluate` on a full disk, as a user runs it (a real process, the demo benchmark).

A shim on the child's PYTHONPATH fills the disk under --out after a few files. The command ends
with exit code 2 and one line naming the file and 'No space left on device', no traceback; the
same command once space is free continues from the checkpoint to the numbers of a clean run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from disk_faults import numbers

SHIM = Path(__file__).resolve().parent / "full_disk_shim"


def _args(root: Path, out: Path) -> list[str]:
    return ["evaluate", "--dataset", "demo", "--backbone", "demo-clip", "--data-root", str(root), "--out", str(out),
            "--no-progress", "--num-workers", "0", "--save-pred", "--checkpoint-every", "1"]


def _evaluate(root: Path, out: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`llmseg evaluate` in a child process (the shim, when given, acts there only)."""
    return subprocess.run([sys.executable, "-c", "from llmseg.cli import main; main()", *_args(root, out)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


@pytest.mark.slow
def test_evaluate_on_a_full_disk_exits_2_naming_the_file_and_the_rerun_matches_a_clean_run(tmp_path):
    from llmseg.stage2.demo.benchmark import write_benchmark

    root = tmp_path / "data"
    write_benchmark(root, n_images=3, progress=False)
    from typer.testing import CliRunner

    from llmseg.cli import app

    clean = CliRunner().invoke(app, _args(root, tmp_path / "clean"))  # the reference, in this process (quicker)
    assert clean.exit_code == 0, clean.output

    out = tmp_path / "run"
    # the lock's side file, image 0's PNG and checkpoint, then image 1's PNG finds the disk full
    shim = {"PYTHONPATH": os.pathsep.join([str(SHIM), os.environ.get("PYTHONPATH", "")]),
            "LLMSEG_TEST_FULL_UNDER": str(out), "LLMSEG_TEST_FULL_AFTER": "3"}
    full = _evaluate(root, out, shim)
    assert full.returncode == 2, full.stderr
    assert "Traceback" not in full.stderr
    message = " ".join(full.stderr.split())
    assert f"cannot write {out / 'pred'}" in message and ".png: No space left on device (ENOSPC)" in message, message
    assert f"{out / 'checkpoint.json'} keeps the 1 image finished so far" in message, message
    assert not (out / "metrics.json").exists()
    assert "WARNING" not in full.stderr  # one message, not a second one about the checkpoint

    again = _evaluate(root, out)  # space freed: the same command
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "metrics.json").read_text())["resumed"] is True
    assert numbers(out) == numbers(tmp_path / "clean")
