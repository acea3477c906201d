"""Our upstream sockets' congestion control (TCP_CONGESTION), set after connect."""

from __future__ import annotations

import socket

import pytest

from cwndproxy.lab.origin import DemoOrigin
from cwndproxy.upstream.dial import DialError, UpstreamTarget, dial


def _allowed() -> list[str]:
    with open("/proc/sys/net/ipv4/tcp_allowed_congestion_control") as fh:
        return fh.read().split()


async def test_the_socket_uses_the_chosen_algorithm(origin: DemoOrigin) -> None:
    name = "reno" if "reno" in _allowed() else _allowed()[0]
    session = await dial(
        UpstreamTarget("127.0.0.1", origin.port, tls=False, congestion_control=name),
        rtt_probe_interval=0,
    )
    try:
        sock = session.socket
        assert sock is not None
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16)
        assert raw.rstrip(b"\0").decode() == name
    finally:
        await session.aclose()


async def test_an_unknown_algorithm_is_a_clear_dial_error(origin: DemoOrigin) -> None:
    with pytest.raises(DialError, match=r"cannot use congestion control 'nosuchcc'.*allowed here"):
        await dial(
            UpstreamTarget("127.0.0.1", origin.port, tls=False, congestion_control="nosuchcc"),
            rtt_probe_interval=0,
        )
