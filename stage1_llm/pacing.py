"""How fast stage one sends requests: the backoff between retries and the shared per-minute rate limit."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: attempt n waits between d/2 and d, d = min(cap, base * 2**n).

    A server's Retry-After wins (capped at `retry_after_cap`). Tests use a tiny base.
    """

    base: float = 1.0
    cap: float = 30.0
    retry_after_cap: float = 300.0

    def delay(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        if retry_after is not None:
            return min(max(0.0, retry_after), self.retry_after_cap)
        ceiling = min(self.cap, self.base * (2.0**attempt))
        return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


class RateLimiter:
    """At most `rpm` request starts per minute, evenly spaced, shared by all worker threads."""

    def __init__(self, rpm: float | None):
        self.interval = 60.0 / rpm if rpm else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            time.sleep(start - now)
