"""The ``cwnd-proxy`` argument parser and how its flags land on a ``Config``."""

from __future__ import annotations

import argparse

from cwndproxy import __version__
from cwndproxy.config import (
    DIRECTIONS,
    HTTP2_CODECS,
    LOG_FORMATS,
    STRATEGIES,
    WARM_UP_TARGETS,
    Config,
    load_file,
    parse_host_port,
    parse_upstream_url,
)

DESCRIPTION = """\
A reverse proxy that keeps a pool of HTTP/2 connections to one far-away upstream warm.

A new or idle TCP connection starts slow: its congestion window (cwnd) is ~10 packets and
doubles once per round trip, and Linux shrinks it again after an idle gap longer than one
retransmission timeout. cwnd-warm-up-proxy sits next to the clients, holds HTTP/2
connections to the upstream open and forwards client requests over them.
"""

EPILOG = """\
examples:
  cwnd-proxy demo                                   # local demo origin + proxy
  cwnd-proxy run --upstream https://origin.example:443 --pool-size 4
  cwnd-proxy run --config proxy.toml --listen 127.0.0.1:9000
  cwnd-proxy check-config proxy.toml
"""


def _add_proxy_flags(p: argparse.ArgumentParser, *, upstream: bool) -> None:
    g = p.add_argument_group("proxy")
    g.add_argument("--config", metavar="FILE", help="TOML config file; flags override it")
    if upstream:
        g.add_argument(
            "--upstream",
            metavar="URL",
            help="https://HOST:PORT (TLS, ALPN h2) or http://HOST:PORT (h2c prior knowledge)",
        )
    g.add_argument("--listen", metavar="HOST:PORT", help="inbound address (default 127.0.0.1:8080)")
    g.add_argument("--pool-size", type=int, metavar="N", help="upstream connections (default 4)")
    g.add_argument(
        "--bandwidth-mbps",
        type=float,
        metavar="X",
        help="path bandwidth to warm for, Mbit/s; split evenly across the pool (default 100)",
    )
    g.add_argument("--direction", choices=DIRECTIONS, help="warm-up direction (default download)")
    g.add_argument("--upload-path", metavar="PATH", help="upstream sink for upload warm-up")
    g.add_argument("--download-path", metavar="PATH", help="upstream object for download warm-up")
    g.add_argument(
        "--strategy",
        choices=STRATEGIES,
        help="warm-up strategy: auto (default: grow each window once, hold it with PINGs, "
        "verify, grow again when gone), ping (PINGs only, no dummy data), burst (the original "
        "spec: ramp, then a burst per interval), off (a plain keep-alive pool)",
    )
    g.add_argument(
        "--warm-up-target",
        choices=WARM_UP_TARGETS,
        help="window each session warms for: path (one BDP of the whole bandwidth), share "
        "(bandwidth / pool size), auto (default: path, share for burst)",
    )
    g.add_argument(
        "--burst-limit-bdp",
        type=float,
        metavar="X",
        help="auto: cap each connection's data in flight at X windows (BDPs of the target) so "
        "a held window never overflows the path (default 0.9, 0 = no cap; uploads are paced at "
        "X x --bandwidth-mbps)",
    )
    g.add_argument(
        "--renew-lossy-sessions",
        action="store_true",
        default=None,
        help="auto: replace a session whose window packet loss cut below what a new "
        "connection's slow start delivers sooner; helps on paths with random loss, hurts "
        "beside a competing bulk flow (off by default; docs/WARMUP.md)",
    )
    g.add_argument(
        "--congestion-control",
        metavar="NAME",
        help="congestion control of our upstream sockets (e.g. bbr; default: the system's); "
        "only our own sending, i.e. uploads, is affected",
    )
    g.add_argument("--ca-file", metavar="FILE", help="extra CA certificate(s) for the upstream")
    g.add_argument("--server-name", metavar="NAME", help="TLS SNI and :authority override")
    g.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="do not verify the upstream's certificate (tests only!)",
    )
    g.add_argument("--inbound-tls-cert", metavar="FILE", help="serve clients over TLS (h2/h1)")
    g.add_argument(
        "--inbound-tls-key", metavar="FILE", help="private key for --inbound-tls-cert (PEM)"
    )
    g.add_argument(
        "--inbound-server",
        choices=("granian", "hypercorn"),
        help="granian (default, fast, drops response trailers) or hypercorn (trailers, gRPC)",
    )
    g.add_argument(
        "--preserve-host",
        action="store_true",
        default=None,
        help="send the client's Host as :authority instead of the upstream's name",
    )
    g.add_argument(
        "--reuse-port",
        action="store_true",
        default=None,
        help="share --listen with other cwnd-proxy processes (SO_REUSEPORT), e.g. one per "
        "core, each with its own pool (docs/SCALING.md)",
    )
    g.add_argument("--no-tui", action="store_true", help="log lines instead of the dashboard")
    g.add_argument(
        "--admin",
        metavar="HOST:PORT",
        help="serve Prometheus /metrics and /healthz here (e.g. 127.0.0.1:9464)",
    )
    g.add_argument(
        "--log-format", choices=LOG_FORMATS, help="log format, human or json (every line)"
    )
    g.add_argument(
        "--access-log",
        metavar="-|FILE",
        help="one line per client request to standard output (-) or FILE (default: off)",
    )
    g.add_argument(
        "--http2-codec",
        choices=HTTP2_CODECS,
        help="upstream HTTP/2 client: lean (default; about half h2's CPU per small request) "
        "or h2 (the h2 library, the reference lean is tested against; pool.http2_codec)",
    )
    g.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="uvloop",
        help="event loop (default uvloop: 1.1-1.6x asyncio's small-request rate with the "
        "lean codec; see docs/BENCHMARKS.md)",
    )
    g.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cwnd-proxy",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run", help="run the proxy against an upstream", description="Run the proxy."
    )
    _add_proxy_flags(run, upstream=True)

    demo = sub.add_parser(
        "demo",
        help="start a local demo origin and the proxy in front of it",
        description="Start the demo origin on loopback and the proxy pointed at it, "
        "then print a curl command to try.",
    )
    _add_proxy_flags(demo, upstream=False)
    demo.add_argument(
        "--wan",
        metavar="RTT,RATE",
        help="put an emulated WAN between proxy and origin, e.g. 80ms,100mbit (root: "
        "network namespaces); the proxy then runs in the testbed's client namespace",
    )

    origin = sub.add_parser(
        "origin",
        help="run the demo origin (HTTP/2 sink and blob server)",
        description="Run the demo origin: POST|PUT /cwnd/sink, GET /cwnd/blob?size=N (Range), "
        "/echo, /headers, /status/N, /trailers, /slow, /reset, /goaway.",
    )
    origin.add_argument(
        "--listen", default="127.0.0.1:8443", metavar="HOST:PORT", help="default 127.0.0.1:8443"
    )
    origin.add_argument("--tls-cert", metavar="FILE", help="serve TLS (ALPN h2); else h2c")
    origin.add_argument("--tls-key", metavar="FILE", help="private key for --tls-cert (PEM)")
    origin.add_argument(
        "--blob-size",
        type=int,
        default=64 * 1024 * 1024,
        metavar="BYTES",
        help="size of /cwnd/blob without ?size= (default 64 MiB)",
    )
    origin.add_argument(
        "--max-concurrent-streams",
        type=int,
        default=100,
        metavar="N",
        help="SETTINGS_MAX_CONCURRENT_STREAMS it announces (default 100)",
    )
    origin.add_argument("--no-range", action="store_true", help="ignore Range (always 200)")

    probe = sub.add_parser(
        "probe",
        help="measure whether an upstream loses its cwnd when idle",
        description="Measure RTT, then the time to fetch SIZE bytes on a new connection, on a "
        "busy (warm) one and after idle gaps, and say whether the upstream restarts slow start "
        "after idle and how much warm-up would save.",
    )
    probe.add_argument("url", metavar="URL", help="a large object, e.g. https://host/big.bin")
    probe.add_argument("--size", default="4MB", help="bytes per fetch (Range), default 4MB")
    probe.add_argument("--idle", default="0.5,1,3", help="idle gaps in seconds (0.5,1,3)")
    probe.add_argument(
        "--warm-runs", type=int, default=3, metavar="N", help="fetches per case (default 3)"
    )
    probe.add_argument("--bandwidth-mbps", type=float, help="known path bandwidth for the ideal")
    probe.add_argument("--ca-file", metavar="FILE", help="extra CA certificate(s) (PEM)")
    probe.add_argument("--server-name", metavar="NAME", help="TLS SNI override")
    probe.add_argument("--insecure", action="store_true", help="skip certificate checks")
    probe.add_argument("--json", action="store_true", help="print the result as JSON")

    testbed = sub.add_parser(
        "testbed",
        help="an emulated WAN (network namespaces + link emulator); needs root",
        description="Bring up, inspect or remove an emulated WAN: a client namespace and an "
        "origin namespace joined by a userspace link with the given RTT, rate and queue.",
    )
    tb_sub = testbed.add_subparsers(dest="testbed_command", metavar="ACTION", required=True)
    tb_up = tb_sub.add_parser("up", help="create a testbed and start an origin in it")
    tb_up.add_argument("--rtt", default="80ms", help="round-trip time (default 80ms)")
    tb_up.add_argument("--rate", default="100mbit", help="bottleneck rate (default 100mbit)")
    tb_up.add_argument("--queue", help="drop-tail queue in bytes (default 1 BDP)")
    tb_up.add_argument("--loss", type=float, default=0.0, help="random loss probability")
    tb_up.add_argument(
        "--origin",
        choices=("demo", "nginx"),
        default="nginx",
        help="origin server in its namespace (default nginx)",
    )
    tb_up.add_argument("--origin-cc", default="cubic", help="origin congestion control")
    tb_up.add_argument(
        "--no-ssai",
        action="store_true",
        help="origin tcp_slow_start_after_idle=0 (default 1, as Linux)",
    )
    tb_up.add_argument("--name", help="testbed name (default: random cwtXXXX)")
    tb_sub.add_parser("status", help="list testbeds, addresses and how to use them")
    tb_down = tb_sub.add_parser("down", help="remove a testbed (all when no name is given)")
    tb_down.add_argument("name", nargs="?")

    sub.add_parser(
        "bench",
        help="the warm-up benchmarks on the emulated WAN (needs root): S1/U1; the path matrix "
        "against HAProxy and nginx (--matrix); how long PINGs hold a window (--ping-hold); "
        "see bench [--matrix|--ping-hold] --help",
        add_help=False,
    )

    check = sub.add_parser(
        "check-config",
        help="validate a config file and print the effective configuration",
        description="Validate FILE and print the effective configuration as TOML (warm-up "
        "header values redacted); exit 2 naming the key on any problem. --reference prints "
        "every key with type, default and meaning instead.",
    )
    check.add_argument("file", metavar="FILE", nargs="?", help="the TOML config file")
    check.add_argument(
        "--reference",
        action="store_true",
        help="print the reference of every config key (Markdown) and exit",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    config = load_file(args.config) if getattr(args, "config", None) else Config()
    t, p, s, u = config.target, config.pool, config.server, config.ui
    if getattr(args, "upstream", None):
        t.host, t.port, t.tls = parse_upstream_url(args.upstream)
    if args.listen:
        s.host, s.port = parse_host_port(args.listen, "--listen")
    for flag, section, key in (
        ("pool_size", p, "pool_size"),
        ("bandwidth_mbps", p, "bandwidth_mbps"),
        ("direction", p, "warm_up_direction"),
        ("upload_path", p, "warm_up_upload_path"),
        ("download_path", p, "warm_up_download_path"),
        ("strategy", p, "strategy"),
        ("warm_up_target", p, "warm_up_target"),
        ("burst_limit_bdp", p, "burst_limit_bdp"),
        ("renew_lossy_sessions", p, "renew_lossy_sessions"),
        ("ca_file", t, "tls_ca_file"),
        ("congestion_control", t, "congestion_control"),
        ("server_name", t, "tls_server_name"),
        ("insecure", t, "tls_insecure_skip_verify"),
        ("preserve_host", s, "preserve_host"),
        ("log_format", u, "log_format"),
        ("admin", s, "admin"),
        ("access_log", s, "access_log"),
        ("inbound_server", s, "inbound_server"),
        ("reuse_port", s, "reuse_port"),
        ("http2_codec", p, "http2_codec"),
    ):
        value = getattr(args, flag)
        if value is not None:
            setattr(section, key, value)
    if args.inbound_tls_cert or args.inbound_tls_key:
        s.tls_cert_file = args.inbound_tls_cert
        s.tls_key_file = args.inbound_tls_key
        s.inbound_tls = True
    if args.no_tui:
        u.tui = False
    return config
