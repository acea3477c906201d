"""``cwnd-proxy probe URL``: does this upstream lose its congestion window when idle?

One HTTP/2 connection (TLS with ALPN h2, or h2c), no background traffic: the session's RTT
PINGs are off during the measurement, because a PING answer is itself a send that would
refresh the server's idle timer.

1. RTT from HTTP/2 PINGs (median of several).
2. Time to last byte (TTLB) of a Range GET of ``size`` bytes on the new connection (cold).
3. The same request back to back on the now busy connection (warm).
4. The same request after idle gaps (each preceded by a warm-up request).

The verdict compares the idle and cold times with the warm one and with the ideal
RTT + size/bandwidth (bandwidth from the warm run, or given).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import asdict, dataclass, field

from cwndproxy.upstream.counters import TrafficKind
from cwndproxy.upstream.dial import UpstreamTarget, dial
from cwndproxy.upstream.session import H2Session, SessionSettings, UpstreamError
from cwndproxy.urls import split_http_url

# After the longest idle gap, this much slower than warm counts as a window reset (a
# restart from the initial window costs several RTTs); a gap whose ratio reaches
# ONSET_RATIO marks when it starts. Between MILD_RATIO and RESET_RATIO the path is slower
# after idle but not reset (e.g. cwnd below one BDP after a loss, sent as one burst).
RESET_RATIO = 1.5
ONSET_RATIO = 1.3
MILD_RATIO = 1.15
# Below this RTT a window restart costs a few hundred microseconds at most: the times
# measure CPU and scheduling noise, and the verdict would flip from run to run (seen on
# loopback).
MIN_RTT_MS = 2.0


class ProbeError(Exception):
    """The probe could not run (bad URL, unreachable, unexpected status); says why."""


@dataclass
class Transfer:
    ttlb_ms: float
    ttfb_ms: float
    bytes: int
    status: int


@dataclass
class ProbeResult:
    url: str
    size: int
    connect_ms: float
    rtt_ms: float
    rtt_min_ms: float
    cold: Transfer
    warm: list[Transfer]
    idle: dict[str, Transfer]
    bandwidth_mbps: float
    bandwidth_source: str
    ideal_ms: float
    range_supported: bool
    resets_after_idle: bool = False
    idle_threshold_s: float | None = None
    saving_ms: float = 0.0
    verdict: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def warm_ms(self) -> float:
        return statistics.median(t.ttlb_ms for t in self.warm)

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["warm_ms"] = self.warm_ms
        return data


def target_from_url(
    url: str, *, ca_file: str | None = None, insecure: bool = False, server_name: str | None = None
) -> tuple[UpstreamTarget, str]:
    try:
        host, port, tls, path = split_http_url(url)
    except ValueError as exc:
        raise ProbeError(f"{url!r}: {exc}") from None
    target = UpstreamTarget(
        host=host, port=port, tls=tls, server_name=server_name, ca_file=ca_file, insecure=insecure
    )
    if path.startswith("?") or not path:
        path = "/" + path
    return target, path


async def fetch(session: H2Session, path: str, size: int) -> Transfer:
    """GET the first ``size`` bytes (Range); if the server ignores Range, read ``size``
    bytes and cancel the stream."""
    start = time.perf_counter()
    stream = await session.open_stream(
        "GET",
        path,
        [(b"range", f"bytes=0-{size - 1}".encode()), (b"user-agent", b"cwnd-probe")],
        end_stream=True,
        kind=TrafficKind.REAL,
    )
    response = await stream.receive_response(timeout=60)
    ttfb = time.perf_counter() - start
    if response.status not in (200, 206):
        stream.cancel()
        raise ProbeError(f"GET {path} answered {response.status}; need 200 or 206")
    got = await stream.read_up_to(size)
    ttlb = time.perf_counter() - start
    if got >= size and not stream.closed:
        stream.cancel()
    return Transfer(ttlb * 1000, ttfb * 1000, got, response.status)


async def run_probe(
    url: str,
    *,
    size: int = 4_000_000,
    idles: tuple[float, ...] = (0.5, 1.0, 3.0),
    warm_runs: int = 3,
    pings: int = 10,
    bandwidth_mbps: float | None = None,
    ca_file: str | None = None,
    insecure: bool = False,
    server_name: str | None = None,
) -> ProbeResult:
    target, path = target_from_url(url, ca_file=ca_file, insecure=insecure, server_name=server_name)
    t0 = time.perf_counter()
    # The protocol's default frame size, as curl and browsers announce: a larger frame
    # arrives whole or not at all, which would add its path time to every first byte.
    settings = SessionSettings(max_frame_size=16384)
    session = await dial(target, settings=settings, rtt_probe_interval=0)
    connect_ms = (time.perf_counter() - t0) * 1000
    try:
        rtts = [await session.ping() * 1000 for _ in range(pings)]
        cold = await fetch(session, path, size)
        if cold.bytes < size:
            size = cold.bytes  # the object is smaller than asked: probe what there is
        warm = [await fetch(session, path, size) for _ in range(warm_runs)]
        idle: dict[str, Transfer] = {}
        for gap in idles:
            await fetch(session, path, size)  # make sure the window is up before the gap
            await asyncio.sleep(gap)
            idle[f"{gap:g}"] = await fetch(session, path, size)
    except UpstreamError as exc:
        raise ProbeError(f"the upstream failed during the probe: {exc}") from exc
    finally:
        await session.aclose()

    rtt = statistics.median(rtts)
    warm_ms = statistics.median(t.ttlb_ms for t in warm)
    if bandwidth_mbps:
        source = "given"
        bw = bandwidth_mbps
    else:
        source = "warm run"
        transfer_s = max((warm_ms - rtt) / 1000, 1e-6)
        bw = size * 8 / transfer_s / 1e6
    result = ProbeResult(
        url=url,
        size=size,
        connect_ms=connect_ms,
        rtt_ms=rtt,
        rtt_min_ms=min(rtts),
        cold=cold,
        warm=warm,
        idle=idle,
        bandwidth_mbps=bw,
        bandwidth_source=source,
        ideal_ms=rtt + size * 8 / (bw * 1e6) * 1000,
        range_supported=cold.status == 206,
    )
    judge(result)
    return result


def judge(result: ProbeResult) -> None:
    """Fill in the verdict from the measured times (a pure function of the result)."""
    warm = result.warm_ms
    mb = result.size / 1e6
    ratios = {float(gap): t.ttlb_ms / warm for gap, t in result.idle.items()}
    longest = max(ratios) if ratios else None
    reset = longest is not None and ratios[longest] >= RESET_RATIO
    resetting = sorted(gap for gap, ratio in ratios.items() if ratio >= ONSET_RATIO)
    if not result.range_supported:
        result.notes.append("the server ignored Range (200): bytes were read, then cancelled")
    cold_ratio = result.cold.ttlb_ms / warm
    cold_text = (
        f"a new connection takes {cold_ratio:.1f}x the warm time "
        f"({result.cold.ttlb_ms:.0f} ms vs {warm:.0f} ms)"
    )
    if result.rtt_min_ms < MIN_RTT_MS:
        result.verdict = (
            f"inconclusive: the RTT is {result.rtt_min_ms:.2f} ms, too short for the "
            "congestion window to matter (slow start costs RTTs, and these are nearly "
            "free); the times above are CPU noise. Probe across the path your clients use, "
            "or an emulated WAN (cwnd-proxy testbed up)"
        )
        return
    if longest is not None and reset and resetting:
        worst = result.idle[f"{longest:g}"].ttlb_ms
        result.resets_after_idle = True
        result.idle_threshold_s = resetting[0]
        result.saving_ms = max(0.0, worst - warm)
        result.verdict = (
            f"this upstream restarts slow start after ~{resetting[0]:g} s idle: a {mb:.1f} MB "
            f"fetch takes {ratios[longest]:.1f}x longer after {longest:g} s idle "
            f"({worst:.0f} ms vs {warm:.0f} ms warm, ideal {result.ideal_ms:.0f} ms); "
            f"warm-up would save ~{result.saving_ms:.0f} ms per request; {cold_text}"
        )
    elif longest is not None and ratios[longest] >= MILD_RATIO:
        worst = result.idle[f"{longest:g}"].ttlb_ms
        result.saving_ms = max(0.0, worst - warm)
        result.verdict = (
            f"mildly slower after idle, no full reset: a {mb:.1f} MB fetch took "
            f"{ratios[longest]:.2f}x the warm time after {longest:g} s idle ({worst:.0f} ms vs "
            f"{warm:.0f} ms); keeping connections busy would save ~{result.saving_ms:.0f} ms; "
            f"{cold_text}"
        )
    elif longest is not None:
        result.verdict = (
            f"no idle penalty seen: after {longest:g} s idle a {mb:.1f} MB fetch took "
            f"{ratios[longest]:.2f}x the warm time ({warm:.0f} ms); warm-up of idle "
            f"connections would not help much here; {cold_text}"
        )
    else:
        result.verdict = cold_text


def format_report(r: ProbeResult) -> str:
    lines = [
        f"probe {r.url}",
        f"  connect            {r.connect_ms:8.1f} ms",
        f"  RTT (h2 PING)      {r.rtt_ms:8.1f} ms  (min {r.rtt_min_ms:.1f})",
        f"  bandwidth          {r.bandwidth_mbps:8.1f} Mbit/s ({r.bandwidth_source})",
        f"  ideal RTT+size/bw  {r.ideal_ms:8.1f} ms  for {r.size} bytes",
        f"  cold (new conn)    {r.cold.ttlb_ms:8.1f} ms  {r.cold.ttlb_ms / r.ideal_ms:5.2f}x ideal",
        f"  warm (busy conn)   {r.warm_ms:8.1f} ms  {r.warm_ms / r.ideal_ms:5.2f}x ideal",
    ]
    for gap, t in r.idle.items():
        label = f"after {gap} s idle"
        lines.append(f"  {label:18s} {t.ttlb_ms:8.1f} ms  {t.ttlb_ms / r.ideal_ms:5.2f}x ideal")
    lines += [f"  note: {n}" for n in r.notes]
    lines.append(f"verdict: {r.verdict}")
    return "\n".join(lines)
