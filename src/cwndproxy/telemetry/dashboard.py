"""The live dashboard (rich, every 500 ms) and its headless twin (log or JSON lines).

``snapshot()`` turns the proxy's state into plain data; ``render()`` and ``log_line()`` only
format it. Kernel figures come from TCP_INFO, read here at the render rate; every number
shown is a measurement, and the window figure is the one that means something for the
warmed direction:
- upload: our own snd_cwnd (packets and bytes) against the BDP of the per-connection target;
- download: the window lives on the server, so we show what arrives per RTT (receive rate x
  RTT) and the kernel's receive-buffer estimate (rcv_space).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from cwndproxy.upstream.tcpinfo import read_tcp_info

if TYPE_CHECKING:
    from cwndproxy.telemetry.sources import TelemetrySources

log = logging.getLogger("cwndproxy")
SPARK = "▁▂▃▄▅▆▇█"


@dataclass
class SessionRow:
    index: int
    state: str
    state_seconds: float
    rtt_ping_ms: float | None
    rtt_kernel_ms: float | None
    window: str
    rx_bps: float
    tx_bps: float
    dummy_tx: int
    dummy_rx: int
    real_tx: int
    real_rx: int
    streams: int
    reconnects: int
    # Client requests this session carried in the last 10 s: short requests finish within
    # a frame of the dashboard, so "serving" is rarely on screen.
    requests_10s: int = 0
    note: str = ""


@dataclass
class Snapshot:
    upstream: str
    transport: str
    direction: str
    # auto or ping without a path for its direction: only real requests grow windows.
    no_warm_up_path: bool
    strategy: str
    target_bps: float
    pool_size: int
    uptime: float
    rows: list[SessionRow]
    ready: int
    rx_bps: float
    tx_bps: float
    totals: dict[str, int]
    bandwidth_bps: float
    bandwidth_source: str
    history_real: list[float] = field(default_factory=list)
    history_dummy: list[float] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _bytes(n: float) -> str:
    """Compact decimal bytes, always with a B: 939B, 65.5kB, 27.4MB. Bits only ever appear
    as Mb/s, so the two never share a symbol (the dashboard must fit 80 columns)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}TB"


def _bps(n: float) -> str:
    return f"{n / 1e6:.1f}Mb/s"


def _age(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}m"


def snapshot(sources: TelemetrySources) -> Snapshot:
    config, monitor = sources.config, sources.sampler
    direction = config.pool.warm_up_direction
    target = config.per_connection_target_bps
    now = time.monotonic()
    rows: list[SessionRow] = []
    warnings: list[str] = []
    if config.target.tls_insecure_skip_verify:
        warnings.append("TLS verification of the upstream is OFF (--insecure)")
    requests = monitor.requests + [None] * (len(sources.pool.slots) - len(monitor.requests))
    for slot, window, req_window in zip(sources.pool.slots, monitor.slots, requests, strict=True):
        session = slot.session
        ctl = slot.controller
        state, since = slot.state.value, slot.state_since
        note = ""
        if ctl is not None and slot.state.value == "ready":
            state, since = ctl.state_name, ctl.state_since
            note = ctl.note
            if ctl.last_error and state in ("backoff", "failed"):
                note = ctl.last_error
        elif slot.last_error:
            note = slot.last_error
        if slot.draining:
            note = note or "GOAWAY: draining"
        real_tx, real_rx, dummy_tx, dummy_rx = window.rate()
        rx_bps, tx_bps = (real_rx + dummy_rx) * 8, (real_tx + dummy_tx) * 8
        info = None
        sock = session.socket if session is not None else None
        if sock is not None:
            try:
                info = read_tcp_info(sock)
            except OSError:
                info = None
        rtt_kernel = info.rtt_us / 1000 if info else None
        rtt = session.rtt if session is not None else None
        rtt_s = rtt if rtt else (rtt_kernel / 1000 if rtt_kernel else None)
        if info is None:
            window_text = "-"
        elif direction == "upload":
            bdp = target / 8 * rtt_s if rtt_s else 0
            window_text = f"{info.snd_cwnd}p {_bytes(info.cwnd_bytes)}/{_bytes(bdp)}"
        else:
            per_rtt = rx_bps / 8 * rtt_s if rtt_s else 0
            window_text = f"{_bytes(per_rtt)}/{_bytes(info.rcv_space)}"
        counters = slot.counters
        requests_10s = req_window.delta()[0] if req_window else 0
        rows.append(
            SessionRow(
                index=slot.index,
                state=state,
                state_seconds=now - since,
                rtt_ping_ms=rtt * 1000 if rtt else None,
                rtt_kernel_ms=rtt_kernel,
                window=window_text,
                rx_bps=rx_bps,
                tx_bps=tx_bps,
                dummy_tx=counters.dummy_tx,
                dummy_rx=counters.dummy_rx,
                real_tx=counters.real_tx,
                real_rx=counters.real_rx,
                streams=session.active_streams if session is not None else 0,
                reconnects=slot.reconnects,
                requests_10s=requests_10s,
                note=note,
            )
        )
        if note and (
            "back" in state
            or "failed" in state
            or "GOAWAY" in note
            or "path-limited" in note
            or "do not hold" in note
        ):
            warnings.append(f"session {slot.index}: {note}")
    totals = sources.pool.totals()
    real_tx, real_rx, dummy_tx, dummy_rx = monitor.total.rate()
    est = monitor.estimated_bandwidth(direction)
    hist = monitor.total.history(buckets=40)
    return Snapshot(
        upstream=config.upstream_url,
        transport="TLS h2" if config.target.tls else "h2c",
        direction=direction,
        no_warm_up_path=config.holds_only_what_requests_grow,
        strategy=config.pool.strategy,
        target_bps=target,
        pool_size=config.pool.pool_size,
        uptime=now - sources.started_at,
        rows=rows,
        ready=sources.pool.ready_count,
        rx_bps=(real_rx + dummy_rx) * 8,
        tx_bps=(real_tx + dummy_tx) * 8,
        totals={
            "real_tx": totals.real_tx,
            "real_rx": totals.real_rx,
            "dummy_tx": totals.dummy_tx,
            "dummy_rx": totals.dummy_rx,
            "requests": totals.requests,
            "errors": totals.errors,
            "retries": totals.retries,
        },
        bandwidth_bps=est.bps,
        bandwidth_source=est.source,
        history_real=[(h[0] + h[1]) * 8 for h in hist],
        history_dummy=[(h[2] + h[3]) * 8 for h in hist],
        warnings=warnings,
    )


def sparkline(values: list[float], top: float) -> str:
    if top <= 0:
        return SPARK[0] * len(values)
    return "".join(
        SPARK[min(len(SPARK) - 1, int(v / top * (len(SPARK) - 1) + 0.5))] for v in values
    )


def render(s: Snapshot) -> Group:
    # Two lines, so that a long upstream URL never wraps the header at 80 columns.
    head = Text.assemble(
        ("cwnd-warm-up-proxy ", "bold"),
        f"→ {s.upstream} ({s.transport})\n",
        f"{s.direction} / {s.strategy}, target {_bps(s.target_bps)} a session, up {_age(s.uptime)}",
        ("  no warm-up path: holds what requests grow" if s.no_warm_up_path else "", "dim"),
    )
    table = Table(box=None, pad_edge=False, expand=False, header_style="bold")
    window_head = "cwnd/BDP" if s.direction == "upload" else "rx/RTT,rcv"
    for col, justify in (
        ("#", "right"),
        ("state", "left"),
        ("RTT ms", "right"),
        (window_head, "right"),
        ("Mb/s", "right"),
        ("dummy", "right"),
        ("real", "right"),
        ("req", "right"),
        ("st", "right"),
        ("rc", "right"),
    ):
        table.add_column(col, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for r in s.rows:
        rtt = "/".join(
            f"{v:.0f}" if v is not None else "-" for v in (r.rtt_ping_ms, r.rtt_kernel_ms)
        )
        rate = f"{max(r.rx_bps, r.tx_bps) / 1e6:.1f}"
        style = {
            "holding": "green",
            "serving": "cyan",
            "ramping": "yellow",
            "backoff": "red",
            "failed": "red",
            "draining": "magenta",
        }.get(r.state, "")
        table.add_row(
            str(r.index),
            Text(f"{r.state} {_age(r.state_seconds)}", style=style),
            rtt,
            r.window,
            rate,
            f"{_bytes(r.dummy_tx)}/{_bytes(r.dummy_rx)}",
            f"{_bytes(r.real_tx)}/{_bytes(r.real_rx)}",
            str(r.requests_10s),
            str(r.streams),
            str(r.reconnects),
        )
    t = s.totals
    totals = Text(
        f"ready {s.ready}/{s.pool_size}  rx {_bps(s.rx_bps)} tx {_bps(s.tx_bps)} (10 s)  "
        f"real {_bytes(t['real_tx'])}/{_bytes(t['real_rx'])}  dummy {_bytes(t['dummy_tx'])}/"
        f"{_bytes(t['dummy_rx'])}\n"
        f"upstream req {t['requests']} err {t['errors']} retry {t['retries']}\n"
        f"est. bandwidth {_bps(s.bandwidth_bps)} ({s.bandwidth_source})"
    )
    legend = Text(
        "RTT ms: h2 PING / kernel. Mb/s: megabits a second over 10 s. dummy, real:\n"
        "bytes sent/received (kB, MB: 10^3, 10^6 bytes). req: requests in the last 10 s.\n"
        "st: open streams. rc: reconnects. "
        + (
            "cwnd/BDP: our snd_cwnd (packets, bytes) / target BDP."
            if s.direction == "upload"
            else "rx/RTT,rcv: bytes received per RTT / kernel\n"
            "rcv_space (the server holds the cwnd of a download)."
        ),
        style="dim",
    )
    top = max([*s.history_real, *s.history_dummy, 1.0])
    hist = Text.assemble(
        ("real  ", "cyan"),
        sparkline(s.history_real, top),
        "\n",
        ("dummy ", "yellow"),
        sparkline(s.history_dummy, top),
        f"  (10 s, max {_bps(top)})",
    )
    parts: list[Any] = [head, table, totals, hist, legend]
    parts += [Text(f"! {w}", style="bold red") for w in s.warnings[:4]]
    return Group(*parts)


def log_line(s: Snapshot) -> str:
    states = " ".join(f"{r.index}:{r.state}" for r in s.rows)
    t = s.totals
    return (
        f"ready {s.ready}/{s.pool_size} [{states}] rx {_bps(s.rx_bps)} tx {_bps(s.tx_bps)} "
        f"real {_bytes(t['real_tx'])}/{_bytes(t['real_rx'])} dummy {_bytes(t['dummy_tx'])}/"
        f"{_bytes(t['dummy_rx'])} req {t['requests']} err {t['errors']}"
        + "".join(f" ! {w}" for w in s.warnings)
    )


def status_fields(s: Snapshot) -> dict[str, Any]:
    """The periodic status as structured log fields: the numbers, not the sparkline
    histories (the dashboard's 10 s of samples would make every line ~2 KB)."""
    fields = asdict(s)
    del fields["history_real"], fields["history_dummy"]
    return fields


async def run_tui(
    sources: TelemetrySources, console: Console | None = None, interval: float = 0.5
) -> None:
    console = console or Console()
    with Live(
        render(snapshot(sources)), console=console, refresh_per_second=4, transient=False
    ) as live:
        while True:
            await asyncio.sleep(interval)
            live.update(render(snapshot(sources)))


async def run_headless(sources: TelemetrySources, fmt: str, interval: float = 5.0) -> None:
    while True:
        await asyncio.sleep(interval)
        snap = snapshot(sources)
        if fmt == "json":
            log.info("status", extra={"fields": status_fields(snap)})
        else:
            log.info("%s", log_line(snap))
