"""``cwnd-proxy bench --ping-hold``: how long does an HTTP/2 PING keep a Linux server's
window? (root: testbed)

Three HTTP/2 connections to the testbed's nginx (TLS, cubic, tcp_slow_start_after_idle=1),
side by side, each first grown by two real fetches, then left idle for ``--hold`` seconds:
- ``ping-0.5rto``: a PING every half of the smallest possible RTO (auto's rule);
- ``ping-1.5rto``: a PING every 1.5 RTO (too slow: every answer follows an idle RTO);
- ``silent``: nothing at all.
Each connection's hold starts right after its own growth (the time axis is per connection).
The origin's sockets are sampled with ``ss`` throughout (cwnd, lastsnd); at the end each
connection fetches the same object, so the held window shows as time too.

Output: a table of cwnd at chosen times, ``ping_hold.json`` and ``ping_hold.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ARMS = ("ping-0.5rto", "ping-1.5rto", "silent")


# -- the client, inside the client namespace ---------------------------------------------
async def _client(host: str, port: int, ca: str, path: str, size: int, hold: float) -> None:
    from cwndproxy.http2 import perf
    from cwndproxy.upstream.counters import TrafficKind
    from cwndproxy.upstream.dial import UpstreamTarget, dial
    from cwndproxy.upstream.session import H2Session
    from cwndproxy.warmup.policy import estimated_rto, hold_ping_interval

    perf.apply()

    async def fetch(s: H2Session) -> float:
        t0 = time.monotonic()
        headers = [(b"range", f"bytes=0-{size - 1}".encode())]
        stream = await s.open_stream("GET", path, headers, end_stream=True, kind=TrafficKind.REAL)
        await stream.receive_response(60)
        await stream.read_up_to(size + 1)
        return time.monotonic() - t0

    sessions = {}
    for arm in ARMS:
        s = await dial(UpstreamTarget(host, port, True, ca_file=ca), rtt_probe_interval=0)
        sessions[arm] = s
        local = s.extra_info("sockname")[1]
        print(json.dumps({"arm": arm, "local": local}), flush=True)
    for s in sessions.values():
        for _ in range(3):
            await s.ping()
    rtt = min(s.min_rtt or 0.1 for s in sessions.values())
    periods = {"ping-0.5rto": hold_ping_interval(rtt), "ping-1.5rto": 1.5 * estimated_rto(rtt)}

    async def hold_one(arm: str) -> None:
        """PINGs on a fixed schedule (not waiting for the answers) until cancelled: each
        connection is held right up to its own final fetch."""
        period = periods.get(arm)
        pings: set[asyncio.Task[float]] = set()
        try:
            while True:
                if period is None:
                    await asyncio.sleep(1.0)
                    continue
                await asyncio.sleep(period)
                task = asyncio.get_running_loop().create_task(sessions[arm].ping(timeout=5))
                pings.add(task)
                task.add_done_callback(pings.discard)
        finally:
            for task in pings:
                task.cancel()

    holds = {}
    starts = {}
    for arm, s in sessions.items():
        # Grow this connection, then start holding it at once: a connection that waits
        # silently for the others' growth has lost its window before its hold begins.
        await fetch(s)
        await fetch(s)
        starts[arm] = time.monotonic()
        holds[arm] = asyncio.get_running_loop().create_task(hold_one(arm))
    print(json.dumps({"hold_from": starts, "rtt": rtt, "periods": periods}), flush=True)
    ttlb = {}
    for arm in ARMS:  # one after the other (they share the bottleneck), each after `hold`
        await asyncio.sleep(max(0.0, starts[arm] + hold - time.monotonic()))
        holds[arm].cancel()
        await asyncio.gather(holds[arm], return_exceptions=True)
        ttlb[arm] = await fetch(sessions[arm])
    print(json.dumps({"hold_to": time.monotonic(), "ttlb": ttlb}), flush=True)
    for s in sessions.values():
        await s.aclose()


# -- the experiment, outside ---------------------------------------------------------------
def run(rtt: float, rate: float, hold: float, size: int, out: Path) -> dict[str, Any]:
    from cwndproxy.lab.testbed import netns, origins

    with netns.Testbed(netns.LinkSpec(rtt, rate)) as tb:
        # nginx closes a connection without streams after keepalive_timeout (75 s), PINGs
        # or not; this experiment asks about the kernel, so nginx waits longer here.
        info = origins.start_nginx(tb, keepalive_timeout=f"{int(hold) + 300}s")
        observer = tb.observer(origins.TLS_PORT, 0.2)
        proc = tb.popen(
            "c",
            [
                sys.executable,
                "-m",
                "cwndproxy.lab.bench.ping_hold",
                "--client",
                tb.origin_addr,
                str(origins.TLS_PORT),
                info.ca_file,
                info.blob_path,
                str(size),
                str(hold),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out_text, err = proc.communicate(timeout=hold + 300)
        samples = observer.stop()
        if proc.returncode != 0:
            raise RuntimeError(f"client failed: {err.decode(errors='replace')[-2000:]}")
        base = observer.started_at
    lines = [json.loads(x) for x in out_text.decode().splitlines() if x.startswith("{")]
    ports = {str(x["local"]): x["arm"] for x in lines if "local" in x}
    meta = next(x for x in lines if "hold_from" in x)
    end = next(x for x in lines if "hold_to" in x)
    series: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
    for s in samples:
        arm = ports.get(s.peer.rsplit(":", 1)[1])
        if arm is not None:
            series[arm].append(
                {
                    # Seconds since this connection's own hold began.
                    "t": round(s.at - (meta["hold_from"][arm] - base), 3),
                    "cwnd": s.cwnd,
                    "ssthresh": s.ssthresh,
                    "lastsnd_ms": s.lastsnd_ms,
                    "rto_ms": s.rto_ms,
                    "effective": s.effective_cwnd(),
                }
            )
    return {
        "rtt_s": rtt,
        "rate_bps": rate,
        "bdp_packets": rate * rtt / 8 / 1448,
        "hold_s": hold,
        "ping_periods_s": meta["periods"],
        "min_rtt_s": meta["rtt"],
        "ttlb_after_hold_s": end["ttlb"],
        "ideal_s": rtt + size * 8 / rate,
        "series": series,
    }


def at(series: list[dict[str, Any]], t: float) -> dict[str, Any] | None:
    """The last sample at or before ``t`` (hold time)."""
    best = None
    for point in series:
        if point["t"] <= t:
            best = point
    return best


def plot(result: dict[str, Any], path: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for arm in ARMS:
        pts = [p for p in result["series"][arm] if p["t"] >= -5 and p["cwnd"]]
        # What the next send would start with (an idle restart applied when pending).
        ax.plot([p["t"] for p in pts], [p["effective"] for p in pts], lw=1, label=f"{arm}")
    ax.axhline(result["bdp_packets"], color="grey", ls="--", lw=0.8, label="1 BDP")
    ax.set_yscale("log")
    ax.set_xlabel("seconds since the last real transfer")
    ax.set_ylabel("origin cwnd for the next send (packets)")
    ax.set_title(
        f"origin window while idle: {result['rtt_s'] * 1000:g} ms, "
        f"{result['rate_bps'] / 1e6:g} Mbit/s, nginx TLS, cubic, slow_start_after_idle=1"
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return str(path)


def main(argv: list[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    if raw[:1] == ["--client"]:
        host, port, ca, path, size, hold = raw[1:7]
        asyncio.run(_client(host, int(port), ca, path, int(size), float(hold)))
        return 0
    p = argparse.ArgumentParser(
        prog="cwnd-proxy bench --ping-hold",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--rtt", type=float, default=0.080, help="seconds (default 0.08)")
    p.add_argument("--rate", type=float, default=100e6, help="bit/s (default 100e6)")
    p.add_argument("--hold", type=float, default=600.0, help="idle seconds (default 600)")
    p.add_argument("--size", type=int, default=4_000_000, help="fetch size (default 4 MB)")
    p.add_argument("--out", default="bench/results/ping_hold", help="output directory")
    args = p.parse_args(raw)
    from cwndproxy.lab.bench.prepare import testbed_out_dir

    out = testbed_out_dir("cwnd-proxy bench --ping-hold", args.out)
    if out is None:
        return 1
    print(f"holding for {args.hold:g} s ...", flush=True)
    result = run(args.rtt, args.rate, args.hold, args.size, out)
    (out / "ping_hold.json").write_text(json.dumps(result))
    checkpoints = [t for t in (1, 10, 60, 300, 600, 1800) if t <= args.hold]
    print(f"PING periods: {result['ping_periods_s']}; BDP {result['bdp_packets']:.0f} packets")
    print(f"{'arm':14s}" + "".join(f"{f't={t}s':>10s}" for t in checkpoints) + "   TTLB after")
    for arm in ARMS:
        row = []
        for t in checkpoints:
            point = at(result["series"][arm], t)
            row.append(f"{point['effective'] if point else '-':>10}")
        ttlb = result["ttlb_after_hold_s"][arm]
        print(
            f"{arm:14s}" + "".join(row) + f"   {ttlb * 1000:.0f} ms "
            f"({ttlb / result['ideal_s']:.2f}x ideal)"
        )
    png = plot(result, out / "ping_hold.png")
    print(f"written: {out / 'ping_hold.json'}" + (f", {png}" if png else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
