"""The ``cwnd-proxy`` commands: dispatch from ``main`` and what each command runs."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from cwndproxy.cli.parser import build_parser, config_from_args
from cwndproxy.config import (
    Config,
    ConfigError,
    load_file,
    parse_host_port,
    to_toml,
    validate,
)
from cwndproxy.http2 import perf
from cwndproxy.telemetry import logs
from cwndproxy.telemetry.logs import setup_logging

if TYPE_CHECKING:
    from cwndproxy.lab.testbed import netns, origins
    from cwndproxy.service import ProcessSignals, ProxyService

log = logging.getLogger("cwndproxy")


def _loop_runner(name: str) -> Callable[[Coroutine[Any, Any, int]], int]:
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:
            raise ConfigError(
                "uvloop is not installed (a dependency; not built for every platform): "
                "install it, or run with --loop asyncio"
            ) from None
        return uvloop.run
    return asyncio.run


def entry() -> NoReturn:
    """The program: ``main()``, then leave without tearing the interpreter down.

    granian runs a Rust (tokio) runtime in threads of its own that outlive its server
    object. When Python finalizes with them still there, one of them now and then
    aborts with "panic in a function that cannot unwind" after the proxy has already
    stopped cleanly (seen in 2 of about 110 stops in tests; exit status still 0). Every
    resource of ours is closed by the time main() returns, so the process flushes its
    output and exits at once instead of finalizing: no panic text after "stopped"."""
    try:
        code = main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    # Process-wide: h2/hyperframe patches and malloc thresholds, once, before any session.
    perf.apply()
    parser = build_parser()
    raw = list(sys.argv[1:] if argv is None else argv)
    if raw[:1] == ["bench"]:
        if "--matrix" in raw[1:]:
            from cwndproxy.lab.bench.matrix import main as matrix_main

            return matrix_main([a for a in raw[1:] if a != "--matrix"])
        if "--ping-hold" in raw[1:]:
            from cwndproxy.lab.bench.ping_hold import main as ping_hold_main

            return ping_hold_main([a for a in raw[1:] if a != "--ping-hold"])
        from cwndproxy.lab.bench.warmup import main as bench_main

        return bench_main(raw[1:])
    args = parser.parse_args(argv)
    args.raw_argv = raw
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "check-config":
            if args.reference:
                from cwndproxy.config.reference import markdown

                sys.stdout.write(markdown())
                return 0
            if not args.file:
                raise ConfigError("check-config needs FILE (or --reference)")
            config = validate(load_file(args.file))
            sys.stdout.write(to_toml(config, redact=True))
            sys.stdout.write(
                f"# derived: per_connection_target_bps = {config.per_connection_target_bps}\n"
                f"# derived: max_frame_size = {config.effective_max_frame_size}\n"
            )
            return 0
        if args.command == "origin":
            setup_logging(False)
            return asyncio.run(_run_origin(args))
        if args.command == "probe":
            return _probe(args)
        if args.command == "testbed":
            return _testbed(args)
        config = config_from_args(args)
        setup_logging(args.verbose, config.ui.log_format)
        if args.command == "demo" and args.wan:
            return _run_demo_wan(args)
        runner = _loop_runner(args.loop)
        if args.command == "run":
            if not getattr(args, "upstream", None) and not args.config:
                raise ConfigError("run needs --upstream URL or --config FILE")
            validate(config)
            # SIGHUP reads the file again, with the same command-line overrides on top.
            reload_config = (lambda: config_from_args(args)) if args.config else None
            return runner(_run_proxy(config, reload_config))
        return runner(_run_demo(config, args))
    except ConfigError as exc:
        print(f"cwnd-proxy: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


async def _reload(service: ProxyService, reload_config: Callable[[], Config] | None) -> None:
    """SIGHUP: read and check the configuration again; apply what can change while
    running, keep the rest (and say so); on any error keep running as before."""
    if reload_config is None:
        log.warning("SIGHUP: nothing to reload (the proxy was not started with --config)")
        return
    try:
        new = validate(reload_config())
    except ConfigError as exc:
        log.error("SIGHUP: %s; still running on the previous configuration", exc)
        return
    plan = await service.reload(new)
    if plan.needs_restart:
        log.warning("SIGHUP: not applied, a restart is needed: %s", ", ".join(plan.needs_restart))
    log.info("SIGHUP: configuration reloaded; applied: %s", ", ".join(plan.applied) or "nothing")


async def _serve_until_signal(
    config: Config,
    banner: str | None = None,
    reload_config: Callable[[], Config] | None = None,
) -> int:
    from cwndproxy.service import ProcessSignals

    with ProcessSignals() as signals:
        return await _serve(config, signals, banner, reload_config)


async def _serve(
    config: Config,
    signals: ProcessSignals,
    banner: str | None,
    reload_config: Callable[[], Config] | None,
) -> int:
    from cwndproxy.service import ListenError, ProxyService
    from cwndproxy.telemetry.dashboard import run_headless, run_tui

    if config.target.tls_insecure_skip_verify:
        log.warning(
            "!!! TLS verification of the upstream is OFF (--insecure): anyone on the path "
            "can impersonate %s. Use only for tests. !!!",
            config.upstream_url,
        )
    # What exists now (the modules, granian's, h2's and the dashboard's among them) lives
    # as long as the process: out of the cyclic collector's way, so that a full collection
    # does not walk it all while requests wait: its longest pause under small-request load
    # went from 18 ms to 2-3 ms (docs/BENCHMARKS.md). Before the service starts, so that
    # no session, whose objects die with its connection, is frozen with it.
    gc.freeze()
    service = ProxyService(config)
    try:
        await service.start()
    except ListenError as exc:
        log.error("%s", exc)
        await service.stop()
        return 1
    log.info(
        "proxy listening on %s -> upstream %s (pool of %d, strategy %s)",
        service.server.url,
        config.upstream_url,
        config.pool.pool_size,
        config.pool.strategy,
    )
    if banner:
        if config.ui.log_format == "json":
            log.info("%s", " ".join(banner.split()))  # every line JSON, the banner too
        else:
            print(banner, flush=True)
    if config.holds_only_what_requests_grow:
        log.info(
            "no warm-up path: %s holds the windows that real requests grow; "
            "--download-path (a large object with Range) lets it grow them ahead",
            config.pool.strategy,
        )
    if service.admin is not None:
        log.info("admin: http://%s:%d/metrics and /healthz", service.admin.host, service.admin.port)
    if config.ui.tui and sys.stdout.isatty():
        from rich.console import Console
        from rich.logging import RichHandler

        console = Console()
        # Log records go through the live display's console, above the dashboard.
        root = logging.getLogger()
        # The same time format as the lines before the dashboard started.
        root.handlers = [
            RichHandler(
                console=console,
                show_path=False,
                log_time_format=logs.HUMAN_TIME_FORMAT,
                omit_repeated_times=False,
            )
        ]
        view = run_tui(service.telemetry, console)
    else:
        view = run_headless(service.telemetry, config.ui.log_format)
    loop = asyncio.get_running_loop()
    status = loop.create_task(view)
    reloads: set[asyncio.Task[None]] = set()

    def on_hup() -> None:
        task = loop.create_task(_reload(service, reload_config))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    signals.on_reload(on_hup)
    name = await signals.stop
    config = service.config
    log.info("%s received: shutting down (grace %d ms)", name, config.server.shutdown_grace_ms)
    status.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await status  # the live display restores the terminal on the way out
    await service.stop()
    log.info("stopped")
    return 0


async def _run_proxy(config: Config, reload_config: Callable[[], Config] | None) -> int:
    return await _serve_until_signal(config, reload_config=reload_config)


async def _run_demo(config: Config, args: argparse.Namespace) -> int:
    from cwndproxy.lab.origin import DemoOrigin

    origin = DemoOrigin("127.0.0.1", 0)
    await origin.start()
    if not args.config:
        config.target.host, config.target.port, config.target.tls = "127.0.0.1", origin.port, False
    if config.pool.warm_up_download_path is None:
        config.pool.warm_up_download_path = "/cwnd/blob"
    if config.pool.warm_up_upload_path is None:
        config.pool.warm_up_upload_path = "/cwnd/sink"
    try:
        validate(config)
        host = config.server.host
        scheme = "https" if config.server.inbound_tls else "http"
        banner = (
            f"\nDemo origin on {origin.url} (h2c); proxy on {scheme}://{host}:{config.server.port}\n"
            f"Try:  curl -o /dev/null -w '%{{http_code}} %{{size_download}} bytes in "
            f"%{{time_total}}s\\n' {scheme}://{host}:{config.server.port}/cwnd/blob?size=4000000\n"
            "Over loopback (RTT ~0.1 ms) a target below ~1 Gbit/s fits in TCP's initial window:\n"
            "auto has nothing to warm, and the dashboard says so. For an emulated WAN (root):\n"
            "  cwnd-proxy demo --wan 80ms,100mbit\n"
            "Stop with Ctrl-C.\n"
        )
        return await _serve_until_signal(config, banner)
    finally:
        await origin.stop()


def _run_demo_wan(args: argparse.Namespace) -> int:
    """The demo across an emulated WAN: origin in the testbed's origin namespace, the proxy
    (with its dashboard on this terminal) in the client namespace."""
    import subprocess

    from cwndproxy.cli.units import parse_duration, parse_rate
    from cwndproxy.lab.testbed import netns, origins

    try:
        rtt_s, rate_s = args.wan.split(",")
        link = netns.LinkSpec(rtt=parse_duration(rtt_s), rate_bps=parse_rate(rate_s))
    except ValueError as exc:
        raise ConfigError(
            f"--wan {args.wan!r}: expected RTT,RATE like 80ms,100mbit ({exc})"
        ) from None
    tb = netns.Testbed(link)
    try:
        tb.up()
        info = origins.start_demo_origin(tb)
    except netns.TestbedUnavailable as exc:
        print(f"cwnd-proxy demo: {exc}", file=sys.stderr)
        tb.down()
        return 1
    # Pass the user's proxy flags through, with the testbed's origin as the upstream.
    argv: list[str] = []
    it = iter(args.raw_argv[1:])  # after "demo"
    for item in it:
        if item == "--wan":
            next(it, None)
        elif not item.startswith("--wan="):
            argv.append(item)
    listen = args.listen or "127.0.0.1:8080"
    if not args.download_path:
        argv += ["--download-path", f"/cwnd/blob?size={origins.BLOB_SIZE}"]
    if not args.bandwidth_mbps:
        argv += ["--bandwidth-mbps", f"{link.rate_bps / 1e6:g}"]
    print(
        f"\nEmulated WAN {tb.name}: {link.describe()}\n"
        f"  demo origin {info.h2c_url} in namespace {tb.origin_ns}; proxy on {listen} in "
        f"namespace {tb.client_ns}\n"
        f"  through the proxy:  ip netns exec {tb.client_ns} curl -o /dev/null -w "
        f"'%{{time_total}}s\\n' http://{listen}/cwnd/blob?size=4000000\n"
        # The demo origin speaks h2c by prior knowledge only: without the flag curl gets
        # "HTTP/0.9 when not allowed" in a fraction of the time and looks faster.
        f"  straight, cold:     ip netns exec {tb.client_ns} curl --http2-prior-knowledge "
        f"-o /dev/null -w '%{{time_total}}s\\n' {info.h2c_url}/cwnd/blob?size=4000000\n"
        "  Stop with Ctrl-C (the testbed is removed).\n",
        flush=True,
    )
    try:
        print(_demo_compare(tb, info, argv, listen, link), flush=True)
    except (OSError, subprocess.SubprocessError, RuntimeError, ValueError, KeyError) as exc:
        print(f"  (the comparison could not run: {exc})", flush=True)
    except KeyboardInterrupt:
        tb.down()  # Ctrl-C while measuring: nothing left behind
        return 130
    # Its dashboard takes this terminal; a start-up error shows there.
    proxy = tb.start_proxy(["--upstream", info.h2c_url, *argv], listen=listen, tui=True, wait=None)

    # The proxy gets its own session (it must not die with the namespace wrapper): forward
    # Ctrl-C and SIGTERM to it.
    def forward(signum: int, frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            proxy.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    try:
        code = proxy.wait()
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proxy.wait(timeout=15)
        tb.down()
    return code


DEMO_OBJECT = 4_000_000
DEMO_IDLE = 3.0


def _demo_compare(
    tb: netns.Testbed, info: origins.OriginInfo, argv: list[str], listen: str, link: netns.LinkSpec
) -> str:
    """The effect the product exists for, measured once on this machine before the
    dashboard starts: the same object after idle through the warm proxy, straight from the
    origin on a new connection, and straight on a connection reused after the same idle."""
    import json
    import time

    from cwndproxy.lab.testbed import netns

    print(f"Measuring a {DEMO_OBJECT / 1e6:g} MB fetch three ways (about 30 s) ...", flush=True)
    proxy = tb.start_proxy(
        ["--upstream", info.h2c_url, *argv], listen=listen, register="proxy-compare"
    )
    try:
        time.sleep(4.0 + DEMO_IDLE)  # connect, grow, then idle like the direct case
        _, through = tb.curl_times(f"http://{listen}/cwnd/blob?size={DEMO_OBJECT}")
    finally:
        netns.stop_process(proxy, timeout=15)
    probe = tb.run_cwnd_proxy(
        "probe",
        f"{info.h2c_url}/cwnd/blob",
        "--size",
        str(DEMO_OBJECT),
        "--idle",
        f"{DEMO_IDLE:g}",
        "--warm-runs",
        "1",
        "--bandwidth-mbps",
        f"{link.rate_bps / 1e6:g}",
        "--json",
        timeout=120,
    )
    result = json.loads(probe.stdout)
    ideal = link.rtt + DEMO_OBJECT * 8 / link.rate_bps
    rows = [
        ("through the warm proxy", through),
        ("direct, new connection", result["cold"]["ttlb_ms"] / 1000),
        (
            f"direct, reused after {DEMO_IDLE:g} s idle",
            result["idle"][f"{DEMO_IDLE:g}"]["ttlb_ms"] / 1000,
        ),
    ]
    lines = [f"  {name:32s} {t:6.2f} s  ({t / ideal:.2f}x ideal)" for name, t in rows]
    return (
        f"Measured here, a {DEMO_OBJECT / 1e6:g} MB fetch after {DEMO_IDLE:g} s idle "
        f"(ideal = RTT + size / rate = {ideal:.2f} s):\n" + "\n".join(lines) + "\n"
    )


def _probe(args: argparse.Namespace) -> int:

    from cwndproxy.cli.units import parse_size
    from cwndproxy.lab.probe import ProbeError, format_report, run_probe
    from cwndproxy.upstream.dial import DialError

    try:
        size = parse_size(args.size)
        idles = tuple(float(x) for x in args.idle.split(",") if x)
    except ValueError as exc:
        raise ConfigError(f"--size/--idle: {exc}") from None
    try:
        result = asyncio.run(
            run_probe(
                args.url,
                size=size,
                idles=idles,
                warm_runs=args.warm_runs,
                bandwidth_mbps=args.bandwidth_mbps,
                ca_file=args.ca_file,
                insecure=args.insecure,
                server_name=args.server_name,
            )
        )
    except (ProbeError, DialError) as exc:
        print(f"cwnd-proxy probe: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result.to_json(), indent=2) if args.json else format_report(result))
    return 0


def _testbed(args: argparse.Namespace) -> int:
    from cwndproxy.cli.units import parse_duration, parse_rate, parse_size
    from cwndproxy.lab.testbed import netns, origins

    if args.testbed_command == "status":
        states = netns.list_states()
        if not states:
            print("no testbeds")
        for st in states:
            alive = "running" if netns.pid_alive(st.pids.get("link", 0) or 0) else "link DOWN"
            print(
                f"{st.name}: {alive}; client ns {st.client_ns} ({st.client_addr}), origin ns "
                f"{st.origin_ns} ({st.origin_addr}); link {st.link}; origin cc "
                f"{st.origin_cc}, slow_start_after_idle={st.origin_ssai}"
            )
            print(
                f"  run something on the client side:  ip netns exec {st.client_ns} "
                f"curl -o /dev/null http://{st.origin_addr}:8080/..."
            )
        return 0
    if args.testbed_command == "down":
        removed = netns.down(args.name)
        print("removed: " + (", ".join(removed) if removed else "nothing"))
        return 0
    try:
        link = netns.LinkSpec(
            rtt=parse_duration(args.rtt),
            rate_bps=parse_rate(args.rate),
            queue_bytes=parse_size(args.queue) if args.queue else None,
            loss=args.loss,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    tb = netns.Testbed(link, name=args.name, origin_cc=args.origin_cc, origin_ssai=not args.no_ssai)
    try:
        tb.up()
        info = origins.start_nginx(tb) if args.origin == "nginx" else origins.start_demo_origin(tb)
    except netns.TestbedUnavailable as exc:
        print(f"cwnd-proxy testbed: {exc}", file=sys.stderr)
        tb.down()
        return 1
    except BaseException:
        tb.down()
        raise
    print(f"testbed {tb.name} up: {link.describe()}")
    print(
        f"  client namespace {tb.client_ns} ({tb.client_addr}); origin namespace "
        f"{tb.origin_ns} ({tb.origin_addr})"
    )
    print(f"  {info.describe()}")
    print(
        f"  try: ip netns exec {tb.client_ns} cwnd-proxy probe {info.tls_url}{info.blob_path} "
        f"--ca-file {info.ca_file}"
    )
    print(f"  remove: cwnd-proxy testbed down {tb.name}")
    return 0


async def _run_origin(args: argparse.Namespace) -> int:
    from cwndproxy.service import ProcessSignals

    with ProcessSignals() as signals:
        return await _serve_origin(args, signals)


async def _serve_origin(args: argparse.Namespace, signals: ProcessSignals) -> int:
    from cwndproxy.lab.origin import DemoOrigin, server_ssl_context

    host, port = parse_host_port(args.listen, "--listen")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together")
    ctx = server_ssl_context(args.tls_cert, args.tls_key) if args.tls_cert else None
    origin = DemoOrigin(
        host,
        port,
        ssl_context=ctx,
        blob_size=args.blob_size,
        supports_range=not args.no_range,
        max_concurrent_streams=args.max_concurrent_streams,
    )
    try:
        await origin.start()
    except OSError as exc:
        log.error("cannot listen on %s: %s", args.listen, exc.strerror or exc)
        return 1
    log.info("demo origin on %s", origin.url)
    await signals.stop
    with contextlib.suppress(Exception):
        await origin.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
