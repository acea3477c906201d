"""Traffic counters, kept per upstream session and summed for the pool.

Counts are DATA payload bytes, split by traffic kind: real (forwarded client requests) and
dummy (warm-up). The sampler, the dashboard and the exporter read them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class TrafficKind(enum.StrEnum):
    # StrEnum, not Enum: it hashes as its str (in C), and every stream looks its kind up in
    # a few dicts; Enum's Python-level __hash__ was ~1% of a small request's CPU.
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
