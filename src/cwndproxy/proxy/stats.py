"""Client requests as the clients saw them: counts by status class and latency histograms,
kept by the forwarding app and read by the exporter."""

from __future__ import annotations

import bisect
import collections
import dataclasses
from dataclasses import dataclass

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
        # The first bound >= value (bisect_left); past the last one only n counts it.
        i = bisect.bisect_left(self.bounds, value)
        if i < len(self.counts):
            self.counts[i] += 1

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
