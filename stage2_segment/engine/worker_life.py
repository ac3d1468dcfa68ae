"""Worker processes that die with the process that started them.

A pool worker blocked on its task queue, or busy in a CRF, does not notice that its parent was killed:
it holds both ends of its queues itself, so it never reads an end-of-file, and a SIGKILLed parent runs
no clean-up. Each worker therefore arms two guards when it starts:

- on Linux, `prctl(PR_SET_PDEATHSIG, SIGKILL)`: the kernel kills the worker as soon as its parent dies,
  also in the middle of a C call that holds the GIL (pydensecrf does);
- everywhere, a daemon thread that exits the worker once `os.getppid()` is no longer the parent (the
  worker was re-parented). It needs the GIL, so it is the fallback, not the first line.

Linux sends the death signal when the *thread* that started the worker ends, so a pool built with
`orphan_safe_pool` must be fed (submit / map) from a thread that lives as long as the pool, the main
thread in this package. Pools stay `spawn`: forked workers of a process that has run threaded torch ops hang.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial

PR_SET_PDEATHSIG = 1  # linux/prctl.h
WATCH_INTERVAL_S = 0.25


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask Linux to send `sig` to this process when its parent dies; False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int, interval_s: float) -> None:
    """Exit the whole process (not just this thread) once the parent is gone."""
    while os.getppid() == parent_pid:
        time.sleep(interval_s)
    os._exit(1)


def die_with_parent(parent_pid: int, use_prctl: bool = True, interval_s: float = WATCH_INTERVAL_S) -> None:
    """Pool initializer: arm both guards, and exit at once if the parent died before they were armed."""
    if use_prctl:
        set_parent_death_signal()
    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid, interval_s), name="llmseg-parent-watch",
                     daemon=True).start()


def orphan_safe_pool(workers: int, *, use_prctl: bool = True, interval_s: float = WATCH_INTERVAL_S) -> ProcessPoolExecutor:
    """A spawn process pool whose workers die with this process (also when it is SIGKILLed)."""
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=mp.get_context("spawn"),
        initializer=partial(die_with_parent, os.getpid(), use_prctl, interval_s),
    )
