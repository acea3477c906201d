"""The inbound connection's accounting: when a client's requests wait, pass or are refused
(the rapid-reset defence)."""

from __future__ import annotations

import asyncio

from cwndproxy.proxy.inbound import BURST_STREAMS, MAX_FORWARDED, REFUSE_RESETS, InboundConnection


def test_an_inbound_connection_is_suspect_in_a_burst_or_after_many_early_resets() -> None:
    assert not InboundConnection(active=BURST_STREAMS, requests=1000).suspect
    assert InboundConnection(active=BURST_STREAMS + 1).suspect
    # Resets count only when they are many and at least half of what the client asked.
    many = BURST_STREAMS + 1
    assert InboundConnection(requests=2 * many, early_resets=many).suspect
    assert not InboundConnection(requests=10 * many, early_resets=many).suspect
    assert not InboundConnection(requests=BURST_STREAMS, early_resets=BURST_STREAMS).suspect


def test_a_connection_is_refused_once_most_of_its_finished_requests_were_resets() -> None:
    many = REFUSE_RESETS + 1
    # Under a flood most requests that arrived are still waiting: the finished ones count.
    assert InboundConnection(requests=1000, finished=many, early_resets=many).refused
    assert not InboundConnection(requests=1000, finished=10 * many, early_resets=many).refused
    assert not InboundConnection(finished=REFUSE_RESETS, early_resets=REFUSE_RESETS).refused


async def test_forwarding_waits_for_room_and_gives_up_when_the_client_leaves() -> None:
    conn = InboundConnection(forwarding=MAX_FORWARDED)
    left = asyncio.Event()
    waiter = asyncio.create_task(conn.forward_slot(left))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    conn.forward_done()
    assert await waiter is True and conn.forwarding == MAX_FORWARDED
    gone = asyncio.create_task(conn.forward_slot(left))
    await asyncio.sleep(0.01)
    left.set()
    assert await gone is False and conn.forwarding == MAX_FORWARDED
