"""Wiring: config -> pool + forwarding app + inbound server, with graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable

from cwndproxy.config import Config, parse_host_port
from cwndproxy.config.reload import ReloadPlan, plan_reload
from cwndproxy.pool.pool import Pool
from cwndproxy.pool.slot import PoolSlot
from cwndproxy.proxy.app import ForwardingApp, ForwardingSettings
from cwndproxy.proxy.asgi import App
from cwndproxy.proxy.request_rules import HeaderLimits
from cwndproxy.proxy.server import (
    GranianServer,
    HypercornServer,
    InboundServer,
    Listener,
)
from cwndproxy.telemetry.exporter import AdminServer
from cwndproxy.telemetry.logs import access_logger
from cwndproxy.telemetry.sampler import Monitor
from cwndproxy.telemetry.sources import TelemetrySources
from cwndproxy.upstream.dial import UpstreamTarget
from cwndproxy.upstream.session import H2Session, SessionSettings
from cwndproxy.warmup.controller import WarmupController, WarmupSettings
from cwndproxy.warmup.coordinator import WarmupCoordinator

log = logging.getLogger("cwndproxy")


def upstream_target(config: Config) -> UpstreamTarget:
    t = config.target
    return UpstreamTarget(
        host=t.host,
        port=t.port,
        tls=t.tls,
        server_name=t.tls_server_name,
        ca_file=t.tls_ca_file,
        insecure=t.tls_insecure_skip_verify,
        connect_timeout=t.connect_timeout_ms / 1000,
        congestion_control=t.congestion_control,
    )


def session_settings(config: Config) -> SessionSettings:
    p = config.pool
    return SessionSettings(
        stream_window=p.stream_window_bytes,
        connection_window=p.connection_window_bytes,
        max_frame_size=config.effective_max_frame_size,
        # auto bounds the upstream's first flight after idle through the connection
        # window (warm-up LimitBurst); other strategies grant it all upfront.
        metered_window=(
            p.strategy == "auto"
            and p.burst_limit_bdp > 0
            and p.warm_up_direction in ("download", "both")
        ),
        codec=p.http2_codec,
    )


def forwarding_settings(config: Config) -> ForwardingSettings:
    s = config.server
    return ForwardingSettings(
        response_timeout=config.target.response_timeout_ms / 1000,
        write_timeout=s.write_timeout_ms / 1000,
        acquire_timeout=max(1.0, config.target.connect_timeout_ms / 1000),
        preserve_host=s.preserve_host,
        access_log=access_logger(s.access_log, config.ui.log_format),
        limits=HeaderLimits(
            max_field_bytes=s.max_request_header_field_bytes,
            max_total_bytes=s.max_request_header_bytes,
            max_count=s.max_request_headers,
            max_target_bytes=s.max_request_target_bytes,
        ),
    )


def inbound_server(config: Config, app: App) -> InboundServer:
    s = config.server
    listener = Listener(
        host=s.host,
        port=s.port,
        tls_cert=s.tls_cert_file if s.inbound_tls else None,
        tls_key=s.tls_key_file if s.inbound_tls else None,
        read_timeout_ms=s.read_timeout_ms,
        backlog=s.backlog,
        reuse_port=s.reuse_port,
    )
    if s.inbound_server == "hypercorn":
        return HypercornServer(app, listener)
    return GranianServer(
        app,
        listener,
        h2c=s.inbound_h2c,
        idle_timeout_ms=s.idle_timeout_ms,
        stream_window=config.pool.stream_window_bytes,
        max_connections=s.max_connections,
    )


class ListenError(Exception):
    """A listening socket could not be opened; says which one (proxy or admin) and where."""

    def __init__(self, role: str, address: str, exc: OSError) -> None:
        super().__init__(f"cannot listen on {address} ({role}): {exc.strerror or exc}")
        self.role = role
        self.address = address


class ProxyService:
    def __init__(self, config: Config) -> None:
        self.config = config
        p, s = config.pool, config.server
        self.pool = Pool(
            upstream_target(config),
            p.pool_size,
            settings=session_settings(config),
            rtt_probe_interval=p.rtt_probe_interval_ms / 1000,
            reconnect_min=p.reconnect_min_ms / 1000,
            reconnect_max=p.reconnect_max_ms / 1000,
            stream_budget=p.upstream_max_streams or None,
        )
        self.app = ForwardingApp(self.pool, forwarding_settings(config))
        self.server = inbound_server(config, self.app)
        self.started_at = time.monotonic()
        self.monitor = Monitor(self.pool)
        self.telemetry = TelemetrySources(
            pool=self.pool,
            sampler=self.monitor,
            client_stats=self.app.client_stats,
            started_at=self.started_at,
            current_config=lambda: self.config,
        )
        self.admin: AdminServer | None = None
        if s.admin:
            host, port = parse_host_port(s.admin, "server.admin")
            self.admin = AdminServer(self.telemetry, host, port)
        # Real traffic anywhere in the pool pauses grows everywhere; one session grows at a time.
        self.warmup = WarmupCoordinator()
        if p.strategy != "off":
            self.pool.listeners.append(self._attach_warmup)

    def warmup_settings(self) -> WarmupSettings:
        p = self.config.pool
        return WarmupSettings(
            strategy=p.strategy,
            direction=p.warm_up_direction,
            target_bps=self.config.per_connection_target_bps,
            path_bps=p.bandwidth_mbps * 1e6,
            size_bytes=p.warm_up_size_bytes,
            interval_ms=p.warm_up_interval_ms,
            dwell=p.per_connection_dwell_ms / 1000,
            download_path=p.warm_up_download_path,
            upload_path=p.warm_up_upload_path,
            upload_method=p.warm_up_upload_method,
            supports_range=p.download_supports_range,
            upload_retry=p.fallback_upload_retry,
            headers=dict(p.warm_up_headers),
            burst_limit_bdp=p.burst_limit_bdp,
            renew_lossy_sessions=p.renew_lossy_sessions,
        )

    def _attach_warmup(self, slot: PoolSlot, session: H2Session) -> None:
        controller = WarmupController(
            session,
            self.warmup_settings(),
            index=slot.index,
            pool_size=len(self.pool.slots),
            coordinator=self.warmup,
        )
        slot.controller = controller
        controller.start()

    async def reload(self, new: Config) -> ReloadPlan:
        """Apply a validated new configuration as far as a running proxy can (see
        reload.py); warm sessions the change does not touch keep their connections."""
        plan = plan_reload(self.config, new)
        old_strategy = self.config.pool.strategy
        config = self.config = plan.config
        p = config.pool
        self.app.settings = forwarding_settings(config)
        self.pool.configure(
            settings=session_settings(config),
            reconnect_min=p.reconnect_min_ms / 1000,
            reconnect_max=p.reconnect_max_ms / 1000,
            stream_budget=p.upstream_max_streams or None,
        )
        grace = config.server.shutdown_grace_ms / 1000
        if p.pool_size < len(self.pool.slots):
            for slot in self.pool.slots[p.pool_size :]:
                if slot.controller is not None:
                    await slot.controller.stop()
                    slot.controller = None
        if plan.restart_warmup:
            # New controllers on the same connections: what the kernel holds stays held.
            for slot in self.pool.slots:
                if slot.controller is not None:
                    await slot.controller.stop()
                    slot.controller = None
            if old_strategy == "off" and p.strategy != "off":
                self.pool.listeners.append(self._attach_warmup)
            elif old_strategy != "off" and p.strategy == "off":
                self.pool.listeners.remove(self._attach_warmup)
            if p.strategy != "off":
                for slot in self.pool.slots[: p.pool_size]:
                    if slot.session is not None and slot.session.is_usable:
                        self._attach_warmup(slot, slot.session)
        self.pool.resize(p.pool_size, grace)
        return plan

    async def start(self, wait_ready: float = 0.0) -> None:
        self.pool.start()
        self.monitor.start()
        if self.admin is not None:
            try:
                await self.admin.start()
            except OSError as exc:
                raise ListenError("admin", self.config.server.admin or "", exc) from exc
        if wait_ready > 0:
            await self.pool.wait_settled(wait_ready)
        try:
            await self.server.start()
        except OSError as exc:
            s = self.config.server
            raise ListenError("proxy", f"{s.host}:{s.port}", exc) from exc

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish within the grace period, then
        GOAWAY and close every upstream session."""
        grace = self.config.server.shutdown_grace_ms / 1000
        deadline = time.monotonic() + grace
        stop_server = asyncio.get_running_loop().create_task(self.server.stop())
        self.monitor.stop()
        if self.admin is not None:
            await self.admin.stop()
        await asyncio.gather(
            *(s.controller.stop() for s in self.pool.slots if s.controller is not None)
        )
        if not await self.app.wait_idle(grace):
            log.warning(
                "shutdown: %d requests still running after %.1fs", self.app.in_flight, grace
            )
        await self.pool.close(grace=max(0.0, deadline - time.monotonic()))
        with contextlib.suppress(Exception):
            async with asyncio.timeout(max(1.0, deadline - time.monotonic())):
                await stop_server


class ProcessSignals:
    """SIGINT and SIGTERM (stop) and SIGHUP (reload), caught from the moment this is
    entered, before anything starts: a signal while the inbound server comes up must not
    kill the process with the default action (a SIGHUP sent as soon as the port listened
    did, in the reload test under load). A SIGHUP before ``on_reload`` is set waits for it."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.stop: asyncio.Future[str] = self._loop.create_future()
        self._reload: Callable[[], None] | None = None
        self._reload_pending = False

    def __enter__(self) -> ProcessSignals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._loop.add_signal_handler(sig, self._on_stop, sig)
        self._loop.add_signal_handler(signal.SIGHUP, self._on_hup)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self._loop.remove_signal_handler(sig)

    def on_reload(self, callback: Callable[[], None]) -> None:
        self._reload = callback
        if self._reload_pending:
            self._reload_pending = False
            callback()

    def _on_stop(self, sig: signal.Signals) -> None:
        if not self.stop.done():
            self.stop.set_result(sig.name)

    def _on_hup(self) -> None:
        if self._reload is None:
            self._reload_pending = True
        else:
            self._reload()
