"""The metered connection window against the demo origin on loopback: the upstream can
never have more than the credit we granted outstanding, so an idle session's next response
starts with at most the burst limit."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from cwndproxy.lab.origin import DemoOrigin
from cwndproxy.upstream.dial import UpstreamTarget, dial
from cwndproxy.upstream.session import DEFAULT_STREAM_WINDOW, H2Session, SessionSettings

LIMIT = 256 * 1024


def _server_credit(origin: DemoOrigin) -> int:
    """The connection window the origin sees: what it may still send us."""
    (protocol,) = origin.protocols
    return int(protocol.conn.outbound_flow_control_window)


@contextlib.asynccontextmanager
async def metered_session(
    origin: DemoOrigin, stream_window: int = DEFAULT_STREAM_WINDOW
) -> AsyncIterator[H2Session]:
    """A metered session to the origin whose burst limit is LIMIT."""
    session = await dial(
        UpstreamTarget("127.0.0.1", origin.port, tls=False),
        settings=SessionSettings(metered_window=True, stream_window=stream_window),
        rtt_probe_interval=0,
    )
    try:
        await session.ping()
        session.limit_burst(LIMIT)
        yield session
    finally:
        await session.aclose()


async def test_credit_is_the_burst_limit_while_idle_and_bounded_while_data_flows(
    origin: DemoOrigin,
) -> None:
    async with metered_session(origin, stream_window=4 * 1024 * 1024) as session:
        await session.ping()  # the WINDOW_UPDATE has reached the origin
        assert _server_credit(origin) == LIMIT
        # An unread 20 MB download: the stream window (4 MiB) stops it, and the origin's
        # credit never exceeds 1.5 burst limits on the way.
        stream = await session.open_stream("GET", "/cwnd/blob?size=20000000", [], end_stream=True)
        await stream.receive_response(5)
        seen = []
        last = -1
        while stream.bytes_received != last:
            last = stream.bytes_received
            seen.append(_server_credit(origin))
            await asyncio.sleep(0.05)
        assert stream.bytes_received <= 4 * 1024 * 1024
        assert max(seen) <= 1.5 * LIMIT
        stream.cancel()


async def test_a_metered_session_still_streams_a_large_body(origin: DemoOrigin) -> None:
    async with metered_session(origin) as session:
        for _ in range(2):
            stream = await session.open_stream(
                "GET", "/cwnd/blob?size=8000000", [], end_stream=True
            )
            assert (await stream.receive_response(5)).status == 200
            assert await stream.read_up_to(10**9) == 8_000_000
        # Both responses announced their length: the credit left at the end is the limit
        # (top-ups come in steps of an eighth of it).
        await session.ping()
        assert 7 / 8 * LIMIT <= _server_credit(origin) <= LIMIT


async def test_paced_credit_held_back_is_granted_when_no_more_data_comes(
    origin: DemoOrigin,
) -> None:
    """Paced grants (upstream/credit.py): when the server has used all its credit, no DATA
    arrives to prompt the grant pacing held back, so the session's timer must send it.
    A 50 ms RTT is pretended on loopback, where the data otherwise comes far faster than
    the bucket refills: without the timer the download stops for good."""
    async with metered_session(origin) as session:
        assert session.credit is not None
        session.credit.min_rtt = 0.05  # 1.5 x 256 KiB per 50 ms: ~7.9 MB/s
        stream = await session.open_stream("GET", "/cwnd/blob?size=4000000", [], end_stream=True)
        assert (await stream.receive_response(5)).status == 200
        seen = []
        async with asyncio.timeout(20):
            while not stream.remote_closed:
                seen.append(_server_credit(origin))
                await asyncio.sleep(0.005)
        assert await stream.read_up_to(10**9) == 4_000_000
        assert max(seen) <= 1.5 * LIMIT
