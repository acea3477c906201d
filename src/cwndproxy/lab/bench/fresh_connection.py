"""On a lossy path, is a new connection dialled ahead faster than a reused one?

The question behind ``pool.renew_lossy_sessions`` (docs/WARMUP.md section 4): a reused
connection carries the window and ssthresh its past losses left, a new one slow-starts
with no ssthresh. This builds a testbed (root: network namespaces), starts nginx in it and,
from the client namespace, fetches ``--size`` bytes over h2c in interleaved pairs,
``--gap`` seconds apart: once on one long-lived connection, once on a connection dialled
just before the request (its handshake not timed). It also reports in how many fetches
the receiver saw packets out of order (``tcpi_rcv_ooopack``).

    python -m cwndproxy.lab.bench.fresh_connection --rtt 40ms --rate 20mbit --loss 0.01
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from cwndproxy.cli.units import parse_duration, parse_rate
from cwndproxy.lab.bench.small_requests import write_results
from cwndproxy.upstream.dial import UpstreamTarget, dial
from cwndproxy.upstream.session import H2Session
from cwndproxy.upstream.tcpinfo import read_field
from cwndproxy.warmup.workers import DownloadWorker

_MODULE = "cwndproxy.lab.bench.fresh_connection"
ARMS = ("reused", "fresh")


async def _session(host: str, port: int) -> H2Session:
    session = await dial(UpstreamTarget(host, port, tls=False), rtt_probe_interval=0)
    await session.ping()  # the server's SETTINGS are in before the first request
    return session


def _out_of_order(session: H2Session) -> int:
    assert session.socket is not None
    return read_field(session.socket, "rcv_ooopack") or 0


async def _fetch(session: H2Session, path: str, size: int) -> tuple[float, int]:
    """Seconds to fetch ``size`` bytes, and packets out of order meanwhile."""
    before = _out_of_order(session)
    started = time.monotonic()
    received = (await DownloadWorker(session, path, {}).fetch(size)).received
    if received < size:
        raise RuntimeError(f"fetched {received} of {size} bytes")
    return time.monotonic() - started, _out_of_order(session) - before


async def measure(
    host: str, port: int, path: str, size: int, gap: float, pairs: int
) -> dict[str, list[tuple[float, int]]]:
    results: dict[str, list[tuple[float, int]]] = {arm: [] for arm in ARMS}
    reused = await _session(host, port)
    await _fetch(reused, path, size)  # its first transfer: not a reused connection's yet
    try:
        for index in range(pairs):
            for arm in ARMS if index % 2 == 0 else tuple(reversed(ARMS)):
                await asyncio.sleep(gap)
                if arm == "reused":
                    results[arm].append(await _fetch(reused, path, size))
                    continue
                fresh = await _session(host, port)
                try:
                    await asyncio.sleep(0.1)  # dialled ahead; idle far less than an RTO
                    results[arm].append(await _fetch(fresh, path, size))
                finally:
                    await fresh.aclose()
    finally:
        await reused.aclose()
    return results


def summary(results: dict[str, list[tuple[float, int]]]) -> dict[str, Any]:
    """Per arm: p50 and p90 (nearest rank) in ms, and fetches that saw packets out of order."""
    out: dict[str, Any] = {}
    for arm, runs in results.items():
        times = sorted(seconds for seconds, _ in runs)
        out[arm] = {
            "fetches": len(runs),
            "p50_ms": round(statistics.median(times) * 1000, 1),
            "p90_ms": round(times[max(0, -(-9 * len(times) // 10) - 1)] * 1000, 1),
            "out_of_order_fetches": sum(1 for _, ooo in runs if ooo > 0),
            "ms": [round(seconds * 1000, 1) for seconds, _ in runs],
        }
    return out


def _inside(args: argparse.Namespace) -> int:
    results = asyncio.run(measure(args.host, args.port, args.path, args.size, args.gap, args.pairs))
    print(json.dumps(summary(results)))
    return 0


def _outside(args: argparse.Namespace) -> int:
    from cwndproxy.lab.testbed import netns, origins

    spec = netns.LinkSpec(parse_duration(args.rtt), parse_rate(args.rate), loss=args.loss)
    with netns.Testbed(spec) as tb:
        info = origins.start_nginx(tb, blob_size=max(4_000_000, 2 * args.size))
        argv = [sys.executable, "-m", _MODULE, "--inside", "--host", tb.origin_addr]
        argv += ["--port", str(origins.H2C_PORT), "--path", info.blob_path]
        argv += ["--size", str(args.size), "--gap", str(args.gap), "--pairs", str(args.pairs)]
        done = tb.run("c", argv, timeout=args.pairs * 2 * (args.gap + 30) + 60)
        if done.returncode != 0:
            print(done.stderr.strip(), file=sys.stderr)
            return 1
    result = {"rtt": args.rtt, "rate": args.rate, "loss": args.loss, "size": args.size}
    result["arms"] = json.loads(done.stdout.strip().splitlines()[-1])
    for arm, row in result["arms"].items():
        print(
            f"{arm:7s} p50 {row['p50_ms']:7.1f} ms  p90 {row['p90_ms']:7.1f} ms  "
            f"out of order in {row['out_of_order_fetches']}/{row['fetches']} fetches"
        )
    write_results(args.out, result)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m {_MODULE}", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rtt", default="40ms", help="default 40ms")
    parser.add_argument("--rate", default="20mbit", help="default 20mbit")
    parser.add_argument("--loss", type=float, default=0.01, help="random loss (default 0.01)")
    parser.add_argument("--size", type=int, default=200_000, help="bytes per fetch")
    parser.add_argument("--gap", type=float, default=2.0, help="seconds between fetches")
    parser.add_argument("--pairs", type=int, default=20, help="fetches per arm (default 20)")
    parser.add_argument("--out", type=Path, help="write the results here as JSON")
    # The measuring half, run by the other inside the testbed's client namespace.
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--host", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    return _inside(args) if args.inside else _outside(args)


if __name__ == "__main__":
    sys.exit(main())
