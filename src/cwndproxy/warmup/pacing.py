"""A byte token bucket for pacing dummy traffic, usable from asyncio without busy-waiting.

``reserve(n)`` is pure bookkeeping against an injected clock (unit-testable with a fake
one) and returns how long to wait; ``acquire(n)`` sleeps that long.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class TokenBucket:
    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic):
        """``rate`` in bytes per second, ``burst`` the bucket depth in bytes."""
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be > 0")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def set_rate(self, rate: float, burst: float | None = None) -> None:
        self._refill()
        self.rate = rate
        if burst is not None:
            self.burst = burst
            self._tokens = min(self._tokens, burst)

    @property
    def tokens(self) -> float:
        self._refill()
        return self._tokens

    def reserve(self, n: int) -> float:
        """Take ``n`` bytes now (possibly going into debt) and return the seconds to wait
        before sending them. Debt makes later callers wait, so the long-run rate holds even
        for requests larger than the bucket."""
        self._refill()
        self._tokens -= n
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    async def acquire(self, n: int) -> None:
        delay = self.reserve(n)
        if delay > 0:
            await asyncio.sleep(delay)
