"""Map a picklable function over items with a spawn process pool and a progress bar.

Spawn, not fork: a forked child of a process that has run multi-threaded torch ops can hang
(measured here: torch ops inside forked workers hang), and these helpers run inside the CLI next to torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from tqdm import tqdm

from llmseg.stage2.engine.worker_life import orphan_safe_pool


def default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 1)))


def parallel_map(
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    *,
    workers: int | None = None,
    desc: str = "",
    progress: bool = True,
    chunksize: int = 8,
) -> Iterator[Any]:
    """Yield fn(item) in input order; workers 0 runs inline (no pool)."""
    items = list(items)
    workers = default_workers() if workers is None else workers
    bar = tqdm(total=len(items), desc=desc, unit="file", disable=not progress, dynamic_ncols=True)
    try:
        if workers <= 0 or len(items) <= 1:
            for item in items:
                yield fn(item)
                bar.update(1)
            return
        with orphan_safe_pool(workers) as pool:  # its workers die with this process, also on SIGKILL
            for result in pool.map(fn, items, chunksize=max(1, chunksize)):
                yield result
                bar.update(1)
    finally:
        bar.close()
