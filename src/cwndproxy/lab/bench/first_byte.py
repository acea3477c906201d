"""How the frame size the proxy announces shows on a path, side by side in one run.

An origin that sends DATA frames as large as it is allowed (the demo origin does; nginx
sends ``http2_chunk_size``, 8 KiB) makes every frame arrive whole or not at all: a 1 MiB
frame is 168 ms on a 50 Mbit/s path before its first byte can be forwarded. This runs the
demo origin on the emulated WAN and, interleaved round by round, fetches one object after
an idle gap three ways: through the proxy with the default frame size (auto, from
``--bandwidth-mbps``), through a second proxy that announces 1 MiB frames, and straight
from the origin on a new connection (curl). Prints time to first byte and to last byte,
median per arm. Root only (network namespaces). Run:
``python -m cwndproxy.lab.bench.first_byte [--rtt 0.05] [--rate 50e6] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from cwndproxy.lab.bench.prepare import testbed_out_dir
from cwndproxy.lab.testbed import netns, origins

ARMS = ("auto frames", "1 MiB frames", "direct")
SIZE = 4_000_000
IDLE = 3.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cwndproxy.lab.bench.first_byte")
    p.add_argument("--rtt", type=float, default=0.05, help="seconds (default 0.05)")
    p.add_argument("--rate", type=float, default=50e6, help="bit/s (default 50e6)")
    p.add_argument("--rounds", type=int, default=5, help="fetches per arm (default 5)")
    p.add_argument("--out", default="bench/results/first_byte", help="proxy logs")
    args = p.parse_args(argv)
    out = testbed_out_dir(p.prog, args.out)
    if out is None:
        return 1
    big = out / "frames-1m.toml"
    big.write_text("[pool]\nmax_frame_size = 1048576\n")
    arms: dict[str, list[tuple[float, float]]] = {
        "auto frames": [],
        "1 MiB frames": [],
        "direct": [],
    }
    with netns.Testbed(netns.LinkSpec(args.rtt, args.rate)) as tb:
        info = origins.start_demo_origin(tb)
        common = ["--upstream", info.h2c_url, "--bandwidth-mbps", f"{args.rate / 1e6:g}"]
        common += ["--download-path", f"/cwnd/blob?size={origins.BLOB_SIZE}"]
        proxies = {
            "auto frames": ("127.0.0.1:8080", tb.start_proxy(common, log=out / "auto.log")),
            "1 MiB frames": (
                "127.0.0.1:8081",
                tb.start_proxy(
                    [*common, "--config", str(big)],
                    listen="127.0.0.1:8081",
                    register="proxy-1m",
                    log=out / "1m.log",
                ),
            ),
        }
        try:
            time.sleep(5.0)  # connect and grow
            for _ in range(args.rounds):
                for name, (listen, _) in proxies.items():
                    time.sleep(IDLE)
                    arms[name].append(tb.curl_times(f"http://{listen}/cwnd/blob?size={SIZE}"))
                url = f"{info.h2c_url}/cwnd/blob?size={SIZE}"
                arms["direct"].append(tb.curl_times("--http2-prior-knowledge", url))
        finally:
            for _, proc in proxies.values():
                netns.stop_process(proc)
    ideal = args.rtt + SIZE * 8 / args.rate
    print(
        f"{SIZE / 1e6:g} MB from the demo origin after {IDLE:g} s idle, {args.rtt * 1000:g} ms"
        f" RTT, {args.rate / 1e6:g} Mbit/s, {args.rounds} rounds; ideal {ideal * 1000:.0f} ms"
    )
    print(f"  {'arm':16s} {'first byte ms':>14s} {'last byte ms':>13s}  /ideal")
    for name, samples in arms.items():
        first = statistics.median(s[0] for s in samples) * 1000
        last = statistics.median(s[1] for s in samples) * 1000
        print(f"  {name:16s} {first:14.0f} {last:13.0f}  {last / 1000 / ideal:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
