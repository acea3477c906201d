"""A userspace WAN link emulator between two TUN devices (this kernel has no netem).

Each direction is a bottleneck: a packet is serialized at the configured rate after the
packets before it (``free_at = max(now, free_at) + len/rate``), then propagates for the
one-way delay (``due = free_at + delay``). The queue in front of the bottleneck is
drop-tail, in bytes: its occupancy is exactly the serialization work still pending,
``(free_at - now) * rate``. Packets are never modified. Optional random loss for fault
tests.

Run as a process (the testbed does this, under ``chrt -f 50`` where allowed)::

    python -m cwndproxy.lab.testbed.link --a-dev X --a-ns NS ... --rtt-ms 80 --rate-mbit 100

It creates both TUN devices, moves each into its namespace, addresses them point to point,
prints ``ready`` and forwards until SIGTERM. The devices vanish with the process.
"""

from __future__ import annotations

import argparse
import collections
import errno
import fcntl
import json
import os
import random
import select
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
MAX_PACKET = 65536
# The emulator's own median release lateness (wake-up, read, write), measured at about
# 0.1 ms per hop on these machines; scheduling that much earlier centres the RTT on the
# setting (the kernel's minrtt was +0.4 ms at every RTT without it).
PROCESSING_COMPENSATION = 0.0001
STATS_PERIOD = 0.1


@dataclass
class BottleneckDirection:
    """One direction of the link, as plain state: unit-testable with a fake clock."""

    rate_bps: float
    delay: float
    queue_limit: int
    loss: float = 0.0
    free_at: float = 0.0
    forwarded: int = 0
    forwarded_bytes: int = 0
    dropped_queue: int = 0
    dropped_loss: int = 0
    max_backlog: int = 0

    def backlog(self, now: float) -> float:
        """Bytes waiting for serialization at ``now``."""
        return max(0.0, self.free_at - now) * self.rate_bps / 8

    def admit(
        self, now: float, size: int, rand: Callable[[], float] = random.random
    ) -> float | None:
        """The time the packet is due at the far end, or None if it is dropped."""
        if self.loss > 0 and rand() < self.loss:
            self.dropped_loss += 1
            return None
        backlog = self.backlog(now)
        if backlog + size > self.queue_limit:
            self.dropped_queue += 1
            return None
        self.free_at = max(now, self.free_at) + size * 8 / self.rate_bps
        self.max_backlog = max(self.max_backlog, int(backlog + size))
        self.forwarded += 1
        self.forwarded_bytes += size
        return self.free_at + self.delay


def default_queue_bytes(rate_bps: float, rtt: float) -> int:
    """One bandwidth-delay product, and never less than a few full-size packets."""
    return max(int(rate_bps * rtt / 8), 4 * 1500)


@dataclass
class TunEnd:
    dev: str
    netns: str
    addr: str
    peer: str
    congctl: str | None = None
    fd: int = -1


@dataclass
class LinkStats:
    a_to_o: dict[str, float] = field(default_factory=dict)
    o_to_a: dict[str, float] = field(default_factory=dict)
    write_errors: int = 0
    late_max_ms: float = 0.0
    # Release lateness (actual - scheduled), percentiles over the recent packets.
    late_ms: dict[str, float] = field(default_factory=dict)


def open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def setup_end(end: TunEnd) -> None:
    """Create the TUN device here, move it into its namespace and address it point to
    point. The open fd keeps the device attached to this process after the move."""
    end.fd = open_tun(end.dev)
    _ip("link", "set", end.dev, "netns", end.netns)
    _ip("-n", end.netns, "addr", "add", end.addr, "peer", end.peer, "dev", end.dev)
    # The kernel queues packets for us in the device (txqueuelen, default 500). A sender's
    # burst at 200 Mbit/s can outrun one read loop iteration; a long device queue keeps
    # every drop in the modelled queue, where it belongs.
    _ip("-n", end.netns, "link", "set", end.dev, "txqueuelen", "20000", "up")
    route = ["-n", end.netns, "route", "replace", f"{end.peer}/32", "dev", end.dev, "src", end.addr]
    if end.congctl:
        # The namespace's tcp_congestion_control sysctl is refused (EPERM); a route
        # attribute sets the algorithm for connections to this peer.
        route += ["congctl", end.congctl]
    _ip(*route)


def forward(
    a: TunEnd,
    o: TunEnd,
    a_to_o: BottleneckDirection,
    o_to_a: BottleneckDirection,
    stats_path: Path | None,
    stop: Callable[[], bool],
) -> LinkStats:
    """The event loop: read what is ready, release what is due, sleep until the next."""
    queues: dict[int, collections.deque[tuple[float, bytes]]] = {
        a.fd: collections.deque(),
        o.fd: collections.deque(),
    }
    model = {a.fd: a_to_o, o.fd: o_to_a}
    peer = {a.fd: o.fd, o.fd: a.fd}
    stats = LinkStats()
    lateness: collections.deque[float] = collections.deque(maxlen=20000)
    next_stats = next_lateness = time.monotonic() + STATS_PERIOD
    fds = [a.fd, o.fd]
    clock = time.monotonic
    while not stop():
        now = clock()
        due = [q[0][0] for q in queues.values() if q]
        timeout = max(0.0, min(due) - now) if due else 0.5
        readable, _, _ = select.select(fds, [], [], min(timeout, STATS_PERIOD))
        for fd in readable:
            direction, queue = model[fd], queues[fd]
            for _ in range(256):
                try:
                    packet = os.read(fd, MAX_PACKET)
                except BlockingIOError:
                    break
                release = direction.admit(clock(), len(packet))
                if release is not None:
                    queue.append((release, packet))
        now = clock()
        for fd, queue in queues.items():
            while queue and queue[0][0] <= now:
                release, packet = queue.popleft()
                late = (now - release) * 1000
                lateness.append(late)
                if late > stats.late_max_ms:
                    stats.late_max_ms = late
                try:
                    os.write(peer[fd], packet)
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.ENOBUFS, errno.EIO):
                        raise
                    stats.write_errors += 1
        if stats_path is not None and now >= next_stats:
            # Counters every 100 ms, so a benchmark can attribute queue drops to one fetch;
            # the lateness percentiles (a sort) once a second.
            next_stats = now + STATS_PERIOD
            if now >= next_lateness:
                next_lateness = now + 1.0
                _summarize_lateness(stats, lateness)
            _write_stats(stats_path, stats, a_to_o, o_to_a)
    if stats_path is not None:
        _write_stats(stats_path, stats, a_to_o, o_to_a)
    return stats


def _summarize_lateness(stats: LinkStats, lateness: collections.deque[float]) -> None:
    if lateness:
        ordered = sorted(lateness)
        last = len(ordered) - 1
        stats.late_ms = {
            q: round(ordered[int(f * last)], 3)
            for q, f in (("p50", 0.5), ("p99", 0.99), ("p999", 0.999))
        }


def _write_stats(
    path: Path, stats: LinkStats, a_to_o: BottleneckDirection, o_to_a: BottleneckDirection
) -> None:
    keys = ("forwarded", "forwarded_bytes", "dropped_queue", "dropped_loss", "max_backlog")
    stats.a_to_o = {k: getattr(a_to_o, k) for k in keys}
    stats.o_to_a = {k: getattr(o_to_a, k) for k in keys}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(stats)))
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="TUN-to-TUN WAN link emulator")
    for side in ("a", "o"):
        p.add_argument(f"--{side}-dev", required=True)
        p.add_argument(f"--{side}-ns", required=True)
        p.add_argument(f"--{side}-addr", required=True)
        p.add_argument(f"--{side}-congctl")
    p.add_argument("--rtt-ms", type=float, required=True)
    p.add_argument("--rate-mbit", type=float, required=True)
    p.add_argument("--queue-bytes", type=int)
    p.add_argument("--loss", type=float, default=0.0)
    p.add_argument("--stats", type=Path)
    args = p.parse_args(argv)

    rate = args.rate_mbit * 1e6
    rtt = args.rtt_ms / 1000
    queue = args.queue_bytes or default_queue_bytes(rate, rtt)
    a = TunEnd(args.a_dev, args.a_ns, args.a_addr, args.o_addr, args.a_congctl)
    o = TunEnd(args.o_dev, args.o_ns, args.o_addr, args.a_addr, args.o_congctl)
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        setup_end(a)
        setup_end(o)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        print(f"error: link setup failed: {exc} {detail.decode(errors='replace')}", flush=True)
        return 1
    print("ready", flush=True)
    one_way = max(0.0, rtt / 2 - PROCESSING_COMPENSATION)
    forward(
        a,
        o,
        BottleneckDirection(rate, one_way, queue, args.loss),
        BottleneckDirection(rate, one_way, queue, args.loss),
        args.stats,
        lambda: stopping,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
