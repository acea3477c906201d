"""The sampler: every 100 ms, each slot's and the pool's counters into 10 s rate windows.

One task on the proxy's loop, no locks. TCP_INFO is not read here but by the renderer, at
its own (slower) rate. The CPU the sampler spends is counted, to be reported.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from cwndproxy.pool.pool import Pool
from cwndproxy.telemetry.rates import RateWindow
from cwndproxy.upstream.counters import counter_tuple

SAMPLE_PERIOD = 0.1
WINDOW = 10.0


@dataclass
class EstimatedBandwidth:
    bps: float
    source: str


class Monitor:
    def __init__(self, pool: Pool, period: float = SAMPLE_PERIOD, window: float = WINDOW) -> None:
        self.pool = pool
        self.period = period
        self.slots = [RateWindow(window, period) for _ in pool.slots]
        # Client requests per slot (the upstream attempt counter), for "req in the last 10 s".
        self.requests = [RateWindow(window, period) for _ in pool.slots]
        self.total = RateWindow(window, period)
        self.cpu_seconds = 0.0
        self.samples_taken = 0
        self.started = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        # The highest 1 s receive (download) or send (upload) rate seen since start.
        self.peak_rx_bps = 0.0
        self.peak_tx_bps = 0.0

    def sample(self, now: float | None = None) -> None:
        cpu0 = time.process_time()
        now = time.monotonic() if now is None else now
        # A reload may have resized the pool: one window per slot, the removed slots'
        # traffic kept in the total.
        for windows in (self.slots, self.requests):
            del windows[len(self.pool.slots) :]
            while len(windows) < len(self.pool.slots):
                windows.append(RateWindow(self.total.window, self.period))
        totals = list(counter_tuple(self.pool.removed_counters))
        for window, requests, slot in zip(self.slots, self.requests, self.pool.slots, strict=True):
            counters = slot.counters
            values = counter_tuple(counters)
            window.add(now, values)
            requests.add(now, (counters.requests,))
            for i, v in enumerate(values):
                totals[i] += v
        self.total.add(now, tuple(totals))
        real_tx, real_rx, dummy_tx, dummy_rx = self.total.rate(over=1.0)
        self.peak_rx_bps = max(self.peak_rx_bps, (real_rx + dummy_rx) * 8)
        self.peak_tx_bps = max(self.peak_tx_bps, (real_tx + dummy_tx) * 8)
        self.samples_taken += 1
        self.cpu_seconds += time.process_time() - cpu0

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.period)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(), name="monitor")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    @property
    def cpu_share(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.cpu_seconds / elapsed if elapsed > 0 else 0.0

    def estimated_bandwidth(self, direction: str) -> EstimatedBandwidth:
        """What the path has shown it can carry: the peak 1 s pool rate seen, in the
        direction that is warmed (both: the larger). A lower bound, never a guess."""
        if direction == "upload":
            return EstimatedBandwidth(self.peak_tx_bps, "peak 1 s send rate seen")
        if direction == "download":
            return EstimatedBandwidth(self.peak_rx_bps, "peak 1 s receive rate seen")
        bps = max(self.peak_rx_bps, self.peak_tx_bps)
        return EstimatedBandwidth(bps, "peak 1 s rate seen")
