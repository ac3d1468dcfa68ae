"""Issue 21 item 12: CRF worker processes must die with their parent.

Real processes throughout: a parent starts the workers (a real `llmseg evaluate --crf --post-workers 2`, or
the pool directly), the test SIGKILLs the parent and watches /proc until the workers are gone. A zombie
(exited, not yet reaped by whoever inherited it) counts as gone. Workers still alive at the end are killed
by their recorded ids, so a failing run leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads processes from /proc (Linux)")


def _alive(pid: int) -> bool:
    """Running (or stopped), not exited: a zombie is a process that has already ended."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _children(pid: int) -> dict[int, str]:
    """{child pid: command line} of the living children of `pid`."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and _alive(int(entry.name)):
            found[int(entry.name)] = cmdline
    return found


def _wait_for(condition: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval_s)
    return condition()


def _kill_parent_and_watch(parent: subprocess.Popen, workers: list[int], grace_s: float) -> list[int]:
    """SIGKILL the parent; the workers still alive `grace_s` later (killed then, so none outlives the test)."""
    assert workers and all(_alive(pid) for pid in workers), "the workers must be running before the kill"
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=30)
    try:
        _wait_for(lambda: not any(_alive(pid) for pid in workers), grace_s)
        return [pid for pid in workers if _alive(pid)]
    finally:
        for pid in workers:  # the orphans of a failing run, by their recorded ids
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


POOL_PARENT = textwrap.dedent(
    """
    import json, os, sys, time
    import numpy as np
    from llmseg.stage2.ops.refinement import dense_crf_multilabel
    from llmseg.stage2.engine.worker_life import orphan_safe_pool

    use_prctl, busy = sys.argv[1] == "1", int(sys.argv[2])
    pool = orphan_safe_pool(3, use_prctl=use_prctl)
    for future in [pool.submit(os.getpid) for _ in range(3)]:  # three workers started, then idle
        future.result()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    probs = rng.dirichlet(np.ones(21), size=(256, 256)).transpose(2, 0, 1).astype(np.float32)
    running = [pool.submit(dense_crf_multilabel, image, probs, iterations=2000) for _ in range(busy)]
    time.sleep(1.0)  # the long CRFs are inside workers now
    print(json.dumps(sorted(pool._processes)), flush=True)
    time.sleep(600)
    """
)


def _pool_parent(use_prctl: bool, busy: int) -> tuple[subprocess.Popen, list[int]]:
    parent = subprocess.Popen([sys.executable, "-c", POOL_PARENT, "1" if use_prctl else "0", str(busy)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = parent.stdout.readline()
    if not line:
        parent.kill()
        pytest.fail(f"the pool parent failed: {parent.communicate(timeout=30)[1]}")
    return parent, json.loads(line)


def test_busy_and_idle_crf_workers_die_with_a_killed_parent():
    parent, workers = _pool_parent(use_prctl=True, busy=2)
    assert len(workers) == 3
    left = _kill_parent_and_watch(parent, workers, grace_s=5.0)
    assert left == [], f"CRF workers {left} outlived their SIGKILLed parent"


def test_idle_workers_die_by_the_watchdog_alone():
    """The portable fallback: no prctl, the workers' own thread sees the parent change."""
    parent, workers = _pool_parent(use_prctl=False, busy=0)
    left = _kill_parent_and_watch(parent, workers, grace_s=5.0)
    assert left == [], f"idle workers {left} outlived their SIGKILLed parent without prctl"


def test_pool_still_works_and_its_workers_end_with_it():
    from llmseg.stage2.engine.worker_life import orphan_safe_pool

    with orphan_safe_pool(2) as pool:
        assert sorted(pool.map(abs, [-3, 2, -1])) == [1, 2, 3]
        workers = list(pool._processes)
    assert _wait_for(lambda: not any(_alive(pid) for pid in workers), 10.0)


@pytest.mark.slow
def test_evaluate_with_crf_workers_leaves_no_orphans_when_killed(tmp_path):
    """The reported attack: `llmseg evaluate --crf --post-workers 2`, SIGKILLed mid-run."""
    from llmseg.stage2.synthetic import write_synthetic_benchmark

    root = tmp_path / "data"
    write_synthetic_benchmark("pascal_voc", root, 40, (96, 128))
    command = [sys.executable, "-m", "llmseg.cli", "evaluate", "--dataset", "pascal_voc", "--data-root", str(root),
               "--out", str(tmp_path / "out"), "--backbone", "openclip:ViT-S-16", "--random-weights",
               "--short-side", "32", "--crop", "0", "--templates", "single", "--num-workers", "0", "--no-progress",
               "--crf", "--crf-iterations", "300", "--post-workers", "2"]
    log = tmp_path / "evaluate.log"
    with open(log, "w") as out:
        parent = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                  env={**os.environ, "HF_HUB_OFFLINE": "1"})

    def crf_workers() -> list[int]:
        return sorted(pid for pid, cmd in _children(parent.pid).items() if "spawn_main" in cmd)

    try:
        started = _wait_for(lambda: len(crf_workers()) == 2 or parent.poll() is not None, 300.0, interval_s=0.1)
    except BaseException:
        parent.kill()
        raise
    if not started or parent.poll() is not None:
        parent.kill()
        pytest.fail(f"evaluate ended (or never started its CRF workers): {log.read_text()[-3000:]}")
    left = _kill_parent_and_watch(parent, crf_workers(), grace_s=5.0)
    assert left == [], f"CRF workers {left} outlived the SIGKILLed evaluate"


def test_parallel_map_uses_the_orphan_safe_pool():
    """`data check` and `data convert` map over a pool too; results stay in input order."""
    from llmseg.stage2.data.pool import parallel_map

    assert list(parallel_map(abs, [-3, 2, -1, 5], workers=2, progress=False, chunksize=1)) == [3, 2, 1, 5]
