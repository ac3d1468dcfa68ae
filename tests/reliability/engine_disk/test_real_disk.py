"""Issue 21 item 8 on a real small disk: a size-limited tmpfs as --out (root only; skipped elsewhere).

The disk fills up for real (ENOSPC from the kernel, wherever it strikes: a write, a close, an fsync),
then is remounted read-only (EROFS), then grown: evaluate names each fault with exit code 2 and no
traceback, and the final rerun continues to the numbers of a run on an ordinary disk.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from disk_faults import numbers


def _mount(folder: Path, options: str) -> bool:
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                          capture_output=True).returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs at tmp_path/disk, unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or not _mount(disk, "size=64k"):
        pytest.skip("mounting a tmpfs needs root (the fault-injection tests cover the same paths)")
    yield disk
    subprocess.run(["umount", str(disk)], check=False)


def _remount(disk: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(disk)], check=True)


def _evaluate(root: Path, out: Path) -> subprocess.CompletedProcess:
    args = ["evaluate", "--dataset", "demo", "--backbone", "demo-clip", "--data-root", str(root), "--out", str(out),
            "--no-progress", "--num-workers", "0", "--save-pred", "--save-vis", "3", "--checkpoint-every", "1"]
    return subprocess.run([sys.executable, "-c", "from llmseg.cli import main; main()", *args], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})


@pytest.mark.slow
def test_evaluate_on_a_real_full_then_read_only_disk(tmp_path, small_disk):
    from llmseg.stage2.demo.benchmark import write_benchmark

    root = tmp_path / "data"
    write_benchmark(root, n_images=3, progress=False)
    clean = _evaluate(root, tmp_path / "clean")
    assert clean.returncode == 0, clean.stderr

    out = small_disk / "run"
    full = _evaluate(root, out)  # the overlays (image | truth | prediction) soon fill 64 KiB
    assert full.returncode == 2, full.stderr
    assert "Traceback" not in full.stderr
    message = " ".join(full.stderr.split())
    assert f"cannot write {out}" in message and "No space left on device (ENOSPC)" in message, message

    _remount(small_disk, "ro")
    read_only = _evaluate(root, out)
    assert read_only.returncode == 2, read_only.stderr
    assert "Traceback" not in read_only.stderr
    assert "Read-only file system (EROFS)" in read_only.stderr and str(out) in read_only.stderr

    _remount(small_disk, "rw,size=16m")  # space freed
    again = _evaluate(root, out)
    assert again.returncode == 0, again.stderr
    assert numbers(out) == numbers(tmp_path / "clean")
    assert json.loads((out / "metrics.json").read_text())["num_images"] == 3
