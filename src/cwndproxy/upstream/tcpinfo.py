"""A typed reader for the kernel's view of a TCP connection (``getsockopt(TCP_INFO)``).

Offsets are those of ``struct tcp_info`` in linux/tcp.h; tests/unit/test_tcpinfo.py checks
them against a real transfer on this kernel (counters that must move, cwnd x MSS). Fields a
shorter (older-kernel) struct lacks read as None.

Mind which side a number describes: on a download connection ``snd_cwnd`` is the window for
our own small WINDOW_UPDATE traffic; the window that matters there lives on the server, and
our useful figures are ``rcv_rtt``, ``rcv_space`` and ``bytes_received``.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Protocol

TCP_INFO_LEN = 512


class SocketLike(Protocol):
    """A socket.socket or asyncio's TransportSocket wrapper."""

    def getsockopt(self, level: int, option: int, buflen: int) -> bytes: ...

    def setsockopt(self, level: int, option: int, value: int) -> None: ...


# name: (offset, struct format)
_FIELDS: dict[str, tuple[int, str]] = {
    "state": (0, "B"),
    "rto_us": (8, "I"),
    "snd_mss": (16, "I"),
    "rcv_mss": (20, "I"),
    "unacked": (24, "I"),
    "lost": (32, "I"),
    "retrans": (36, "I"),
    "rtt_us": (68, "I"),
    "rttvar_us": (72, "I"),
    "snd_ssthresh": (76, "I"),
    "snd_cwnd": (80, "I"),
    "rcv_rtt_us": (92, "I"),
    "rcv_space": (96, "I"),
    "total_retrans": (100, "I"),
    "pacing_rate": (104, "Q"),
    "bytes_acked": (120, "Q"),
    "bytes_received": (128, "Q"),
    "min_rtt_us": (148, "I"),
    "delivery_rate": (160, "Q"),
    "busy_time_us": (168, "Q"),
    "rwnd_limited_us": (176, "Q"),
    "sndbuf_limited_us": (184, "Q"),
    "bytes_sent": (200, "Q"),
    "bytes_retrans": (208, "Q"),
    # Linux 5.4+: packets that arrived out of order, on the receiving side. Each loss on
    # the path to us makes some (the packets after it, until the retransmission).
    "rcv_ooopack": (224, "I"),
}


@dataclass(frozen=True)
class TcpInfo:
    state: int
    rto_us: int
    snd_mss: int
    rcv_mss: int
    unacked: int
    lost: int
    retrans: int
    rtt_us: int
    rttvar_us: int
    snd_ssthresh: int
    snd_cwnd: int
    rcv_rtt_us: int
    rcv_space: int
    total_retrans: int
    pacing_rate: int | None
    bytes_acked: int | None
    bytes_received: int | None
    min_rtt_us: int | None
    delivery_rate: int | None
    busy_time_us: int | None
    rwnd_limited_us: int | None
    sndbuf_limited_us: int | None
    bytes_sent: int | None
    bytes_retrans: int | None
    rcv_ooopack: int | None

    @property
    def cwnd_bytes(self) -> int:
        """The sender's window in bytes (packets x MSS): what one RTT can carry."""
        return self.snd_cwnd * self.snd_mss


def _field(raw: bytes, name: str) -> int | None:
    """One field of a raw TCP_INFO; None if this kernel's struct is too short for it."""
    offset, fmt = _FIELDS[name]
    if len(raw) < offset + struct.calcsize(fmt):
        return None
    value: int = struct.unpack_from("=" + fmt, raw, offset)[0]
    return value


def parse_tcp_info(raw: bytes) -> TcpInfo:
    return TcpInfo(**{name: _field(raw, name) for name in _FIELDS})  # type: ignore[arg-type]


def _raw(sock: SocketLike) -> bytes:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_LEN)


def read_tcp_info(sock: SocketLike) -> TcpInfo:
    """Raises OSError if the socket is closed or not TCP."""
    return parse_tcp_info(_raw(sock))


def read_field(sock: SocketLike, name: str) -> int | None:
    """One field of TCP_INFO, without building the whole record (the warm-up reads one at
    each busy edge). Raises OSError as read_tcp_info does."""
    return _field(_raw(sock), name)
