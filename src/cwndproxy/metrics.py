"""Traffic counters, kept per session and summed for the pool.

Counts are DATA payload bytes, split by traffic kind: real (forwarded client requests) and
dummy (warm-up). The dashboard and exporter read these; the sampler arrives with them.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
from dataclasses import dataclass


class TrafficKind(enum.Enum):
    REAL = "real"
    DUMMY = "dummy"


@dataclass
class TrafficCounters:
    real_tx: int = 0
    real_rx: int = 0
    dummy_tx: int = 0
    dummy_rx: int = 0
    requests: int = 0
    errors: int = 0
    retries: int = 0

    def add_tx(self, kind: TrafficKind, n: int) -> None:
        if kind is TrafficKind.REAL:
            self.real_tx += n
        else:
            self.dummy_tx += n

    def add_rx(self, kind: TrafficKind, n: int) -> None:
        if kind is TrafficKind.REAL:
            self.real_rx += n
        else:
            self.dummy_rx += n

    def merge(self, other: TrafficCounters) -> None:
        self.real_tx += other.real_tx
        self.real_rx += other.real_rx
        self.dummy_tx += other.dummy_tx
        self.dummy_rx += other.dummy_rx
        self.requests += other.requests
        self.errors += other.errors
        self.retries += other.retries


# Field order of the per-session and pool counter tuples the sampler records.
FIELDS = ("real_tx", "real_rx", "dummy_tx", "dummy_rx")


def counter_tuple(c: TrafficCounters) -> tuple[int, int, int, int]:
    return (c.real_tx, c.real_rx, c.dummy_tx, c.dummy_rx)


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


# Latency buckets in seconds: the product's range, from a hot loopback answer (ms) to a cold
# fetch across a long path (seconds).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass
class Histogram:
    """Cumulative-bucket histogram as Prometheus exposes it (counts per upper bound)."""

    bounds: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = dataclasses.field(init=False)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.bounds)

    def observe(self, value: float) -> None:
        self.n += 1
        self.total += value
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                break

    def cumulative(self) -> list[tuple[str, int]]:
        out, running = [], 0
        for bound, count in zip(self.bounds, self.counts, strict=True):
            running += count
            out.append((repr(bound), running))
        out.append(("+Inf", self.n))
        return out


@dataclass
class ClientRequestStats:
    """Client requests as the clients saw them (not upstream attempts: one client request
    can take several): count by status class, time to the response headers, and total."""

    by_class: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    first_byte: Histogram = dataclasses.field(default_factory=Histogram)
    duration: Histogram = dataclasses.field(default_factory=Histogram)

    def record(self, status: int | None, first_byte: float | None, duration: float) -> None:
        # "none": the client left (or the connection broke) before any answer.
        self.by_class[f"{status // 100}xx" if status else "none"] += 1
        if first_byte is not None:
            self.first_byte.observe(first_byte)
        self.duration.observe(duration)
