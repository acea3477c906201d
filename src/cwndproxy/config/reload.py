"""What a configuration reload (SIGHUP) can change in a running proxy: a plain function of
the old and the new configuration, so the rules are tested without a process.

Applied live: forwarding (timeouts, header limits, Host, access log), the pool's size
(sessions added or retired gracefully; the others keep their warm windows), reconnect
timing and the upstream's stream limit, and every warm-up setting (the controllers of the
running sessions are restarted on the same connections: the kernel's window is kept).
Not applied (a restart is needed, and the running value stays): the upstream itself
(target.*, except the response timeout), the listener and inbound server (address, TLS,
protocol, limits baked into the server at start), the admin address, HTTP/2 windows and
frame size (announced once per connection), the PING period, and the UI. Whether a
session meters its HTTP/2 window (auto) is fixed when it connects: a strategy change
reaches that part with the next connection.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from cwndproxy.config import Config

# section.key -> how it takes effect; anything not listed needs a restart.
LIVE = {
    "target.response_timeout_ms",
    "server.write_timeout_ms",
    "server.preserve_host",
    "server.shutdown_grace_ms",
    "server.access_log",
    "server.max_request_header_bytes",
    "server.max_request_header_field_bytes",
    "server.max_request_headers",
    "server.max_request_target_bytes",
    "pool.pool_size",
    "pool.reconnect_min_ms",
    "pool.reconnect_max_ms",
    "pool.upstream_max_streams",
}
# Warm-up settings: applied by restarting the controllers on the running sessions.
WARMUP = {
    "pool.bandwidth_mbps",
    "pool.warm_up_interval_ms",
    "pool.warm_up_size_bytes",
    "pool.warm_up_direction",
    "pool.warm_up_upload_path",
    "pool.warm_up_upload_method",
    "pool.warm_up_download_path",
    "pool.warm_up_download_method",
    "pool.download_supports_range",
    "pool.per_connection_dwell_ms",
    "pool.fallback_upload_retry",
    "pool.warm_up_headers",
    "pool.strategy",
    "pool.warm_up_target",
    "pool.burst_limit_bdp",
    "pool.renew_lossy_sessions",
}


@dataclass
class ReloadPlan:
    """The configuration to run with, and which changed keys it applies or keeps."""

    config: Config
    applied: list[str] = field(default_factory=list)
    needs_restart: list[str] = field(default_factory=list)

    @property
    def restart_warmup(self) -> bool:
        return any(key in WARMUP for key in self.applied)


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    """Compare key by key: live and warm-up keys take the new value, the rest keep the
    running one (and are reported)."""
    merged = copy.deepcopy(new)
    plan = ReloadPlan(merged)
    old_values, new_values = old.to_dict(), new.to_dict()
    for section, values in new_values.items():
        for key, value in values.items():
            name = f"{section}.{key}"
            if value == old_values[section][key]:
                continue
            if name in LIVE or name in WARMUP:
                plan.applied.append(name)
            else:
                plan.needs_restart.append(name)
                setattr(getattr(merged, section), key, copy.deepcopy(old_values[section][key]))
    return plan
