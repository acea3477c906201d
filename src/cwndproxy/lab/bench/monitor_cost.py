"""CPU cost of the 100 ms sampler and of one dashboard snapshot, with 8 sessions.

    python -m cwndproxy.lab.bench.monitor_cost

In-process against the demo origin on loopback, burst warm-up running so the counters move.
Measured with time.process_time; a benchmark, not a test.
"""

from __future__ import annotations

import asyncio
import time

from cwndproxy.config import Config
from cwndproxy.lab.origin import DemoOrigin
from cwndproxy.lab.ports import free_port
from cwndproxy.service import ProxyService
from cwndproxy.telemetry.dashboard import snapshot


async def main() -> None:
    async with DemoOrigin() as origin:
        config = Config()
        config.target.host, config.target.port, config.target.tls = "127.0.0.1", origin.port, False
        config.pool.pool_size = 8
        config.pool.warm_up_download_path = "/cwnd/blob?size=100000000"
        config.server.port = free_port()
        config.ui.tui = False
        service = ProxyService(config)
        await service.start(wait_ready=5)
        await asyncio.sleep(2)
        monitor = service.monitor
        monitor.cpu_seconds, monitor.started = 0.0, time.monotonic()
        taken = monitor.samples_taken
        await asyncio.sleep(10)
        elapsed = time.monotonic() - monitor.started
        samples = monitor.samples_taken - taken
        cpu0 = time.process_time()
        for _ in range(20):
            snapshot(service.telemetry)
        per_snapshot = (time.process_time() - cpu0) / 20
        print(
            f"sampler: {samples} samples in {elapsed:.1f} s, {monitor.cpu_seconds / elapsed:.3%}"
            f" of one core, {monitor.cpu_seconds / samples * 1e6:.0f} us per sample"
        )
        print(
            f"snapshot with 8 TCP_INFO reads: {per_snapshot * 1e3:.2f} ms, "
            f"{per_snapshot * 2:.3%} of one core at 2 Hz (rich's rendering not included)"
        )
        await service.stop()


if __name__ == "__main__":
    asyncio.run(main())
