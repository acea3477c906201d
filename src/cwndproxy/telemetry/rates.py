"""Rates from cumulative counters: a ring of periodic samples, differences over time."""

from __future__ import annotations

import collections

from cwndproxy.upstream.counters import FIELDS


class RateWindow:
    """Cumulative byte counters sampled periodically (100 ms) into a ring covering
    ``window`` seconds; rates are differences over time. Pure: timestamps come in."""

    def __init__(self, window: float = 10.0, period: float = 0.1) -> None:
        self.window = window
        self.period = period
        size = round(window / period) + 1
        self.samples: collections.deque[tuple[float, tuple[int, ...]]] = collections.deque(
            maxlen=size
        )

    def add(self, t: float, values: tuple[int, ...]) -> None:
        if self.samples and any(x < y for x, y in zip(values, self.samples[-1][1], strict=True)):
            # Counters only grow; a drop means a new session: restart the window.
            self.samples.clear()
        self.samples.append((t, values))

    def _rate_between(
        self, a: tuple[float, tuple[int, ...]], b: tuple[float, tuple[int, ...]]
    ) -> tuple[float, ...]:
        dt = b[0] - a[0]
        if dt <= 0:
            return tuple(0.0 for _ in b[1])
        return tuple((y - x) / dt for x, y in zip(a[1], b[1], strict=True))

    def rate(self, over: float | None = None) -> tuple[float, ...]:
        """Bytes per second per field over the last ``over`` seconds (default: window)."""
        if len(self.samples) < 2:
            width = len(self.samples[0][1]) if self.samples else len(FIELDS)
            return tuple(0.0 for _ in range(width))
        last = self.samples[-1]
        horizon = last[0] - (over if over is not None else self.window)
        first = next((s for s in self.samples if s[0] >= horizon - 1e-9), self.samples[0])
        return self._rate_between(first, last)

    def delta(self) -> tuple[int, ...]:
        """How much each counter grew within the window."""
        if len(self.samples) < 2:
            width = len(self.samples[0][1]) if self.samples else len(FIELDS)
            return tuple(0 for _ in range(width))
        first, last = self.samples[0][1], self.samples[-1][1]
        return tuple(y - x for x, y in zip(first, last, strict=True))

    def peak(self, span: float = 1.0) -> tuple[float, ...]:
        """The highest ``span``-second rate per field within the window."""
        samples = list(self.samples)
        best: list[float] = [0.0] * (len(samples[0][1]) if samples else len(FIELDS))
        j = 0
        for i in range(len(samples)):
            while j < i and samples[i][0] - samples[j][0] > span + 1e-9:
                j += 1
            if samples[i][0] - samples[j][0] >= span - 1e-9 and i != j:
                for k, r in enumerate(self._rate_between(samples[j], samples[i])):
                    best[k] = max(best[k], r)
        return tuple(best)

    def history(self, buckets: int = 20) -> list[tuple[float, ...]]:
        """Rates per bucket, oldest first, covering the window (empty buckets are 0)."""
        if not self.samples:
            return []
        end = self.samples[-1][0]
        width = self.window / buckets
        out = []
        samples = list(self.samples)
        for b in range(buckets):
            lo, hi = end - self.window + b * width, end - self.window + (b + 1) * width
            inside = [s for s in samples if lo - 1e-9 <= s[0] <= hi + 1e-9]
            out.append(
                self._rate_between(inside[0], inside[-1])
                if len(inside) >= 2
                else tuple(0.0 for _ in samples[0][1])
            )
        return out
