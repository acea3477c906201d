"""The admin endpoint: Prometheus ``/metrics`` and ``/healthz`` on 127.0.0.1 by default.

A tiny HTTP/1.1 server on the proxy's own loop (a scrape is one small request), with a
custom prometheus-client collector that reads the pool at scrape time: no background
copying, no locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import platform
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from cwndproxy.telemetry.sources import TelemetrySources

STATES = (
    "connecting",
    "ready",
    "backoff",
    "stopped",
    "ramping",
    "holding",
    "serving",
    "draining",
    "failed",
)


class PoolCollector(Collector):
    def __init__(self, sources: TelemetrySources) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        pool = self.sources.pool
        yield from self._client_metrics()
        bytes_total = CounterMetricFamily(
            "cwnd_proxy_upstream_bytes",
            "DATA payload bytes per upstream session, traffic kind (real: forwarded; dummy: "
            "warm-up) and direction (tx: to the upstream)",
            labels=["session", "kind", "direction"],
        )
        attempts = CounterMetricFamily(
            "cwnd_proxy_upstream_requests",
            "Upstream request attempts of client requests per session (a retried client "
            "request counts once per attempt; warm-up requests are not counted)",
            labels=["session"],
        )
        errors = CounterMetricFamily(
            "cwnd_proxy_upstream_errors", "Failed upstream attempts", labels=["session"]
        )
        retries = CounterMetricFamily(
            "cwnd_proxy_upstream_retries",
            "Attempts retried on another session",
            labels=["session"],
        )
        reconnects = CounterMetricFamily(
            "cwnd_proxy_upstream_reconnects",
            "Upstream connections replaced (GOAWAY, connection lost, retired at the stream limit, "
            "renewed because packet loss cut the window)",
            labels=["session"],
        )
        state = GaugeMetricFamily(
            "cwnd_proxy_session_state",
            "1 for the state the session is in",
            labels=["session", "state"],
        )
        rtt = GaugeMetricFamily(
            "cwnd_proxy_rtt_seconds", "HTTP/2 PING round-trip time", labels=["session"]
        )
        streams = GaugeMetricFamily(
            "cwnd_proxy_upstream_streams", "Open upstream streams", labels=["session"]
        )
        for slot in pool.slots:
            sid = str(slot.index)
            c = slot.counters
            for kind, tx, rx in (("real", c.real_tx, c.real_rx), ("dummy", c.dummy_tx, c.dummy_rx)):
                bytes_total.add_metric([sid, kind, "tx"], tx)
                bytes_total.add_metric([sid, kind, "rx"], rx)
            attempts.add_metric([sid], c.requests)
            errors.add_metric([sid], c.errors)
            retries.add_metric([sid], c.retries)
            reconnects.add_metric([sid], slot.reconnects)
            current = slot.state.value
            if slot.controller is not None and current == "ready":
                current = slot.controller.state_name
            for name in STATES:
                state.add_metric([sid, name], 1.0 if name == current else 0.0)
            session = slot.session
            if session is not None and session.rtt is not None:
                rtt.add_metric([sid], session.rtt)
            streams.add_metric([sid], session.active_streams if session is not None else 0)
        ready = GaugeMetricFamily("cwnd_proxy_sessions_ready", "Sessions ready for requests")
        ready.add_metric([], pool.ready_count)
        build = GaugeMetricFamily(
            "cwnd_proxy_build_info",
            "Always 1; the version and runtime as labels",
            labels=["version", "python", "inbound_server", "strategy"],
        )
        config = self.sources.config
        build.add_metric(
            [
                _version(),
                platform.python_version(),
                config.server.inbound_server,
                config.pool.strategy,
            ],
            1.0,
        )
        # No rate gauges: rates are rate() over the byte counters, at the resolution the
        # user chooses.
        yield from (bytes_total, attempts, errors, retries, reconnects, state, rtt, streams)
        yield from (ready, build)

    def _client_metrics(self) -> Iterator[Metric]:
        stats = self.sources.client_stats
        requests = CounterMetricFamily(
            "cwnd_proxy_client_requests",
            "Client requests answered, by status class (none: the client left or the "
            "connection broke before any answer)",
            labels=["code"],
        )
        for code, count in sorted(stats.by_class.items()):
            requests.add_metric([code], count)
        yield requests
        for name, help_text, hist in (
            (
                "cwnd_proxy_client_response_headers_seconds",
                "From a client request's arrival to its response headers going out",
                stats.first_byte,
            ),
            (
                "cwnd_proxy_client_request_duration_seconds",
                "From a client request's arrival to the end of its response",
                stats.duration,
            ),
        ):
            family = HistogramMetricFamily(name, help_text)
            family.add_metric([], hist.cumulative(), sum_value=hist.total)
            yield family


def _version() -> str:
    try:
        return importlib.metadata.version("cwnd-warm-up-proxy")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class AdminServer:
    def __init__(self, sources: TelemetrySources, host: str, port: int) -> None:
        self.sources = sources
        self.host = host
        self.port = port
        self.registry = CollectorRegistry()
        self.registry.register(PoolCollector(sources))
        # The standard process and runtime metrics (CPU, memory, file descriptors, GC).
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def healthz(self) -> tuple[int, bytes]:
        ready = self.sources.pool.ready_count
        body = json.dumps(
            {
                "ready_sessions": ready,
                "pool_size": len(self.sources.pool.slots),
                "upstream": self.sources.config.upstream_url,
            }
        ).encode()
        return (200 if ready > 0 else 503), body

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                request = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
            parts = request.decode("latin-1").split()
            method = parts[0] if parts else ""
            path = parts[1].split("?")[0] if len(parts) >= 2 else ""
            extra = ""
            if path in ("/metrics", "/healthz") and method not in ("GET", "HEAD"):
                status, ctype, body = 405, "text/plain", b"method not allowed: GET or HEAD\n"
                extra = "Allow: GET, HEAD\r\n"
            elif path == "/metrics":
                status, ctype, body = (
                    200,
                    "text/plain; version=0.0.4",
                    generate_latest(self.registry),
                )
            elif path == "/healthz":
                status, body = self.healthz()
                ctype = "application/json"
            else:
                status, ctype, body = 404, "text/plain", b"not found: try /metrics or /healthz\n"
            reason = {
                200: "OK",
                404: "Not Found",
                405: "Method Not Allowed",
                503: "Service Unavailable",
            }[status]
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n{extra}"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + (b"" if method == "HEAD" else body)
            )
            await writer.drain()
        writer.close()
