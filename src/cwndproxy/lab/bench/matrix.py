"""``cwnd-proxy bench --matrix``: the warm-up judged on many emulated paths, against the peers.

Each *cell* is one path (RTT, rate, loss, cross traffic), one object size (in BDPs of the
path), one idle gap and one pool size. Each cell gets a fresh testbed with an nginx origin
(TLS, cubic, ``tcp_slow_start_after_idle=1``, 1-BDP drop-tail queue) and, side by side in
the client namespace, every *arm*: cwnd-proxy with the default strategy, ``burst``, ``ping``
and ``off``; HAProxy (h2 to the origin); nginx (HTTP/1.1 keep-alive to the origin); and a
cold direct fetch (curl, new TCP+TLS connection each time).

How a cell runs:
- Every arm has its own TLS port on the origin, so the origin's sockets (``ss``) say which
  arm they carry: the cwnd before each fetch, retransmits, and dummy bytes while idle are
  read per arm from the kernel, not estimated.
- Fetches never overlap on the link. Each arm's measured fetch comes ``idle`` seconds after
  that arm's previous fetch ended: with short gaps an arm's turn is "prime, wait, measure";
  with long ones the arms take turns on one timeline. The actual gap is recorded.
- Dummy traffic never meets another arm's fetch: each warm-up arm (default, ``burst``,
  ``ping``) runs in a block of its own, the arms that never send any (``off``, the peers,
  cold) together in one more. Every fetch records the bytes each other arm moved during
  it (``other_arms``: a check that, say, runs on after its block would show), and so does
  every unmeasured priming fetch (``primes``).

Reported per cell and arm: p50/p90 time to last byte, ratio to ideal (RTT + size / path
rate), the origin's cwnd before each fetch (and whether an idle restart was pending), the
origin socket's retransmits and the emulator's queue drops during fetches, and dummy bytes
per second while idle as a share of the path rate.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cwndproxy.config import PoolConfig
from cwndproxy.lab.bench import peers
from cwndproxy.lab.bench.prepare import testbed_out_dir
from cwndproxy.lab.testbed import netns, origins
from cwndproxy.lab.testbed.observer import KernelSample, WindowObserver

MSS = 1448
FIRST_ORIGIN_PORT = origins.TLS_PORT
FIRST_LISTEN_PORT = 9000
# Link quiet time between two fetches (of any arms): the tail of one fetch's ACKs and the
# emulator's queue drain before the next starts.
LINK_QUIET = 0.3
# Below this gap (or with one arm) each turn is "prime, wait gap, measure".
PAIR_GAP = 2.0
SAMPLE_INTERVAL = 0.05


@dataclass(frozen=True)
class Cell:
    name: str
    rtt: float  # seconds
    rate_bps: float
    size_bdp: float
    idle: float  # seconds between an arm's fetches (mean, for random arrivals)
    pool: int
    loss: float = 0.0
    cross: bool = False
    upload: bool = False
    random_arrivals: bool = False
    runs: int = 7
    # Arms left out of this cell (long cells), with the reason in ``note``.
    skip_arms: tuple[str, ...] = ()
    note: str = ""

    @property
    def bdp(self) -> int:
        return int(self.rate_bps * self.rtt / 8)

    @property
    def size(self) -> int:
        return max(1, round(self.size_bdp * self.bdp))

    @property
    def ideal(self) -> float:
        """RTT + size / path rate: a request on a connection whose window already fills
        the path (the request's half RTT out, the first byte's half RTT back)."""
        return self.rtt + self.size * 8 / self.rate_bps

    def describe(self) -> str:
        extra = []
        if self.loss:
            extra.append(f"{self.loss:.0%} loss")
        if self.cross:
            extra.append("bulk cross traffic")
        if self.random_arrivals:
            extra.append("random arrivals")
        gap = f"{'mean ' if self.random_arrivals else ''}{self.idle:g} s idle"
        return (
            f"{self.rtt * 1000:g} ms, {self.rate_bps / 1e6:g} Mbit/s, "
            f"{'upload' if self.upload else 'download'} {self.size_bdp:g} BDP "
            f"({self.size / 1e6:.3g} MB), {gap}, pool {self.pool}"
            + (", " + ", ".join(extra) if extra else "")
        )


CELLS: tuple[Cell, ...] = (
    Cell("near-fast", 0.020, 200e6, 4, 2.0, 2),
    Cell("pathA", 0.040, 50e6, 6, 3.0, 2),
    Cell("S1", 0.080, 100e6, 4, 3.0, 2),
    Cell("pathB", 0.150, 100e6, 4, 3.0, 2),
    Cell("far-thin", 0.250, 20e6, 1.5, 4.0, 1),
    Cell("small-object", 0.100, 10e6, 0.25, 0.5, 4),
    Cell("short-idle", 0.200, 50e6, 1, 1.0, 4),
    Cell(
        "long-idle",
        0.060,
        100e6,
        8,
        60.0,
        8,
        runs=4,
        skip_arms=("burst",),
        note="60 s gaps: 4 fetches per arm, no burst arm (its own block would add 5 min)",
    ),
    Cell("loss", 0.040, 20e6, 2, 2.0, 2, loss=0.01),
    Cell("cross", 0.080, 100e6, 4, 3.0, 2, cross=True),
    Cell("upload", 0.080, 50e6, 4, 3.0, 2, upload=True),
    # 20 fetches: with fewer, the nearest-rank p95 is just the maximum.
    Cell("random", 0.080, 100e6, 4, 2.0, 2, random_arrivals=True, runs=20),
)
QUICK = ("S1", "small-object", "random")


@dataclass(frozen=True)
class Arm:
    name: str
    kind: str  # proxy | haproxy | nginx | cold
    strategy: str | None = None  # proxy: None = the product's default
    extra: tuple[str, ...] = ()
    upload_only: bool = False
    lossy_only: bool = False  # only in the cells with loss or a competing flow

    def runs_in(self, cell: Cell) -> bool:
        return (
            self.name not in cell.skip_arms
            and (cell.upload or not self.upload_only)
            and (not self.lossy_only or cell.loss > 0 or cell.cross)
        )

    def resolved_strategy(self) -> str | None:
        if self.kind != "proxy":
            return None
        return self.strategy or PoolConfig().strategy

    @property
    def warms(self) -> bool:
        """A warm-up proxy: it sends dummy traffic of its own (ramps, checks, regrows)."""
        return self.resolved_strategy() not in (None, "off")


ARMS: tuple[Arm, ...] = (
    Arm("default", "proxy"),
    Arm("burst", "proxy", "burst"),
    Arm("ping", "proxy", "ping"),
    Arm("off", "proxy", "off"),
    Arm("haproxy", "haproxy"),
    Arm("nginx", "nginx"),
    Arm("cold", "cold"),
    # Upload only: our own sender under BBR, no warm-up at all (issue: does a congestion
    # control that owns its loop skip the idle restart without any dummy bytes?).
    Arm("bbr", "proxy", "off", ("--congestion-control", "bbr"), upload_only=True),
    # The default with the renewal of loss-cut sessions, which is off by default: it wins
    # with random loss, and beside a competing flow it lost to HAProxy in two runs of three
    # (docs/WARMUP.md section 4).
    Arm("renew", "proxy", None, ("--renew-lossy-sessions",), lossy_only=True),
)


@dataclass
class Fetch:
    arm: str
    ttlb: float
    start: float  # observer time base (seconds since the observer started)
    end: float
    gap: float | None  # since this arm's previous fetch ended
    drops: int = 0
    loss_drops: int = 0
    conn: str | None = None
    cwnd_before: int | None = None
    cwnd_effective: int | None = None
    # The sender's slow-start threshold before the fetch: up to it, the window doubles
    # per RTT from whatever the fetch starts with.
    ssthresh_before: int | None = None
    restart_pending: bool = False
    retrans: int | None = None
    # Bytes on *other* arms' connections during this fetch (should be ~0: a sign of
    # dummy traffic competing with the measured fetch), in all and per arm (those with any).
    other_bytes: int = 0
    other_arms: dict[str, int] = field(default_factory=dict)


@dataclass
class ArmResult:
    name: str
    fetches: list[Fetch] = field(default_factory=list)
    first_ttlb: float | None = None
    # The unmeasured fetches that only prime a connection, attributed like the measured
    # ones: a prime that shared the link (``other_bytes``) can leave the origin's
    # connection with a low ssthresh that every measured fetch after it inherits.
    primes: list[Fetch] = field(default_factory=list)
    idle_seconds: float = 0.0
    idle_bytes: int = 0
    error: str | None = None

    def summary(self, cell: Cell) -> dict[str, Any]:
        out: dict[str, Any] = {"arm": self.name, "n": len(self.fetches)}
        if self.error:
            out["error"] = self.error
        if not self.fetches:
            return out
        ttlb = [f.ttlb for f in self.fetches]
        out["p50_ms"] = statistics.median(ttlb) * 1000
        out["p90_ms"] = percentile(ttlb, 0.90) * 1000
        out["p95_ms"] = percentile(ttlb, 0.95) * 1000
        out["p50_ideal"] = statistics.median(ttlb) / cell.ideal
        out["p90_ideal"] = percentile(ttlb, 0.90) / cell.ideal
        out["p95_ideal"] = percentile(ttlb, 0.95) / cell.ideal
        eff = [f.cwnd_effective for f in self.fetches if f.cwnd_effective is not None]
        if eff:
            out["cwnd_effective_p50"] = statistics.median(eff)
            out["cwnd_effective_min"] = min(eff)
            out["cwnd_bdp_p50"] = statistics.median(eff) * MSS / cell.bdp
        out["restart_pending"] = sum(f.restart_pending for f in self.fetches)
        retrans = [f.retrans for f in self.fetches if f.retrans is not None]
        out["retrans_total"] = sum(retrans) if retrans else None
        out["drops_total"] = sum(f.drops for f in self.fetches)
        out["other_bytes_max"] = max(f.other_bytes for f in self.fetches)
        gaps = [f.gap for f in self.fetches if f.gap is not None]
        out["gap_p50_s"] = statistics.median(gaps) if gaps else None
        if self.idle_seconds > 0:
            bps = self.idle_bytes * 8 / self.idle_seconds
            out["idle_bps"] = bps
            out["idle_share"] = bps / cell.rate_bps
        out["first_ms"] = self.first_ttlb * 1000 if self.first_ttlb is not None else None
        return out


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation between the few samples a cell has)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


# -- running arms --------------------------------------------------------------------------
@dataclass
class Running:
    arm: Arm
    origin_port: int
    listen_port: int
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    result: ArmResult = field(init=False)
    last_end: float | None = None

    def __post_init__(self) -> None:
        self.result = ArmResult(self.arm.name)


def blocks(running: Sequence[Running]) -> list[list[Running]]:
    """The groups of arms that share the link in turn, one group after another.

    A warm-up arm's check or regrow is a window-sized burst at a time of its own choosing:
    beside another arm's fetch it costs that fetch, and beside a connection's first fetch
    it can leave the origin's ssthresh low for every fetch after it (measured: S1's `off`,
    docs/BENCHMARKS.md). So every warm-up arm runs alone, and the arms that never send
    dummy traffic (off, the peers, cold) together after them."""
    quiet = [r for r in running if not r.arm.warms]
    return [[r] for r in running if r.arm.warms] + ([quiet] if quiet else [])


class CellRun:
    """One cell: the testbed, the origin, the arms and the measurements."""

    def __init__(
        self,
        cell: Cell,
        arms: Sequence[Arm],
        out: Path,
        rng: random.Random,
        progress: Callable[[str], None],
    ) -> None:
        self.cell = cell
        self.out = out / cell.name
        self.rng = rng
        self.say = progress
        self.running = [
            Running(arm, FIRST_ORIGIN_PORT + i, FIRST_LISTEN_PORT + i) for i, arm in enumerate(arms)
        ]
        self.tb = netns.Testbed(netns.LinkSpec(cell.rtt, cell.rate_bps, loss=cell.loss))
        self.observer: WindowObserver | None = None
        self.info: origins.OriginInfo | None = None
        self.payload: Path | None = None
        self._link_free = 0.0
        self._cross_stop = threading.Event()
        self._cross: threading.Thread | None = None

    # -- set-up ---------------------------------------------------------------------------
    def run(self) -> list[ArmResult]:
        self.out.mkdir(parents=True, exist_ok=True)
        with self.tb:
            ports = [r.origin_port for r in self.running]
            self.info = origins.start_nginx(
                self.tb, extra_tls_ports=[p for p in ports if p != origins.TLS_PORT]
            )
            if self.cell.upload:
                self.payload = self.out / "upload.bin"
                self.payload.write_bytes(bytes(self.cell.size))
            # The sender's sockets: the origin's for downloads, the client side's (the
            # proxies', HAProxy's, nginx's, curl's) for uploads.
            side = "c" if self.cell.upload else "o"
            self.observer = self.tb.observer(ports, SAMPLE_INTERVAL, side=side)
            try:
                if self.cell.cross:
                    self._start_cross_traffic()
                for group in blocks(self.running):
                    self._block(group)
            finally:
                self._cross_stop.set()
                if self._cross is not None:
                    self._cross.join(timeout=30)
                for r in self.running:
                    self._stop(r)
                samples = self.observer.stop()
            self._attribute(samples)
        return [r.result for r in self.running]

    def _block(self, group: list[Running]) -> None:
        started = []
        for r in group:
            try:
                self._start(r)
                started.append(r)
            except (peers.PeerUnavailable, RuntimeError, TimeoutError, OSError) as exc:
                r.result.error = str(exc)
                self.say(f"    {r.arm.name}: cannot start: {exc}")
        for r in started:
            try:
                self._wait_warm(r)
            except RuntimeError as exc:
                r.result.error = str(exc)
                self.say(f"    {r.arm.name}: {exc}")
        ok = [r for r in started if r.result.error is None]
        if ok:
            if self.cell.idle < PAIR_GAP:
                self._pairs(ok)
            else:
                self._timeline(ok)
        for r in group:
            self._stop(r)

    def _proxy_argv(self, r: Running) -> list[str]:
        assert self.info is not None
        cell = self.cell
        argv = [
            "-v",
            "--upstream",
            f"https://{self.tb.origin_addr}:{r.origin_port}",
            "--ca-file",
            self.info.ca_file,
            "--pool-size",
            str(cell.pool),
            "--bandwidth-mbps",
            f"{cell.rate_bps / 1e6:g}",
        ]
        if r.arm.strategy:
            argv += ["--strategy", r.arm.strategy]
        if cell.upload:
            argv += ["--direction", "upload", "--upload-path", "/sink"]
        else:
            argv += ["--download-path", self.info.blob_path]
        return [*argv, *r.arm.extra]

    def _start(self, r: Running) -> None:
        assert self.info is not None
        kind = r.arm.kind
        workdir = self.out / r.arm.name
        workdir.mkdir(parents=True, exist_ok=True)
        if kind == "proxy":
            r.log = workdir / "proxy.log"
            r.proc = self.tb.start_proxy(
                self._proxy_argv(r),
                listen=f"127.0.0.1:{r.listen_port}",
                register=f"proxy-{r.listen_port}",
                log=r.log,
            )
        elif kind == "haproxy":
            r.proc = peers.start_haproxy(
                self.tb,
                workdir,
                listen_port=r.listen_port,
                origin_port=r.origin_port,
                ca_file=self.info.ca_file,
            )
        elif kind == "nginx":
            r.proc = peers.start_nginx_proxy(
                self.tb,
                workdir,
                listen_port=r.listen_port,
                origin_port=r.origin_port,
                ca_file=self.info.ca_file,
            )

    def _wait_warm(self, r: Running, timeout: float = 90.0) -> None:
        """Until every session of a warm-up proxy is holding (the proxy logs each state
        change with -v); other arms have nothing to wait for."""
        strategy = r.arm.resolved_strategy()
        if r.log is None or strategy in (None, "off"):
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if r.proc is not None and r.proc.poll() is not None:
                raise RuntimeError(f"proxy exited ({r.proc.returncode}); see {r.log}")
            text = r.log.read_text(errors="replace")
            holding = {
                line.split("session ")[1].split(":")[0]
                for line in text.splitlines()
                if "-> holding" in line and "session " in line
            }
            if len(holding) >= self.cell.pool:
                return
            time.sleep(0.2)
        raise RuntimeError(f"sessions did not reach HOLDING within {timeout:.0f}s (see {r.log})")

    def _stop(self, r: Running) -> None:
        proc, r.proc = r.proc, None
        if proc is None:
            return
        netns.stop_process(proc)
        if proc.stderr is not None:
            proc.stderr.close()

    def _start_cross_traffic(self) -> None:
        """One bulk TCP download over the same bottleneck for the whole cell (h2c port, not
        observed as an arm), restarted if it ends."""
        assert self.info is not None
        bulk = "/bulk.bin"
        path = self.tb_origin_www() / bulk.lstrip("/")
        with open(path, "wb") as fh:
            fh.truncate(20 * 1024**3)  # sparse: nginx serves zeros
        url = f"{self.info.h2c_url}{bulk}"

        def loop() -> None:
            while not self._cross_stop.is_set():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.tb.run(
                        "c",
                        ["curl", "-s", "-o", "/dev/null", "--http2-prior-knowledge", url],
                        timeout=600,
                    )

        # curl dies with the namespace when the testbed goes down.
        self._cross = threading.Thread(target=loop, daemon=True, name="cross-traffic")
        self._cross.start()
        time.sleep(3.0)  # let the bulk flow reach its steady state first

    def tb_origin_www(self) -> Path:
        return origins.workdir(self.tb) / "nginx" / "www"

    # -- schedules --------------------------------------------------------------------------
    def _gap(self) -> float:
        if not self.cell.random_arrivals:
            return self.cell.idle
        mean = self.cell.idle
        return min(4 * mean, max(0.3, self.rng.expovariate(1 / mean)))

    def _pairs(self, group: list[Running]) -> None:
        """Short gaps: per round, each arm in random order primes, waits, then measures."""
        for rnd in range(self.cell.runs):
            order = list(group)
            self.rng.shuffle(order)
            for r in order:
                if r.arm.kind != "cold":
                    self._fetch(r, measure=False, round_no=rnd)
                    time.sleep(self._gap())
                self._fetch(r, measure=True, round_no=rnd)

    def _timeline(self, group: list[Running]) -> None:
        """Long gaps: every arm fetches ``gap`` after its own previous fetch ended, on one
        timeline, never two fetches at once. The first fetch of each arm only primes."""
        now = time.monotonic()
        spacing = self.cell.idle / len(group)
        due = {id(r): now + i * spacing for i, r in enumerate(group)}
        left = {id(r): self.cell.runs + (0 if r.arm.kind == "cold" else 1) for r in group}
        while any(left.values()):
            r = min((x for x in group if left[id(x)]), key=lambda x: due[id(x)])
            start_at = max(due[id(r)], self._link_free + LINK_QUIET)
            time.sleep(max(0.0, start_at - time.monotonic()))
            measure = r.arm.kind == "cold" or r.last_end is not None
            self._fetch(r, measure=measure, round_no=self.cell.runs - left[id(r)])
            left[id(r)] -= 1
            due[id(r)] = time.monotonic() + self._gap()

    # -- one fetch ---------------------------------------------------------------------------
    def _curl_argv(self, r: Running) -> list[str]:
        assert self.info is not None
        cell = self.cell
        argv = ["curl", "-s", "-S", "-f", "-o", "/dev/null", "-w", "%{time_total}"]
        # Expect: 100-continue would add a round trip (or a 1 s wait) to every upload.
        argv += ["-H", "Expect:", "--max-time", "120"]
        if r.arm.kind == "cold":
            base = f"https://{self.tb.origin_addr}:{r.origin_port}"
            argv += ["--http2", "--cacert", self.info.ca_file]
        else:
            base = f"http://127.0.0.1:{r.listen_port}"
        if cell.upload:
            assert self.payload is not None
            return [*argv, "--data-binary", f"@{self.payload}", f"{base}/sink"]
        return [*argv, "-r", f"0-{cell.size - 1}", f"{base}{self.info.blob_path}"]

    def _drops(self) -> tuple[int, int]:
        stats = self.tb.link_stats()
        direction = stats.get("a_to_o" if self.cell.upload else "o_to_a", {})
        if not isinstance(direction, dict):
            return 0, 0
        return int(direction.get("dropped_queue", 0)), int(direction.get("dropped_loss", 0))

    def _fetch(self, r: Running, *, measure: bool, round_no: int) -> None:
        assert self.observer is not None
        base = self.observer.started_at
        drops0, loss0 = self._drops()
        start = time.monotonic()
        gap = start - r.last_end if r.last_end is not None else None
        result = self.tb.run("c", self._curl_argv(r), timeout=150)
        end = time.monotonic()
        self._link_free = end
        r.last_end = end
        if result.returncode != 0:
            self.say(f"    {r.arm.name}: fetch failed: {result.stderr.strip()[:200]}")
            return
        ttlb = float(result.stdout)
        if measure:
            # The emulator's counters refresh every 100 ms. Not after a prime: its wait
            # before the measured fetch is the cell's gap (a prime's drops may therefore
            # miss its last 100 ms).
            time.sleep(0.15)
        drops1, loss1 = self._drops()
        fetch = Fetch(
            r.arm.name,
            ttlb,
            start - base,
            end - base,
            gap if r.arm.kind != "cold" else None,
            drops1 - drops0,
            loss1 - loss0,
        )
        if not measure:
            if r.result.first_ttlb is None:
                r.result.first_ttlb = ttlb
            r.result.primes.append(fetch)
            return
        r.result.fetches.append(fetch)
        self.say(
            f"    {r.arm.name:8s} #{len(r.result.fetches)}: {ttlb * 1000:7.0f} ms "
            f"({ttlb / self.cell.ideal:4.2f}x ideal)"
            + (f" gap {gap:.1f}s" if gap is not None and r.arm.kind != "cold" else "")
            + (f" drops {fetch.drops}" if fetch.drops else "")
        )

    # -- kernel attribution (after the cell) ----------------------------------------------------
    def _attribute(self, samples: list[KernelSample]) -> None:
        """From the ss samples: per fetch, the serving connection's cwnd before it and its
        retransmits; per arm, the bytes its connections carried while idle."""
        upload = self.cell.upload

        def arm_port(s: KernelSample) -> str:
            # The arm's origin port: the sender's local port (origin side) for downloads,
            # the peer's port (client side) for uploads.
            return (s.peer if upload else s.local).rsplit(":", 1)[1]

        def key(s: KernelSample) -> str:
            return s.local if upload else s.peer

        by_port: dict[int, list[KernelSample]] = {}
        for s in samples:
            with contextlib.suppress(ValueError):
                by_port.setdefault(int(arm_port(s)), []).append(s)
        for r in self.running:
            mine = by_port.get(r.origin_port, [])
            for f in [*r.result.primes, *r.result.fetches]:
                before = _latest(mine, f.start, key)
                after = _latest(mine, f.end + 0.2, key)
                served = _busiest(before, after)
                if served is not None:
                    f.conn = served
                    pre = before.get(served)
                    post = after[served]
                    if pre is not None:
                        f.cwnd_before = pre.cwnd
                        f.cwnd_effective = pre.effective_cwnd()
                        f.ssthresh_before = pre.ssthresh
                        f.restart_pending = pre.restart_pending
                        f.retrans = (post.retrans_total or 0) - (pre.retrans_total or 0)
                    else:
                        f.retrans = post.retrans_total
                for other in self.running:
                    if other is not r:
                        moved = _moved(by_port.get(other.origin_port, []), f.start, f.end, key)
                        if moved:
                            f.other_arms[other.arm.name] = moved
                # Connections are told apart by their addresses, so the arms' counts add up.
                f.other_bytes = sum(f.other_arms.values())
            # Idle traffic: from each measured fetch's gap (minus the previous fetch's tail).
            for f in r.result.fetches:
                if f.gap is None or f.gap < 1.0:
                    continue
                a, b = f.start - f.gap + 0.5, f.start
                r.result.idle_seconds += b - a
                r.result.idle_bytes += _moved(mine, a, b, key)


def _latest(
    samples: list[KernelSample], at: float, key: Callable[[KernelSample], str]
) -> dict[str, KernelSample]:
    """The last sample of each connection taken at or before ``at`` (within 1 s)."""
    out: dict[str, KernelSample] = {}
    for s in samples:
        if at - 1.0 <= s.at <= at:
            out[key(s)] = s
    return out


def _busiest(before: dict[str, KernelSample], after: dict[str, KernelSample]) -> str | None:
    best, most = None, -1
    for conn, post in after.items():
        pre = before.get(conn)
        moved = (post.bytes_acked or 0) - ((pre.bytes_acked or 0) if pre else 0)
        if moved > most:
            best, most = conn, moved
    return best


def _moved(
    samples: list[KernelSample], a: float, b: float, key: Callable[[KernelSample], str]
) -> int:
    """Bytes the connections sent and received between ``a`` and ``b`` (both directions)."""
    start = _latest(samples, a, key)
    end = _latest(samples, b, key)
    total = 0
    for conn, post in end.items():
        pre = start.get(conn)
        for attr in ("bytes_acked", "bytes_received"):
            v1 = getattr(post, attr) or 0
            v0 = (getattr(pre, attr) or 0) if pre else 0
            total += max(0, v1 - v0)
    return total


# -- report ------------------------------------------------------------------------------------
def table(cells: Sequence[Cell], results: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Markdown: one row per cell and arm."""
    lines = [
        "| cell | arm | p50 ms | p90 ms | p50/ideal | p90/ideal | cwnd before (p50, BDP) "
        "| restart pending | retrans | queue drops | idle traffic (% of path) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for cell in cells:
        for arm, s in results.get(cell.name, {}).items():
            if "p50_ms" not in s:
                lines.append(f"| {cell.name} | {arm} | {s.get('error', 'no data')} |")
                continue
            cwnd = (
                f"{s['cwnd_effective_p50']:.0f} ({s['cwnd_bdp_p50']:.2f})"
                if "cwnd_effective_p50" in s
                else "new conn"
            )
            share = f"{s['idle_share'] * 100:.2f}" if s.get("idle_share") is not None else "-"
            lines.append(
                f"| {cell.name} | {arm} | {s['p50_ms']:.0f} | {s['p90_ms']:.0f} "
                f"| {s['p50_ideal']:.2f} | {s['p90_ideal']:.2f} | {cwnd} "
                f"| {s['restart_pending']}/{s['n']} | {s['retrans_total']} "
                f"| {s['drops_total']} | {share} |"
            )
    return "\n".join(lines)


def acceptance(cells: Sequence[Cell], results: dict[str, dict[str, dict[str, Any]]]) -> str:
    """The warm-up issue's acceptance criteria, checked against this run (markdown)."""
    lines = []

    def mark(ok: bool) -> str:
        return "met" if ok else "**missed**"

    for cell in cells:
        arms = results.get(cell.name, {})
        d = arms.get("default", {})
        if "p50_ideal" not in d:
            continue
        if cell.loss or cell.cross:
            ok = d["p50_ideal"] <= 1.3
            lines.append(
                f"- {cell.name}: default p50 {d['p50_ideal']:.2f}x ideal (<= 1.3): {mark(ok)}"
            )
        else:
            ok = d["p50_ideal"] <= 1.10 and d["p90_ideal"] <= 1.25
            lines.append(
                f"- {cell.name}: default p50 {d['p50_ideal']:.2f}x, p90 {d['p90_ideal']:.2f}x "
                f"(<= 1.10, <= 1.25): {mark(ok)}"
            )
        off = arms.get("off", {})
        if "p50_ms" in off:
            ok = d["p50_ms"] <= 1.03 * off["p50_ms"]
            lines.append(
                f"  - not slower than off: {d['p50_ms']:.0f} vs {off['p50_ms']:.0f} ms: {mark(ok)}"
            )
        hap = arms.get("haproxy", {})
        if hap.get("p50_ideal", 0) >= 2.0:
            speedup = hap["p50_ms"] / d["p50_ms"]
            lines.append(
                f"  - vs HAProxy ({hap['p50_ideal']:.2f}x ideal): {speedup:.2f}x faster "
                f"(>= 1.8): {mark(speedup >= 1.8)}"
            )
        if d.get("idle_share") is not None:
            burst = arms.get("burst", {}).get("idle_share")
            extra = f"; burst {burst * 100:.1f}%" if burst is not None else ""
            lines.append(
                f"  - idle traffic {d['idle_share'] * 100:.2f}% of the path (<= 2%){extra}: "
                f"{mark(d['idle_share'] <= 0.02)}"
            )
        if cell.random_arrivals:
            lines.append(f"  - p95 {d['p95_ideal']:.2f}x (<= 1.15): {mark(d['p95_ideal'] <= 1.15)}")
    return "\n".join(lines)


def heatmap(
    cells: Sequence[Cell], arms: Sequence[str], results: dict[str, Any], path: Path
) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    names = [c.name for c in cells if c.name in results]
    data = [[results[n].get(a, {}).get("p50_ideal", math.nan) for a in arms] for n in names]
    fig, ax = plt.subplots(figsize=(1.2 * len(arms) + 2, 0.5 * len(names) + 1.5))
    image = ax.imshow(data, cmap="RdYlGn_r", vmin=1.0, vmax=3.0, aspect="auto")
    ax.set_xticks(range(len(arms)), arms)
    ax.set_yticks(range(len(names)), names)
    for i, row in enumerate(data):
        for j, value in enumerate(row):
            if not math.isnan(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8)
    ax.set_title("p50 time to last byte / ideal (RTT + size / path rate)")
    fig.colorbar(image, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return str(path)


def scatter(report: dict[str, Any], path: Path, arms: Sequence[str]) -> str | None:
    """Every measured fetch: the origin's window before it (BDPs of the path; the kernel's
    restart formula applied when an idle restart was pending) against its time to last byte
    over ideal; hollow markers had no queue drops, filled ones did."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    cells = {c["name"]: c for c in report["cells"]}
    colors = {"default": "tab:green", "ping": "tab:orange", "burst": "tab:blue", "off": "grey"}
    fig, ax = plt.subplots(figsize=(9, 5))
    for arm in arms:
        if arm not in colors:
            continue
        xs, ys, drops = [], [], []
        for cell_name, arm_results in report["fetches"].items():
            cell = cells.get(cell_name)
            if cell is None or cell["upload"] or cell["loss"] or cell["cross"]:
                continue
            for result in arm_results:
                if result["name"] != arm:
                    continue
                for f in result["fetches"]:
                    if f["cwnd_effective"] is None:
                        continue
                    xs.append(f["cwnd_effective"] * MSS / cell["bdp_bytes"])
                    ys.append(f["ttlb"] / cell["ideal_s"])
                    drops.append(f["drops"] > 0)
        ax.scatter(
            [x for x, d in zip(xs, drops, strict=True) if not d],
            [y for y, d in zip(ys, drops, strict=True) if not d],
            facecolors="none",
            edgecolors=colors[arm],
            label=f"{arm}",
            s=22,
        )
        ax.scatter(
            [x for x, d in zip(xs, drops, strict=True) if d],
            [y for y, d in zip(ys, drops, strict=True) if d],
            color=colors[arm],
            label=f"{arm} (queue drops)",
            s=22,
        )
    ax.axvline(1.0, color="black", ls=":", lw=0.8)
    ax.axhline(1.1, color="black", ls="--", lw=0.6)
    ax.set_xscale("log")
    ax.set_ylim(0.9, 4)
    ax.set_xlabel("origin cwnd before the fetch (BDPs of the path)")
    ax.set_ylabel("time to last byte / ideal")
    ax.set_title("Download cells without loss or cross traffic: every measured fetch")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return str(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="cwnd-proxy bench --matrix",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help=f"only the cells {', '.join(QUICK)}")
    p.add_argument("--cells", help="comma-separated cell names (default: all)")
    p.add_argument("--arms", help="comma-separated arm names (default: all)")
    p.add_argument("--runs", type=int, help="measured fetches per arm (default: per cell, >= 7)")
    p.add_argument("--out", default="bench/results/matrix", help="output directory")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--list", action="store_true", help="list the cells and arms, then exit")
    p.add_argument(
        "--replot", metavar="DIR", help="redraw the table and plots from DIR/results.json"
    )
    args = p.parse_args(argv)
    if args.replot:
        return _replot(Path(args.replot))
    cells = list(CELLS)
    if args.quick:
        cells = [c for c in cells if c.name in QUICK]
    if args.cells:
        wanted = args.cells.split(",")
        unknown = set(wanted) - {c.name for c in CELLS}
        if unknown:
            p.error(f"unknown cells: {', '.join(sorted(unknown))}")
        cells = [c for c in CELLS if c.name in wanted]
    arms = list(ARMS)
    if args.arms:
        wanted = args.arms.split(",")
        unknown = set(wanted) - {a.name for a in ARMS}
        if unknown:
            p.error(f"unknown arms: {', '.join(sorted(unknown))}")
        arms = [a for a in ARMS if a.name in wanted]
    if args.list:
        for c in cells:
            print(f"{c.name:14s} {c.describe()}; ideal {c.ideal * 1000:.0f} ms")
        print("arms: " + ", ".join(a.name for a in arms))
        return 0
    out = testbed_out_dir("cwnd-proxy bench --matrix", args.out)
    if out is None:
        return 1
    rng = random.Random(args.seed)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    raw: dict[str, list[dict[str, Any]]] = {}
    began = time.monotonic()

    def say(text: str) -> None:
        print(f"[{time.monotonic() - began:6.0f}s] {text}", flush=True)

    for i, cell in enumerate(cells, 1):
        if args.runs:
            cell = Cell(**{**asdict(cell), "runs": args.runs})
        cell_arms = [a for a in arms if a.runs_in(cell)]
        say(f"cell {i}/{len(cells)} {cell.name}: {cell.describe()}")
        say(f"  ideal {cell.ideal * 1000:.0f} ms; arms {', '.join(a.name for a in cell_arms)}")
        t0 = time.monotonic()
        arm_results = CellRun(cell, cell_arms, out, rng, say).run()
        results[cell.name] = {a.name: a.summary(cell) for a in arm_results}
        raw[cell.name] = [asdict(a) for a in arm_results]
        for name, s in results[cell.name].items():
            if "p50_ideal" in s:
                say(
                    f"  {name:8s} p50 {s['p50_ms']:6.0f} ms ({s['p50_ideal']:.2f}x) "
                    f"p90 {s['p90_ideal']:.2f}x; cwnd {s.get('cwnd_effective_p50', '-')} "
                    f"retrans {s['retrans_total']} drops {s['drops_total']}"
                )
        say(f"  cell {cell.name} took {time.monotonic() - t0:.0f}s")
        _write(out, cells, arms, results, raw)
    files = _write(out, cells, arms, results, raw)
    print(table(cells, results))
    say(f"matrix done in {(time.monotonic() - began) / 60:.1f} min; written: {', '.join(files)}")
    return 0


def _replot(out: Path) -> int:
    report = json.loads((out / "results.json").read_text())
    known = {c.name: c for c in CELLS}
    cells = [known[c["name"]] for c in report["cells"] if c["name"] in known]
    names = sorted({a for cell in report["summary"].values() for a in cell})
    arms = [a for a in ARMS if a.name in names]
    raw = report["fetches"]
    files = _write(out, cells, arms, report["summary"], raw)
    print(table(cells, report["summary"]))
    print("written: " + ", ".join(files))
    return 0


def _write(
    out: Path,
    cells: Sequence[Cell],
    arms: Sequence[Arm],
    results: dict[str, dict[str, dict[str, Any]]],
    raw: dict[str, list[dict[str, Any]]],
) -> list[str]:
    report = {
        "cells": [asdict(c) | {"ideal_s": c.ideal, "bdp_bytes": c.bdp} for c in cells],
        "summary": results,
        "fetches": raw,
    }
    (out / "results.json").write_text(json.dumps(report, indent=1))
    (out / "matrix.md").write_text(
        table(cells, results) + "\n\nAcceptance:\n\n" + acceptance(cells, results) + "\n"
    )
    files = [str(out / "results.json"), str(out / "matrix.md")]
    png = heatmap(cells, [a.name for a in arms], results, out / "heatmap.png")
    if png:
        files.append(png)
    png = scatter(report, out / "cwnd-vs-ttlb.png", [a.name for a in arms])
    if png:
        files.append(png)
    return files
