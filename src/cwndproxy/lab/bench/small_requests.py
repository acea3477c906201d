"""Per-request cost: many small requests through the proxy and through HAProxy, side by side.

Part of ``make bench-loopback`` (``--parts small``). One nginx origin serves a 1 KiB object
over TLS h2; in front of it, in the same run:

- **HAProxy** (one thread), TLS h2 to the origin (lab/haproxy.py);
- **cwnd-proxy** with each event loop and HTTP/2 codec, TLS h2 to the origin, as a plain
  pool (``--strategy off``: loopback has no window to warm);
- **cwnd-proxy with its default warm-up** (``auto``, the default pool size), the first
  loop and codec: what the warm-up engine adds to a request.

Each round runs, for every arm, h2load at full speed over h2c (``-c 10 -m 10``) and over
HTTP/1.1 (``--h1 -c 50``): requests per second as h2load measured them, and the CPU time the
proxy process used meanwhile (utime + stime from ``/proc/PID/stat``, all threads) per
request. Then h2load at a fixed rate (``--rps``, 1,000 req/s in all over h2c) against the
origin directly and through every arm: latency p50 and p99 from h2load's per-request log.
h2load, nginx and the proxy share the machine's cores: ratios, not absolute rates, are the
result.

The noise of this shared machine moves on a scale of seconds (three identical proxies,
run one after another, differed by up to 1.4x within one round of 20,000 requests each).
So the rounds are many and short, their order alternates (first to last, then last to
first), and each ratio to HAProxy is taken within a round, where the two ran seconds
apart: the report gives the median of those paired ratios and their quartiles, not a
ratio of two medians.

nginx keeps a connection for 100,000 requests here (its default is 1,000): the subject is
the cost of a request, not of reconnecting (which the soak tests cover).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cwndproxy.config.settings import PoolConfig
from cwndproxy.lab.haproxy import HaproxyServer
from cwndproxy.lab.nginx import NginxServer
from cwndproxy.lab.ports import free_port

OBJECT_SIZE = 1024
OBJECT_PATH = "/small.bin"
_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int, *, main_thread: bool = False) -> float:
    """utime + stime of every thread of ``pid`` so far, from /proc/PID/stat; with
    ``main_thread``, of its first thread alone (/proc/PID/task/PID/stat): the proxy's event
    loop runs there, and its time per request bounds the rate (granian's threads run on
    the other core)."""
    path = f"/proc/{pid}/task/{pid}/stat" if main_thread else f"/proc/{pid}/stat"
    with open(path) as fh:
        # The command name (field 2) may hold spaces: count fields after its ")".
        fields = fh.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


@dataclass
class LoadResult:
    rps: float
    succeeded: int
    failed: int
    cpu_us_per_request: float | None
    # The main thread's share (the event loop), of single-process arms.
    loop_us_per_request: float | None = None


def h2load(url: str, args: list[str], *, pids: tuple[int, ...] = ()) -> LoadResult:
    """One h2load run; with ``pids``, those processes' CPU time per succeeded request."""
    before = sum(process_cpu_seconds(p) for p in pids)
    loop_before = process_cpu_seconds(pids[0], main_thread=True) if len(pids) == 1 else 0.0
    out = subprocess.run(
        ["h2load", *args, url], capture_output=True, text=True, timeout=600, check=True
    ).stdout
    cpu = sum(process_cpu_seconds(p) for p in pids) - before if pids else None
    loop = process_cpu_seconds(pids[0], main_thread=True) - loop_before if len(pids) == 1 else None
    rps = 0.0
    succeeded = failed = 0
    for line in out.splitlines():
        if line.startswith("finished in"):
            rps = float(line.split(",")[1].split()[0])
        elif line.startswith("requests:"):
            words = line.replace(",", "").split()
            succeeded = int(words[words.index("succeeded") - 1])
            failed = int(words[words.index("failed") - 1])
    per_request = cpu / succeeded * 1e6 if cpu is not None and succeeded else None
    loop_per_request = loop / succeeded * 1e6 if loop is not None and succeeded else None
    return LoadResult(rps, succeeded, failed, per_request, loop_per_request)


def latency_ms(url: str, *, rate: int, requests: int, clients: int = 10) -> tuple[float, float]:
    """p50 and p99 (ms) of h2load's per-request times at ``rate`` requests/s in all."""
    with tempfile.NamedTemporaryFile(prefix="h2load-", suffix=".log") as log:
        subprocess.run(
            [
                "h2load",
                "-n",
                str(requests),
                "-c",
                str(clients),
                "--rps",
                str(max(1, rate // clients)),
                "--log-file",
                log.name,
                url,
            ],
            capture_output=True,
            timeout=600,
            check=True,
        )
        times = sorted(
            int(cols[2]) / 1000
            for cols in (line.split("\t") for line in Path(log.name).read_text().splitlines())
            if len(cols) >= 3 and cols[1] == "200"
        )
    if not times:
        return float("nan"), float("nan")
    return times[len(times) // 2], times[min(len(times) - 1, int(len(times) * 0.99))]


def small_origin(
    directory: Path, certs: tuple[str, str, str], *, keepalive_requests: int = 100_000
) -> NginxServer:
    """nginx serving OBJECT_SIZE bytes at OBJECT_PATH over TLS h2, not started yet."""
    _, cert, key = certs
    nginx = NginxServer(
        directory,
        tls_port=free_port(),
        cert_file=cert,
        key_file=key,
        keepalive_requests=keepalive_requests,
    )
    nginx.add_blob(OBJECT_PATH.lstrip("/"), OBJECT_SIZE)
    return nginx


def proxy_variants(loops: list[str], codecs: list[str]) -> list[tuple[str, list[str]]]:
    """The proxy arms: (name, extra arguments) for every event loop with every HTTP/2
    codec, first loop and first codec first (the arm the x2 arm follows; baseline arms
    follow the first loop only, as an older checkout may not know the codec flag)."""
    return [
        (
            f"proxy {loop}" + ("" if codec == "h2" else f" {codec}"),
            ["--loop", loop, "--http2-codec", codec],
        )
        for codec in codecs
        for loop in loops
    ]


def tls_upstream_args(port: int, ca: str) -> list[str]:
    """The proxy's arguments for the loopback nginx's TLS port (certificate for localhost)."""
    return [
        "--upstream",
        f"https://127.0.0.1:{port}",
        "--ca-file",
        ca,
        "--server-name",
        "localhost",
    ]


@dataclass
class SmallArm:
    """One way to the origin: its URL and the processes whose CPU time is charged."""

    name: str
    url: str
    pids: tuple[int, ...]
    samples: dict[str, list[Any]] = field(default_factory=dict)

    def add(self, key: str, value: Any) -> None:
        self.samples.setdefault(key, []).append(value)

    def median(self, key: str) -> float | None:
        values = [v for v in self.samples.get(key, []) if v is not None]
        return statistics.median(values) if values else None


@contextlib.contextmanager
def small_arms(
    tmp: Path,
    certs: tuple[str, str, str],
    loops: list[str],
    proxy_process: Callable[..., contextlib.AbstractContextManager[Any]],
    *,
    processes: int = 1,
    baselines: dict[str, str] | None = None,
    baseline_args: list[str] | None = None,
    codecs: list[str] | None = None,
) -> Iterator[list[SmallArm]]:
    """The origin, HAProxy and one proxy per event loop, and with ``processes`` > 1 that
    many proxies sharing one port (``--reuse-port``, one pooled connection each), and with
    ``baselines`` (name: source directory) a proxy run from each (before/after arms), with
    ``baseline_args`` added to their arguments.
    ``proxy_process(args, port=None)`` starts a proxy and yields its ``port`` and ``pid``."""
    ca = certs[0]
    with contextlib.ExitStack() as stack:
        nginx = stack.enter_context(small_origin(tmp / "nginx-small", certs))
        # The direct baseline is over TLS: nginx's h2c port sends a small response with
        # sendfile under TCP_NOPUSH, which held each answer ~40 ms at a low rate (measured:
        # p50 44 ms at 1,000 req/s), a cost of that port, not of a request.
        arms = [SmallArm("direct (nginx TLS)", f"https://localhost:{nginx.tls_port}/small.bin", ())]
        haproxy = stack.enter_context(
            HaproxyServer(tmp / "haproxy-small", origin_port=nginx.tls_port or 0, origin_tls_ca=ca)
        )
        arms.append(
            SmallArm("haproxy", f"http://127.0.0.1:{haproxy.clear_port}/small.bin", (haproxy.pid,))
        )
        upstream = tls_upstream_args(nginx.tls_port or 0, ca)
        variants = proxy_variants(loops, codecs or ["h2"])
        for name, variant in variants:
            proxy = stack.enter_context(proxy_process([*upstream, *variant]))
            arms.append(
                SmallArm(f"cwnd-{name}", f"http://127.0.0.1:{proxy.port}/small.bin", (proxy.pid,))
            )
        # The proxy as it runs by default, warm-up on: the arms above are plain pools
        # (loopback has no window to warm), and this one shows what the warm-up engine
        # adds to a request (its controllers hear of the pool's real streams).
        first_name, first = variants[0]
        defaults = PoolConfig()
        warm = [*first, "--strategy", defaults.strategy, "--pool-size", str(defaults.pool_size)]
        proxy = stack.enter_context(proxy_process([*upstream, *warm]))
        arms.append(
            SmallArm(
                f"cwnd-{first_name} warm-up {defaults.strategy}, pool {defaults.pool_size}",
                f"http://127.0.0.1:{proxy.port}/small.bin",
                (proxy.pid,),
            )
        )
        for name, source in (baselines or {}).items():
            proxy = stack.enter_context(
                proxy_process(
                    [*upstream, "--loop", loops[0], *(baseline_args or [])], source=source
                )
            )
            arms.append(
                SmallArm(
                    f"cwnd-proxy {name}", f"http://127.0.0.1:{proxy.port}/small.bin", (proxy.pid,)
                )
            )
        if processes > 1:
            port = free_port()
            shared = [*upstream, *first, "--pool-size", "1", "--reuse-port"]
            group = [
                stack.enter_context(proxy_process(shared, port=port)) for _ in range(processes)
            ]
            arms.append(
                SmallArm(
                    f"cwnd-{first_name} x{processes}",
                    f"http://127.0.0.1:{port}/small.bin",
                    tuple(p.pid for p in group),
                )
            )
        yield arms


def run_rounds(arms: list[SmallArm], *, rounds: int, requests: int, rate: int) -> None:
    h2c = ["-n", str(requests), "-c", "10", "-m", "10"]
    h1 = ["-n", str(requests), "-c", "50", "--h1"]
    for arm in arms:  # warm pools, caches and TLS sessions; not recorded
        h2load(arm.url, ["-n", "2000", "-c", "10", "-m", "10"])
    for number in range(rounds):
        # Alternate the order, so that no arm always runs right after the same one.
        ordered = arms if number % 2 == 0 else arms[::-1]
        for arm in ordered:
            if not arm.pids:
                continue
            for proto, args in (("h2c", h2c), ("h1", h1)):
                result = h2load(arm.url, args, pids=arm.pids)
                arm.add(f"{proto}_rps", result.rps)
                arm.add(f"{proto}_cpu_us", result.cpu_us_per_request)
                arm.add(f"{proto}_loop_us", result.loop_us_per_request)
                arm.add(f"{proto}_failed", result.failed)
        for arm in ordered:
            p50, p99 = latency_ms(arm.url, rate=rate, requests=max(rate, requests // 2))
            arm.add("p50_ms", p50)
            arm.add("p99_ms", p99)
        time.sleep(0.5)


def round_ratios(
    mine: Sequence[float | None], theirs: Sequence[float | None], *, strict: bool = False
) -> list[float]:
    """One arm's values over another's, round by round (both ran in the same round); a
    round where either has none (None, 0, or NaN: no latency log) is left out. ``strict``:
    both must have run the same rounds."""
    return [
        a / b
        for a, b in zip(mine, theirs, strict=strict)
        if a and b and not (math.isnan(a) or math.isnan(b))
    ]


def paired_ratios(arm: SmallArm, peer: SmallArm, key: str) -> list[float]:
    """``arm``'s value over ``peer``'s, round by round (both ran in the same round)."""
    return round_ratios(arm.samples.get(key, []), peer.samples.get(key, []))


def write_results(path: Path | None, results: dict[str, Any]) -> None:
    """A tool's ``--out``: the results as JSON, if a path was given."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(f"  written to {path}")


def ratio_summary(ratios: list[float]) -> tuple[float, float, float] | None:
    """Median and quartiles of paired ratios (None without any)."""
    if not ratios:
        return None
    if len(ratios) < 2:
        return ratios[0], ratios[0], ratios[0]
    q1, median, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return median, q1, q3


def _py_spy() -> str:
    # Installed beside this interpreter (the bench extra), which need not be on PATH.
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy") or "py-spy"


def profile(arm: SmallArm, svg: Path, *, requests: int) -> None:
    """A py-spy flame graph of ``arm``'s process during one h2c run (not recorded as a
    sample: sampling slows the process down)."""
    assert arm.pids
    svg.parent.mkdir(parents=True, exist_ok=True)
    spy = subprocess.Popen(
        [_py_spy(), "record", "--pid", str(arm.pids[0]), "--rate", "250", "--output", str(svg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(1.0)  # py-spy attaches
        h2load(arm.url, ["-n", str(requests), "-c", "10", "-m", "10"])
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes the graph on SIGINT
        _, err = spy.communicate(timeout=60)
    if spy.returncode not in (0, -signal.SIGINT) or not svg.exists():
        raise RuntimeError(f"py-spy failed: {err.decode(errors='replace').strip()}")
    print(f"  flame graph of {arm.name}: {svg}")


def report(arms: list[SmallArm], *, rounds: int, rate: int) -> dict[str, Any]:
    """Print the table and return it for the JSON file."""
    peer = next(a for a in arms if a.name == "haproxy")
    keys = ("h2c_rps", "h1_rps", "p99_ms")

    print(
        f"\nSmall requests ({OBJECT_SIZE} B, TLS h2 origin), medians of {rounds} interleaved "
        f"rounds; ratio = arm / HAProxy in the same round, median of the rounds (quartiles "
        f"below); latency at {rate} req/s over h2c"
    )
    print(
        f"  {'arm':24s} {'h2c req/s':>10s} {'ratio':>5s} {'CPU us':>7s} "
        f"{'h1 req/s':>9s} {'ratio':>5s} {'CPU us':>7s} {'p50 ms':>7s} {'p99 ms':>7s} "
        f"{'p99 ratio':>9s}"
    )
    out: dict[str, Any] = {}

    def fmt(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    for arm in arms:
        # Each paired summary once: its median goes in the row, its quartiles below it.
        summaries = {key: ratio_summary(paired_ratios(arm, peer, key)) for key in keys}
        ratio = {k: "-" if v is None else f"{v[0]:.2f}" for k, v in summaries.items()}
        print(
            f"  {arm.name:24s} {fmt(arm.median('h2c_rps'), '10.0f')} {ratio['h2c_rps']:>5s} "
            f"{fmt(arm.median('h2c_cpu_us'), '7.0f')} {fmt(arm.median('h1_rps'), '9.0f')} "
            f"{ratio['h1_rps']:>5s} {fmt(arm.median('h1_cpu_us'), '7.0f')} "
            f"{fmt(arm.median('p50_ms'), '7.2f')} {fmt(arm.median('p99_ms'), '7.2f')} "
            f"{ratio['p99_ms']:>9s}"
        )
        loop_h2c, loop_h1 = arm.median("h2c_loop_us"), arm.median("h1_loop_us")
        if loop_h2c is not None and loop_h1 is not None and arm.name != "haproxy":
            print(f"    of that, main thread (event loop): {loop_h2c:.0f} / {loop_h1:.0f} us")
        ratios: dict[str, Any] = {}
        if arm is not peer and arm.pids:
            for key, summary in summaries.items():
                if summary is not None:
                    ratios[key] = {"median": summary[0], "q1": summary[1], "q3": summary[2]}
            print(
                "    ratios' quartiles: "
                + ", ".join(f"{k} {v['q1']:.2f}-{v['q3']:.2f}" for k, v in ratios.items())
            )
        failed = sum(arm.samples.get("h2c_failed", [])) + sum(arm.samples.get("h1_failed", []))
        if failed:
            print(f"    ({failed} requests failed in its runs)")
        out[arm.name] = {
            "medians": {k: arm.median(k) for k in arm.samples},
            "ratios_to_haproxy": ratios,
            "samples": arm.samples,
        }
    return out
