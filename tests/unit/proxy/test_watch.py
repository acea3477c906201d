"""ClientWatch and WatchStarts: a request done within the delay never asks the server for
a disconnect; one still running after it does, and sees its client leave."""

from __future__ import annotations

import asyncio

from cwndproxy.proxy.asgi import Message
from cwndproxy.proxy.body import RequestBody
from cwndproxy.proxy.watch import ClientWatch, WatchStarts

DELAY = 0.02


class FakeServer:
    """An ASGI receive whose next message the test decides (the body is complete, so the
    next one can only be a disconnect)."""

    def __init__(self) -> None:
        self.calls = 0
        self.message: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

    async def receive(self) -> Message:
        self.calls += 1
        return await self.message

    def disconnect(self) -> None:
        self.message.set_result({"type": "http.disconnect"})


def left(watch: ClientWatch) -> bool:
    """Read after an await (mypy would keep an earlier narrowing of the attribute)."""
    return watch.has_left


def complete_body(server: FakeServer) -> RequestBody:
    return RequestBody(server.receive, {"type": "http.request", "body": b"", "more_body": False})


async def test_watch_closed_within_the_delay_never_receives() -> None:
    server = FakeServer()
    starts = WatchStarts(DELAY)
    watches = [ClientWatch(server.receive, complete_body(server), later=starts) for _ in range(50)]
    assert len(starts) == 50
    assert not any(w.started for w in watches)
    for w in watches:
        await w.aclose()
    assert len(starts) == 0
    await asyncio.sleep(DELAY * 3)  # the ticker finds nothing due, and stops
    assert server.calls == 0
    assert starts._ticker is None


async def test_watch_starts_after_the_delay_and_sees_the_client_leave() -> None:
    server = FakeServer()
    body = complete_body(server)
    starts = WatchStarts(DELAY)
    loop = asyncio.get_running_loop()
    made = loop.time()
    watch = ClientWatch(server.receive, body, later=starts)
    assert not await watch.left_before_forwarding(burst=False)  # not started: saw nothing
    while not watch.started:
        assert loop.time() - made < 1.0, "the watch never started"
        await asyncio.sleep(DELAY / 10)
    # Never early; late by at most one tick (delay / 2), plus this loop's scheduling.
    assert loop.time() - made >= DELAY
    await asyncio.sleep(0)
    assert server.calls == 1
    assert not watch.has_left
    waiter = asyncio.ensure_future(watch.left.wait())
    server.disconnect()
    await asyncio.wait_for(waiter, 1.0)
    assert body.client_gone()
    assert left(watch)
    await watch.aclose()


async def test_watch_without_delay_starts_at_once() -> None:
    server = FakeServer()
    body = complete_body(server)
    watch = ClientWatch(server.receive, body)
    assert watch.started
    server.disconnect()
    assert await watch.left_before_forwarding(burst=False)
    assert watch.left.is_set()  # made after the client left: already set
    await watch.aclose()
