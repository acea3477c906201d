"""The kernel's view of TCP connections, sampled over time with ``ss -tin``.

On the testbed this reads the *origin's* sockets, in the origin namespace: the congestion
window that download warm-up must hold lives there, and only the kernel knows it.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

_KV = re.compile(r"(\w+):(\S+)")
_RATE = re.compile(r"\b(delivery_rate|pacing_rate|send) (\d+(?:\.\d+)?)([KMG]?)bps")
_MULT = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}
_CC = ("cubic", "bbr", "reno", "bbr2", "dctcp", "vegas", "westwood", "htcp")


@dataclass(frozen=True)
class KernelSample:
    at: float
    local: str
    peer: str
    cc: str | None
    cwnd: int | None
    ssthresh: int | None
    mss: int | None
    rtt_ms: float | None
    bytes_sent: int | None
    bytes_acked: int | None
    send_q: int
    lastsnd_ms: int | None
    delivery_rate_bps: float | None
    rto_ms: int | None = None
    bytes_received: int | None = None
    bytes_retrans: int | None = None
    # Total segments retransmitted on this connection (the Y of ss's "retrans:X/Y").
    retrans_total: int | None = None
    # Segments sent and not yet acknowledged: the sender's data in flight.
    unacked: int | None = None

    @property
    def restart_pending(self) -> bool:
        """True when the socket has not sent for longer than its RTO: with
        tcp_slow_start_after_idle=1 the kernel's next send first runs tcp_cwnd_restart, so
        the cwnd shown here is not the one that send will use."""
        return (
            self.lastsnd_ms is not None
            and self.rto_ms is not None
            and self.lastsnd_ms > self.rto_ms
            # Congestion controls that own the whole loop skip the restart (the kernel's
            # tcp_slow_start_after_idle_check returns early for ca_ops->cong_control).
            and self.cc not in ("bbr", "bbr2")
        )

    def effective_cwnd(self, initial: int = 10) -> int | None:
        """The window the next send starts with: ``cwnd`` itself, or, after an idle gap
        longer than the RTO, what ``tcp_cwnd_restart`` leaves of it (halved once per RTO
        of idle beyond the first, never below the initial window). Derived from the
        measured cwnd, lastsnd and rto with the kernel's own formula."""
        if self.cwnd is None:
            return None
        if not self.restart_pending or not self.rto_ms:
            return self.cwnd
        assert self.lastsnd_ms is not None
        restart = min(initial, self.cwnd)
        cwnd, delta = self.cwnd, self.lastsnd_ms
        delta -= self.rto_ms
        while delta > 0 and cwnd > restart:
            cwnd >>= 1
            delta -= self.rto_ms
        return max(cwnd, restart)

    @property
    def cwnd_bytes(self) -> int | None:
        if self.cwnd is None or self.mss is None:
            return None
        return self.cwnd * self.mss


def _int(values: dict[str, str], key: str) -> int | None:
    value = values.get(key)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def parse_ss(text: str, at: float) -> list[KernelSample]:
    """Parse ``ss -tinH`` output: a socket line, then an indented line of TCP info."""
    samples: list[KernelSample] = []
    socket_line: list[str] | None = None
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            socket_line = line.split()
            # With a state filter ss omits the State column: Recv-Q Send-Q Local Peer.
            if socket_line and not socket_line[0].isdigit():
                socket_line = socket_line[1:]
            continue
        if socket_line is None or len(socket_line) < 4:
            continue
        values = dict(_KV.findall(line))
        rates = {m.group(1): float(m.group(2)) * _MULT[m.group(3)] for m in _RATE.finditer(line)}
        words = line.split()
        rtt = values.get("rtt")
        retrans = values.get("retrans", "")
        samples.append(
            KernelSample(
                at=at,
                local=socket_line[2],
                peer=socket_line[3],
                cc=next((w for w in words if w in _CC), None),
                cwnd=_int(values, "cwnd"),
                ssthresh=_int(values, "ssthresh"),
                mss=_int(values, "mss"),
                rtt_ms=float(rtt.split("/")[0]) if rtt else None,
                bytes_sent=_int(values, "bytes_sent"),
                bytes_acked=_int(values, "bytes_acked"),
                send_q=int(socket_line[1]),
                lastsnd_ms=_int(values, "lastsnd"),
                delivery_rate_bps=rates.get("delivery_rate"),
                rto_ms=_int(values, "rto"),
                bytes_received=_int(values, "bytes_received"),
                bytes_retrans=_int(values, "bytes_retrans"),
                retrans_total=int(retrans.split("/")[1]) if "/" in retrans else 0,
                unacked=_int(values, "unacked"),
            )
        )
        socket_line = None
    return samples


def ss_command(
    port: int | Sequence[int], prefix: Sequence[str] = (), *, peer: bool = False
) -> list[str]:
    """Established connections whose local port is ``port`` (the server's sockets), or with
    ``peer`` whose remote port is (a client's sockets to that server). Several ports may be
    given: one ss run then samples them all at the same instant."""
    which = "dport" if peer else "sport"
    ports = [port] if isinstance(port, int) else list(port)
    expr = " or ".join(f"{which} = :{p}" for p in ports)
    return [*prefix, "ss", "-tinH", "state", "established", f"( {expr} )"]


class WindowObserver:
    """Samples ``ss`` every ``interval`` seconds until stopped.

    One long-lived shell loop runs ``ss`` in the sampled namespace and a thread reads its
    output: spawning ``ip netns exec ss`` twenty times a second costs a good part of a core,
    which on a 2-core machine disturbs the very transfers being observed."""

    MARK = "--cwnd-observer-sample--"

    def __init__(
        self,
        argv: Sequence[str],
        interval: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.argv = list(argv)
        self.interval = interval
        self.samples: list[KernelSample] = []
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen[str] | None = None
        self.started_at = clock()

    def sample_once(self) -> list[KernelSample]:
        at = self._clock() - self.started_at
        out = subprocess.run(self.argv, capture_output=True, text=True, timeout=10).stdout
        return parse_ss(out, at)

    def _loop_argv(self) -> list[str]:
        i = self.argv.index("ss")
        prefix, ss = self.argv[:i], self.argv[i:]
        script = f"while :; do {shlex.join(ss)}; echo {self.MARK}; sleep {self.interval}; done"
        return [*prefix, "sh", "-c", script]

    def _loop(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        block: list[str] = []
        for line in proc.stdout:
            if line.strip() == self.MARK:
                self.samples.extend(parse_ss("".join(block), self._clock() - self.started_at))
                block = []
            else:
                block.append(line)
            if self._stop.is_set():
                break

    def start(self) -> WindowObserver:
        self.started_at = self._clock()
        self._proc = subprocess.Popen(
            self._loop_argv(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        self._thread = threading.Thread(target=self._loop, daemon=True, name="ss-observer")
        self._thread.start()
        return self

    def stop(self) -> list[KernelSample]:
        self._stop.set()
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._thread is not None:
            self._thread.join(timeout=15)
        if self._proc is not None and self._proc.stdout is not None:
            self._proc.stdout.close()
        return self.samples

    def series(self) -> dict[str, list[dict[str, object]]]:
        """Samples grouped per connection (by peer address), as plain dicts."""
        out: dict[str, list[dict[str, object]]] = {}
        for sample in self.samples:
            out.setdefault(sample.peer, []).append(asdict(sample))
        return out
