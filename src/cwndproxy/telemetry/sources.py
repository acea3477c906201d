"""What the dashboard and the exporter read, handed to them by the composition root: the
pool, the sampler, the client-side request counts, and the configuration as it is now (a
SIGHUP reload replaces the ``Config`` object, so it is read through a callable)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cwndproxy.config import Config
from cwndproxy.pool.pool import Pool
from cwndproxy.proxy.stats import ClientRequestStats
from cwndproxy.telemetry.sampler import Monitor


@dataclass(frozen=True)
class TelemetrySources:
    pool: Pool
    sampler: Monitor
    client_stats: ClientRequestStats
    started_at: float
    current_config: Callable[[], Config]

    @property
    def config(self) -> Config:
        return self.current_config()
