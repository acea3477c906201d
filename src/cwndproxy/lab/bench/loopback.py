"""Loopback: bulk throughput and per-request cost, the proxy beside HAProxy in one run.

Run with ``make bench-loopback``. Every arm runs in one invocation and the arms are
interleaved round by round, so noise from other tenants of this shared 2-core machine hits
them alike; the report gives medians and ratios. This is a benchmark, not a test: nothing
here asserts a speed.

- ``bulk``: a large download. For each nginx DATA frame size (``http2_chunk_size``: nginx's
  default 8k, and 1m as a tuned origin), curl -> nginx directly, curl -> HAProxy -> nginx,
  and curl -> proxy -> nginx with each event loop, over h2c and over TLS (TLS on both legs).
  Ratios are to the direct download and to HAProxy.
- ``small``: many 1 KiB requests (small_requests.py): req/s and CPU per request over h2c and
  HTTP/1.1, and latency at a fixed rate, the proxy and HAProxy side by side.
- ``floors``: what the layers of that request path cost alone (floors.py): the inbound
  server with a trivial app, the upstream HTTP/2 client alone, and a lower bound for any
  pure-Python HTTP/2 client.

    python -m cwndproxy.lab.bench.loopback [--parts bulk,small,floors] [--size-mib 256] [--rounds 5]
        [--chunks 8k,1m] [--loops uvloop,asyncio] [--codecs lean,h2] [--requests 20000]
        [--small-rounds 12] [--small-requests 5000] [--rate 1000] [--out bench/results]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cwndproxy.lab.bench import floors, small_requests
from cwndproxy.lab.haproxy import HaproxyServer
from cwndproxy.lab.nginx import NginxServer
from cwndproxy.lab.ports import free_port, wait_listening

MiB = 1024 * 1024


def make_certs(directory: Path) -> tuple[str, str, str]:
    """CA file, certificate chain file and key file for localhost/127.0.0.1; also
    ``combined.pem`` (chain and key in one file, as HAProxy's ``crt`` wants)."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    ca_file, cert_file, key_file = (directory / n for n in ("ca.pem", "cert.pem", "key.pem"))
    ca.cert_pem.write_to_path(str(ca_file))
    cert.private_key_pem.write_to_path(str(key_file))
    with open(cert_file, "wb") as fh:
        for blob in cert.cert_chain_pems:
            fh.write(blob.bytes())
    (directory / "combined.pem").write_bytes(cert_file.read_bytes() + key_file.read_bytes())
    return str(ca_file), str(cert_file), str(key_file)


@dataclass
class Arm:
    name: str
    group: str
    url: str
    curl_args: list[str]
    samples: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class RunningProxy:
    port: int
    pid: int


@contextlib.contextmanager
def proxy_process(
    args: list[str],
    *,
    dashboard: bool = False,
    port: int | None = None,
    source: str | None = None,
    python: str | None = None,
    module: Sequence[str] = ("cwndproxy",),
) -> Iterator[RunningProxy]:
    """A proxy process (a plain pool: warm-up traffic would only add noise on loopback); with
    ``dashboard`` it runs on a pseudo-terminal (util-linux ``script``) so the live dashboard
    renders every 500 ms, as for a person watching it. ``python``: another interpreter
    (with the project's dependencies installed) instead of this one. ``module``: what
    ``python -m`` runs, with its own arguments before ``run`` (a lab wrapper of the CLI)."""
    port = port or free_port()
    extra = os.environ.get("CWND_BENCH_PROXY_ARGS", "").split()
    argv = [
        python or sys.executable,
        "-m",
        *module,
        "run",
        "--listen",
        f"127.0.0.1:{port}",
        "--pool-size",
        "2",
        "--strategy",
        "off",
        # Loopback carries >10 Gbit/s: say so, which also lets the upstream send 1 MiB
        # frames (pool.max_frame_size auto), as the bulk arms need.
        "--bandwidth-mbps",
        "10000",
        *args,
        *extra,
    ]
    if dashboard:
        argv = ["script", "-qfec", shlex.join(argv), "/dev/null"]
    else:
        argv.append("--no-tui")
    env = None
    if source:
        # Another checkout's code (its src/), for a before/after arm in the same run.
        env = {**os.environ, "PYTHONPATH": source}
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        wait_listening(port, exited=lambda: proc.poll() is not None)
        # Under ``script`` the proxy is its child: charge CPU time to the proxy itself.
        yield RunningProxy(port, proc.pid if not dashboard else _only_child(proc.pid))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _only_child(pid: int) -> int:
    import psutil

    children = psutil.Process(pid).children(recursive=True)
    return children[-1].pid if children else pid


def curl_rate(url: str, *extra: str) -> float:
    """MiB/s of one download, as curl measured it (bytes / total time)."""
    out = subprocess.run(
        [
            "curl",
            "-s",
            "-S",
            "-f",
            "-m",
            "120",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download} %{time_total}",
            *extra,
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout.split()
    size, seconds = int(out[0]), float(out[1])
    return size / MiB / seconds


def bulk_arms(
    tmp: Path,
    stack: contextlib.ExitStack,
    certs: tuple[str, str, str],
    *,
    size: int,
    chunks: list[str],
    loops: list[str],
    dashboard_arm: bool,
    codecs: list[str] | None = None,
) -> list[Arm]:
    ca, cert, key = certs
    blob = tmp / "blob.bin"
    arms: list[Arm] = []
    h2c = ["--http2-prior-knowledge"]
    tls = ["--http2", "--cacert", ca]
    for chunk in chunks:
        nginx = NginxServer(
            tmp / f"nginx-{chunk}",
            h2c_port=free_port(),
            tls_port=free_port(),
            cert_file=cert,
            key_file=key,
            http2_chunk_size=chunk,
        )
        if not blob.exists():
            blob = nginx.add_blob("blob.bin", size)
        else:
            nginx.www.mkdir(parents=True, exist_ok=True)
            os.link(blob, nginx.www / "blob.bin")
        stack.enter_context(nginx)
        group_h2c, group_tls = f"h2c, nginx {chunk} frames", f"TLS, nginx {chunk} frames"
        arms.append(Arm("direct", group_h2c, f"http://127.0.0.1:{nginx.h2c_port}/blob.bin", h2c))
        arms.append(Arm("direct", group_tls, f"https://localhost:{nginx.tls_port}/blob.bin", tls))
        haproxy = stack.enter_context(
            HaproxyServer(tmp / f"haproxy-h2c-{chunk}", origin_port=nginx.h2c_port or 0)
        )
        arms.append(
            Arm("haproxy", group_h2c, f"http://127.0.0.1:{haproxy.clear_port}/blob.bin", h2c)
        )
        haproxy = stack.enter_context(
            HaproxyServer(
                tmp / f"haproxy-tls-{chunk}",
                origin_port=nginx.tls_port or 0,
                origin_tls_ca=ca,
                cert_pem=str(tmp / "combined.pem"),
            )
        )
        arms.append(
            Arm("haproxy", group_tls, f"https://localhost:{haproxy.tls_port}/blob.bin", tls)
        )
        for name, variant in small_requests.proxy_variants(loops, codecs or ["h2"]):
            proxy = stack.enter_context(
                proxy_process(["--upstream", f"http://127.0.0.1:{nginx.h2c_port}", *variant])
            )
            arms.append(Arm(name, group_h2c, f"http://127.0.0.1:{proxy.port}/blob.bin", h2c))
            proxy = stack.enter_context(
                proxy_process(
                    [
                        *small_requests.tls_upstream_args(nginx.tls_port or 0, ca),
                        "--inbound-tls-cert",
                        cert,
                        "--inbound-tls-key",
                        key,
                        *variant,
                    ]
                )
            )
            arms.append(Arm(name, group_tls, f"https://localhost:{proxy.port}/blob.bin", tls))
        if dashboard_arm:
            proxy = stack.enter_context(
                proxy_process(["--upstream", f"http://127.0.0.1:{nginx.h2c_port}"], dashboard=True)
            )
            arms.append(
                Arm(
                    "proxy + dashboard",
                    group_h2c,
                    f"http://127.0.0.1:{proxy.port}/blob.bin",
                    h2c,
                )
            )
    return arms


def bulk_report(arms: list[Arm], *, size_mib: int, rounds: int) -> dict[str, dict[str, object]]:
    print(
        f"\n{size_mib} MiB download, {rounds} interleaved rounds; median MiB/s [samples]; "
        "ratios to direct and to HAProxy"
    )
    report: dict[str, dict[str, object]] = {}
    for group in dict.fromkeys(a.group for a in arms):
        members = [a for a in arms if a.group == group]
        direct = statistics.median(next(a for a in members if a.name == "direct").samples)
        haproxy = statistics.median(next(a for a in members if a.name == "haproxy").samples)
        print(f"  {group}")
        entry: dict[str, object] = {}
        for arm in members:
            median = statistics.median(arm.samples)
            spread = ", ".join(f"{v:.0f}" for v in arm.samples)
            tail = ""
            if arm.name != "direct":
                tail = f"  vs direct {median / direct:.2f}"
                if arm.name != "haproxy":
                    tail += f"  vs HAProxy {median / haproxy:.2f}"
            print(f"    {arm.name:18s} {median:8.1f}  [{spread}]{tail}")
            entry[arm.name] = {
                "median_mib_s": median,
                "samples": arm.samples,
                "ratio": median / direct,
                "ratio_haproxy": median / haproxy,
            }
        report[group] = entry
    return report


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--parts",
        default="bulk,small,floors",
        help="any of bulk, small (per-request cost), floors (its layers alone)",
    )
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--chunks", default="8k,1m", help="nginx http2_chunk_size values")
    parser.add_argument(
        "--loops", default="uvloop,asyncio", help="proxy event loops, the default first"
    )
    parser.add_argument(
        "--codecs",
        default="lean,h2",
        help="upstream HTTP/2 codecs (pool.http2_codec), the default first; each runs on each loop",
    )
    parser.add_argument(
        "--dashboard-arm",
        action="store_true",
        help="add an h2c arm whose proxy renders the live dashboard",
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=20000,
        help="requests per h2load run of the floors and of a --profile run",
    )
    parser.add_argument(
        "--small-rounds",
        type=int,
        default=12,
        help="rounds of the small part: many short ones (this machine's noise moves on a "
        "scale of seconds; each ratio to HAProxy is taken within a round)",
    )
    parser.add_argument(
        "--small-requests", type=int, default=5000, help="requests per h2load run (small part)"
    )
    parser.add_argument(
        "--rate", type=int, default=1000, help="req/s of the latency runs (small part)"
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=2,
        help="small part: also run this many proxies on one port (--reuse-port), "
        "pool 1 each; 1 = no such arm",
    )
    parser.add_argument(
        "--baseline-src",
        metavar="NAME=DIR[,NAME=DIR...]",
        default="",
        help="small part: also run proxies from other checkouts' src/ (e.g. git worktrees "
        "of older commits), each as an arm named NAME, for before/after in one run",
    )
    parser.add_argument(
        "--baseline-args",
        default="",
        help="small part: more proxy arguments for the --baseline-src arms (e.g. "
        "'--strategy auto --pool-size 4' to set an old checkout's warm-up beside this one's)",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="small part: also write a py-spy flame graph of each proxy arm into DIR",
    )
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    loops = args.loops.split(",")
    results: dict[str, object] = {}

    with (
        tempfile.TemporaryDirectory(prefix="cwnd-bench-") as tmp_s,
        contextlib.ExitStack() as stack,
    ):
        tmp = Path(tmp_s)
        certs = make_certs(tmp)
        if "bulk" in parts:
            arms = bulk_arms(
                tmp,
                stack,
                certs,
                size=args.size_mib * MiB,
                chunks=args.chunks.split(","),
                loops=loops,
                dashboard_arm=args.dashboard_arm,
                codecs=args.codecs.split(","),
            )
            time.sleep(1.0)  # let the pools connect
            for arm in arms:
                curl_rate(arm.url, *arm.curl_args)  # warm caches and pools; not recorded
            for _ in range(args.rounds):
                for arm in arms:
                    arm.samples.append(curl_rate(arm.url, *arm.curl_args))
            results["bulk"] = bulk_report(arms, size_mib=args.size_mib, rounds=args.rounds)
        if "small" in parts:
            small = stack.enter_context(
                small_requests.small_arms(
                    tmp,
                    certs,
                    loops,
                    proxy_process,
                    processes=args.processes,
                    codecs=args.codecs.split(","),
                    baselines=dict(
                        pair.split("=", 1) for pair in args.baseline_src.split(",") if pair
                    ),
                    baseline_args=args.baseline_args.split(),
                )
            )
            time.sleep(1.0)
            if args.profile:
                for small_arm in small:
                    if small_arm.name.startswith("cwnd-proxy") and len(small_arm.pids) == 1:
                        name = small_arm.name.replace(" ", "-")
                        svg = Path(args.profile) / f"flame-{name}.svg"
                        small_requests.profile(small_arm, svg, requests=args.requests)
            small_requests.run_rounds(
                small, rounds=args.small_rounds, requests=args.small_requests, rate=args.rate
            )
            results["small"] = small_requests.report(
                small, rounds=args.small_rounds, rate=args.rate
            )
        if "floors" in parts:
            results["floors"] = floors.run_floors(
                tmp, certs, rounds=args.rounds, requests=args.requests
            )

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "size_mib": args.size_mib,
        "rounds": args.rounds,
        "requests": args.requests,
        "small_rounds": args.small_rounds,
        "small_requests": args.small_requests,
        "rate": args.rate,
        "cpus": os.cpu_count(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out_dir / "loopback.json").write_text(json.dumps({"meta": meta, **results}, indent=2))
    print(f"  written to {out_dir / 'loopback.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
