"""Acceptance measurements of the emulated WAN testbed (needs root).

    python -m cwndproxy.lab.bench.testbed_check [--out bench/results]

1. RTT through the link at 20, 80 and 200 ms: TCP connect times (SYN -> SYN/ACK), many
   samples; median error and jitter (p99 of |sample - median|).
2. Bulk throughput at 20, 100 and 200 Mbit/s: the second of two back-to-back 64 MiB
   downloads on one connection (so slow start is over), and the emulator's CPU share.
3. `probe` against nginx (cubic) at 80 ms / 100 Mbit/s with slow_start_after_idle 1 and 0,
   with the origin-side cwnd sampled by `ss`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from cwndproxy.lab.testbed import netns, origins

MINRTT_SCRIPT = """
import re, socket, subprocess, sys, time
host, port, rtt = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.create_connection((host, port))
s.sendall(b"x" * 100)
time.sleep(rtt * 3)
out = subprocess.run(["ss", "-tinH", "dst", host], capture_output=True, text=True).stdout
print(re.search(r"minrtt:([0-9.]+)", out).group(1))
"""

CONNECT_SCRIPT = """
import socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for _ in range(n):
    t = time.perf_counter()
    s = socket.create_connection((host, port))
    print((time.perf_counter() - t) * 1000)
    s.close()
    time.sleep(0.02)
"""


def rtt_check(rtt_ms: float, samples: int) -> dict[str, object]:
    with netns.Testbed(netns.LinkSpec(rtt_ms / 1000, 100e6)) as tb:
        info = origins.start_demo_origin(tb)
        del info
        out = tb.run(
            "c",
            [
                sys.executable,
                "-c",
                CONNECT_SCRIPT,
                tb.origin_addr,
                str(origins.H2C_PORT),
                str(samples),
            ],
            timeout=600,
        ).stdout
        late = tb.link_stats().get("late_ms", {})
        kernel = []
        for _ in range(10):
            r = tb.run(
                "c",
                [
                    sys.executable,
                    "-c",
                    MINRTT_SCRIPT,
                    tb.origin_addr,
                    str(origins.H2C_PORT),
                    str(rtt_ms / 1000),
                ],
                timeout=60,
            )
            kernel.append(float(r.stdout))
    values = [float(v) for v in out.split()]
    median = statistics.median(values)
    dev = sorted(abs(v - median) for v in values)
    return {
        "set_ms": rtt_ms,
        "median_ms": median,
        "error_pct": (median / rtt_ms - 1) * 100,
        "jitter_p99_ms": dev[int(0.99 * (len(dev) - 1))],
        "jitter_p90_ms": dev[int(0.90 * (len(dev) - 1))],
        "samples": len(values),
        "emulator_late_ms": late,
        "kernel_minrtt_ms": statistics.median(kernel),
        "kernel_error_pct": (statistics.median(kernel) / rtt_ms - 1) * 100,
    }


def throughput_check(rate_mbit: float, rtt_ms: float) -> dict[str, float]:
    with netns.Testbed(netns.LinkSpec(rtt_ms / 1000, rate_mbit * 1e6)) as tb:
        info = origins.start_nginx(tb)
        # TLS: curl 7.88 fails (exit 16) reusing an h2c prior-knowledge connection.
        url = f"{info.tls_url}{info.blob_path}"
        cpu0, wall0 = tb.cpu_seconds(), time.monotonic()
        out = tb.run(
            "c",
            [
                "curl",
                "-s",
                "--http2",
                "--cacert",
                info.ca_file,
                "-w",
                "%{speed_download}\n",
                "-o",
                "/dev/null",
                url,
                "-o",
                "/dev/null",
                url,
            ],
            timeout=600,
        ).stdout
        cpu = (tb.cpu_seconds() - cpu0) / (time.monotonic() - wall0)
        stats = tb.link_stats()
        drops = tb.device_drops()
    speeds = [float(v) for v in out.split()]
    goodput = speeds[-1] * 8 / 1e6
    return {
        "rate_mbit": rate_mbit,
        "rtt_ms": rtt_ms,
        "goodput_mbit": goodput,
        "share_of_rate": goodput / rate_mbit,
        "emulator_cpu_share": cpu,
        "queue_drops": _queue_drops(stats),
        "device_drops": sum(drops.values()),
    }


def _queue_drops(stats: dict[str, object]) -> int:
    downstream = stats.get("o_to_a")
    return int(downstream.get("dropped_queue", -1)) if isinstance(downstream, dict) else -1


def probe_check(ssai: bool) -> dict[str, object]:
    with netns.Testbed(netns.LinkSpec(0.08, 100e6), origin_ssai=ssai) as tb:
        info = origins.start_nginx(tb)
        observer = tb.observer(origins.TLS_PORT, 0.02)
        r = tb.run_cwnd_proxy(
            "probe",
            f"{info.tls_url}{info.blob_path}",
            "--ca-file",
            info.ca_file,
            "--size",
            "4MB",
            "--json",
            timeout=300,
        )
        samples = observer.stop()
    result = json.loads(r.stdout)
    series = [(round(s.at, 3), s.cwnd, s.lastsnd_ms) for s in samples]
    return {
        "ssai": int(ssai),
        "verdict": result["verdict"],
        "warm_ms": result["warm_ms"],
        "cold_ms": result["cold"]["ttlb_ms"],
        "idle_ms": {k: v["ttlb_ms"] for k, v in result["idle"].items()},
        "rtt_ms": result["rtt_ms"],
        "cwnd_series": series,
    }


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", default="bench/results")
    p.add_argument("--samples", type=int, default=200)
    args = p.parse_args()
    netns.check_available()
    report: dict[str, object] = {}
    report["rtt"] = [rtt_check(rtt, args.samples) for rtt in (20, 80, 200)]
    for row in report["rtt"]:  # type: ignore[attr-defined]
        print(
            "RTT  set {set_ms:5.0f} ms  median {median_ms:7.2f} ms  error {error_pct:+5.2f}%  "
            "jitter p90 {jitter_p90_ms:5.2f} p99 {jitter_p99_ms:5.2f} ms  (n={samples}); "
            "emulator release lateness {emulator_late_ms}; kernel minrtt {kernel_minrtt_ms:.3f} ms "
            "({kernel_error_pct:+.2f}%)".format(**row)
        )
    report["throughput"] = [throughput_check(rate, 80) for rate in (20, 100, 200)]
    for row in report["throughput"]:  # type: ignore[attr-defined]
        print(
            "rate {rate_mbit:5.0f} Mbit/s at {rtt_ms:.0f} ms: goodput {goodput_mbit:6.1f} "
            "({share_of_rate:.0%}), emulator CPU {emulator_cpu_share:.0%}, queue drops "
            "{queue_drops}, device drops {device_drops}".format(**row)
        )
    report["probe"] = [probe_check(True), probe_check(False)]
    for row in report["probe"]:  # type: ignore[attr-defined]
        print(
            f"probe ssai={row['ssai']}: warm {row['warm_ms']:.0f} ms, cold "
            f"{row['cold_ms']:.0f} ms, idle {row['idle_ms']}\n  {row['verdict']}"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "testbed_check.json").write_text(json.dumps(report, indent=2))
    print(f"written to {out / 'testbed_check.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
