"""The metered connection window against the demo origin on loopback: the upstream can
never have more than the credit we granted outstanding, so an idle session's next response
starts with at most the burst limit."""

from __future__ import annotations

import asyncio

from cwndproxy.origin import DemoOrigin
from cwndproxy.upstream.dial import UpstreamTarget, dial
from cwndproxy.upstream.session import SessionSettings

LIMIT = 256 * 1024


async def _received_without_reading(origin: DemoOrigin, metered: bool) -> int:
    """Open a 20 MB download and never consume it: what arrives is what flow control let
    the server send."""
    session = await dial(
        UpstreamTarget("127.0.0.1", origin.port, tls=False),
        settings=SessionSettings(metered_window=metered),
        rtt_probe_interval=0,
    )
    try:
        await session.ping()
        session.limit_burst(LIMIT)
        stream = await session.open_stream("GET", "/cwnd/blob?size=20000000", [], end_stream=True)
        await stream.receive_response(5)
        # Loopback delivers in well under a second; wait until nothing more arrives.
        last = -1
        while stream.bytes_received != last:
            last = stream.bytes_received
            await asyncio.sleep(0.2)
        return stream.bytes_received
    finally:
        await session.aclose()


async def test_an_unread_response_gets_at_most_the_active_credit(origin: DemoOrigin) -> None:
    got = await _received_without_reading(origin, metered=True)
    # B of idle credit, raised to 1.5B once data flows; nothing more until we consume.
    assert LIMIT <= got <= 1.5 * LIMIT
    unmetered = await _received_without_reading(origin, metered=False)
    assert unmetered >= 8 * LIMIT, "without metering the 16 MiB stream window is the limit"


async def test_a_metered_session_still_streams_a_large_body(origin: DemoOrigin) -> None:
    session = await dial(
        UpstreamTarget("127.0.0.1", origin.port, tls=False),
        settings=SessionSettings(metered_window=True),
        rtt_probe_interval=0,
    )
    try:
        await session.ping()
        session.limit_burst(LIMIT)
        for _ in range(2):
            stream = await session.open_stream(
                "GET", "/cwnd/blob?size=8000000", [], end_stream=True
            )
            assert (await stream.receive_response(5)).status == 200
            assert await stream.read_up_to(10**9) == 8_000_000
        # Both responses announced their length: the credit left at the end is the limit.
        assert session.credit is not None
        await asyncio.sleep(0.05)
        assert session.conn.inbound_flow_control_window <= 1.5 * LIMIT
    finally:
        await session.aclose()
