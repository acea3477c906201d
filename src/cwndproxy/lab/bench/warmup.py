"""``cwnd-proxy bench``: the warm-up benchmark on the emulated WAN testbed (needs root).

Scenario S1 (download): 80 ms RTT, 100 Mbit/s, 1-BDP queue, nginx over TLS with cubic and
slow_start_after_idle=1; the proxy (pool of 2, download warm-up, target 50 Mbit/s per
connection) and a curl client in the client namespace. Each arm gets a fresh testbed:
- ``auto``, ``burst``, ``ping``, ``off``: a 4 MB fetch through the proxy after every 3 s
  of idle; for ``auto`` and ``burst`` also fetches fired at random moments while holding;
- ``cold``: curl straight to nginx on a new connection each time;
- ``ideal``: RTT + size/rate, computed.
The origin's cwnd is sampled with ``ss`` throughout; dummy traffic while holding is read
from the origin's bytes_acked during a quiet period with no requests.

Scenario U1 (upload): the same link, the demo origin's sink, ``auto`` and ``burst`` (upload
warm-up) vs ``off``: a 4 MB POST through the proxy after 3 s idle; the proxy's own snd_cwnd
sampled.

The path matrix (``--matrix``, lab/bench/matrix.py) is the wider benchmark; this one keeps the
scenarios the first engine was built on, for comparison across versions.

Results: a table on stdout, ``results.json`` and PNG plots in the output directory.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cwndproxy.lab.bench.prepare import testbed_out_dir
from cwndproxy.lab.testbed import netns, origins
from cwndproxy.lab.testbed.observer import KernelSample

PROXY_PORT = 8080
SIZE = 4_000_000
RTT = 0.080
RATE = 100e6
POOL = 2


@dataclass
class Arm:
    name: str
    ttlb: list[float] = field(default_factory=list)
    random_ttlb: list[float] = field(default_factory=list)
    dummy_share: float | None = None
    dummy_mbit: float | None = None
    cwnd: list[tuple[float, str, int]] = field(default_factory=list)  # (t, conn, cwnd)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "runs": len(self.ttlb)}
        if self.ttlb:
            out["p50_ms"] = statistics.median(self.ttlb) * 1000
            out["p95_ms"] = _p95(self.ttlb) * 1000
        if self.random_ttlb:
            out["random_p50_ms"] = statistics.median(self.random_ttlb) * 1000
            out["random_p95_ms"] = _p95(self.random_ttlb) * 1000
        out["dummy_share_of_target"] = self.dummy_share
        out["dummy_mbit_s_per_connection"] = self.dummy_mbit
        return out


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _curl_time(tb: netns.Testbed, argv: list[str]) -> float:
    return tb.curl_times(*argv)[1]


def _start_proxy(
    tb: netns.Testbed, info: origins.OriginInfo, strategy: str, args: list[str], log: Path
) -> subprocess.Popen[bytes]:
    """The proxy in front of the testbed's origin over TLS, logging to ``log``."""
    return tb.start_proxy(
        [
            "-v",
            "--pool-size",
            str(POOL),
            "--bandwidth-mbps",
            str(RATE / 1e6),
            "--upstream",
            info.tls_url,
            "--ca-file",
            info.ca_file,
            "--strategy",
            strategy,
            *args,
        ],
        listen=f"127.0.0.1:{PROXY_PORT}",
        log=log,
    )


def _wait_warm(log: Path, strategy: str, timeout: float = 30.0) -> None:
    """Wait until every session reports HOLDING in the proxy's log (or a fixed time for
    `off`, which has no warm-up states)."""
    if strategy == "off":
        time.sleep(3.0)
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        holding = {
            line.split("session ")[1].split(":")[0]
            for line in text.splitlines()
            if "-> holding" in line
        }
        if len(holding) >= POOL:
            time.sleep(1.0)
            return
        time.sleep(0.2)
    raise RuntimeError(f"sessions did not reach HOLDING within {timeout:.0f}s (see {log})")


def _acked(samples: list[KernelSample]) -> dict[str, int]:
    latest: dict[str, int] = {}
    for s in samples:
        latest[s.peer] = max(latest.get(s.peer, 0), s.bytes_acked or 0)
    return latest


def _cwnd_rows(samples: list[KernelSample], by_local: bool = False) -> list[tuple[float, str, int]]:
    """(t, connection, cwnd). Origin-side sockets differ by peer; the proxy's own sockets
    (upload) all have the origin as peer and differ by local address."""
    return [
        (round(s.at, 3), s.local if by_local else s.peer, s.cwnd)
        for s in samples
        if s.cwnd is not None
    ]


def download_arm(strategy: str, runs: int, out: Path, rng: random.Random) -> Arm:
    arm = Arm(strategy)
    link = netns.LinkSpec(RTT, RATE)
    with netns.Testbed(link) as tb:
        info = origins.start_nginx(tb)
        url = f"http://127.0.0.1:{PROXY_PORT}{info.blob_path}"
        observer = tb.observer(origins.TLS_PORT, 0.05)
        log = out / f"proxy-{strategy}.log"
        proxy = _start_proxy(tb, info, strategy, ["--download-path", info.blob_path], log)
        try:
            _wait_warm(log, strategy)
            # A quiet period: what the origin sends now is dummy traffic only.
            before = _acked(observer.samples)
            t0 = time.monotonic()
            time.sleep(6.0)
            after = _acked(observer.samples)
            quiet = time.monotonic() - t0
            dummy_bps = sum(after.get(k, 0) - before.get(k, 0) for k in after) * 8 / quiet
            arm.dummy_mbit = dummy_bps / POOL / 1e6
            arm.dummy_share = dummy_bps / RATE
            for _ in range(runs):
                time.sleep(3.0)
                arm.ttlb.append(_curl_time(tb, ["-r", f"0-{SIZE - 1}", url]))
            if strategy in ("auto", "burst"):
                # Requests at random moments of the holding cycle: the mid-burst penalty.
                for _ in range(runs):
                    time.sleep(rng.uniform(0.3, 3.0))
                    arm.random_ttlb.append(_curl_time(tb, ["-r", f"0-{SIZE - 1}", url]))
        finally:
            netns.stop_process(proxy)
            arm.cwnd = _cwnd_rows(observer.stop())
    return arm


def cold_arm(runs: int) -> Arm:
    arm = Arm("cold direct curl")
    with netns.Testbed(netns.LinkSpec(RTT, RATE)) as tb:
        info = origins.start_nginx(tb)
        for _ in range(runs):
            time.sleep(0.5)
            arm.ttlb.append(
                _curl_time(
                    tb,
                    [
                        "--http2",
                        "--cacert",
                        info.ca_file,
                        "-r",
                        f"0-{SIZE - 1}",
                        f"{info.tls_url}{info.blob_path}",
                    ],
                )
            )
    arm.notes.append("new TCP+TLS connection per fetch; time includes the handshakes")
    return arm


def upload_arm(strategy: str, runs: int, out: Path) -> Arm:
    arm = Arm(f"upload {strategy}")
    with netns.Testbed(netns.LinkSpec(RTT, RATE)) as tb:
        info = origins.start_demo_origin(tb)
        # The proxy's own sockets to the origin: our snd_cwnd is the window for upload.
        observer = tb.observer(origins.TLS_PORT, 0.05, side="c")
        upload = ["--direction", "upload", "--upload-path", "/cwnd/sink"]
        log = out / f"proxy-upload-{strategy}.log"
        proxy = _start_proxy(tb, info, strategy, upload, log)
        payload = out / "upload.bin"
        payload.write_bytes(bytes(SIZE))
        try:
            _wait_warm(log, strategy)
            for _ in range(runs):
                time.sleep(3.0)
                arm.ttlb.append(
                    _curl_time(
                        tb,
                        [
                            "--data-binary",
                            f"@{payload}",
                            f"http://127.0.0.1:{PROXY_PORT}/cwnd/sink",
                        ],
                    )
                )
        finally:
            netns.stop_process(proxy)
            arm.cwnd = _cwnd_rows(observer.stop(), by_local=True)
    return arm


def plot(arms: list[Arm], ideal: float, out: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ["matplotlib not installed (pip install '.[bench]'): no plots"]
    files = []
    fig, axes = plt.subplots(len([a for a in arms if a.cwnd]), 1, figsize=(10, 8), sharex=True)
    bdp_packets = RATE / POOL * RTT / 8 / 1448
    for ax, arm in zip(axes, [a for a in arms if a.cwnd], strict=False):
        conns = sorted({c for _, c, _ in arm.cwnd})
        for conn in conns:
            pts = [(t, w) for t, c, w in arm.cwnd if c == conn]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=0.8, label=conn)
        ax.axhline(bdp_packets, color="grey", ls="--", lw=0.8)
        ax.axhline(0.7 * bdp_packets, color="grey", ls=":", lw=0.8)
        ax.set_ylabel("cwnd (packets)")
        ax.set_title(f"{arm.name}: sender cwnd per connection (dashed: per-connection BDP)")
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    path = out / "cwnd.png"
    fig.savefig(path, dpi=90)
    files.append(str(path))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(10, 4))
    labels, data = [], []
    for arm in arms:
        if arm.ttlb:
            labels.append(arm.name)
            data.append([v * 1000 for v in arm.ttlb])
        if arm.random_ttlb:
            labels.append(f"{arm.name} (random moments)")
            data.append([v * 1000 for v in arm.random_ttlb])
    ax.boxplot(data, vert=False, showfliers=True)
    ax.set_yticks(range(1, len(labels) + 1), labels)
    ax.axvline(ideal * 1000, color="green", ls="--", lw=1, label="ideal RTT + size/rate")
    ax.set_xlabel("time to last byte (ms)")
    ax.legend()
    fig.tight_layout()
    path = out / "ttlb.png"
    fig.savefig(path, dpi=90)
    files.append(str(path))
    plt.close(fig)
    return files


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="cwnd-proxy bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--runs", type=int, default=7, help="fetches per arm (default 7)")
    p.add_argument("--out", default="bench/results/warmup", help="output directory")
    p.add_argument("--no-upload", action="store_true", help="skip the upload scenario")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    out = testbed_out_dir("cwnd-proxy bench", args.out)
    if out is None:
        return 1
    rng = random.Random(args.seed)
    ideal = RTT + SIZE * 8 / RATE
    arms = [download_arm(s, args.runs, out, rng) for s in ("auto", "burst", "ping", "off")]
    arms.append(cold_arm(args.runs))
    upload = (
        [] if args.no_upload else [upload_arm(s, args.runs, out) for s in ("auto", "burst", "off")]
    )
    off = statistics.median(next(a for a in arms if a.name == "off").ttlb)
    print(
        f"\nS1: {SIZE / 1e6:g} MB download after 3 s idle, {RTT * 1000:g} ms RTT, "
        f"{RATE / 1e6:g} Mbit/s, pool {POOL}; ideal {ideal * 1000:.0f} ms"
    )
    print(
        f"  {'arm':28s} {'p50 ms':>8s} {'p95 ms':>8s} {'/ideal':>7s} {'off/arm':>8s}"
        f" {'dummy share':>12s}"
    )
    for arm in arms:
        p50 = statistics.median(arm.ttlb)
        share = f"{arm.dummy_share:.1%}" if arm.dummy_share is not None else "-"
        print(
            f"  {arm.name:28s} {p50 * 1000:8.0f} {_p95(arm.ttlb) * 1000:8.0f} "
            f"{p50 / ideal:7.2f} {off / p50:8.2f} {share:>12s}"
        )
        if arm.random_ttlb:
            r50 = statistics.median(arm.random_ttlb)
            print(
                f"  {arm.name + ' (random moments)':28s} {r50 * 1000:8.0f} "
                f"{_p95(arm.random_ttlb) * 1000:8.0f} {r50 / ideal:7.2f}"
            )
    for arm in upload:
        p50 = statistics.median(arm.ttlb)
        print(f"  {arm.name:28s} {p50 * 1000:8.0f} {_p95(arm.ttlb) * 1000:8.0f} {p50 / ideal:7.2f}")
    files = plot(arms + upload, ideal, out)
    report = {
        "scenario": {
            "rtt_s": RTT,
            "rate_bps": RATE,
            "size": SIZE,
            "pool": POOL,
            "ideal_ms": ideal * 1000,
            "idle_s": 3.0,
        },
        "arms": [
            a.summary() | {"ttlb_s": a.ttlb, "random_ttlb_s": a.random_ttlb} for a in arms + upload
        ],
        "cwnd": {a.name: a.cwnd for a in arms + upload},
        "plots": files,
    }
    (out / "results.json").write_text(json.dumps(report, indent=1))
    print(f"  written: {out / 'results.json'} {' '.join(files)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
