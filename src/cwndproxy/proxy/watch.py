"""Whether the client of a request is still there, once its body is complete."""

from __future__ import annotations

import asyncio
import contextlib

from cwndproxy.proxy.asgi import Receive
from cwndproxy.proxy.body import RequestBody
from cwndproxy.proxy.inbound import RESET_WAIT
from cwndproxy.upstream.session import UpstreamStream

# A request still running after this long starts watching for its client leaving. Watching
# is an ASGI receive() kept pending in a task of its own: about 100 us of CPU per request
# under granian (measured: 411-525 vs 539-622 us per request, one h2 session behind granian),
# more than the rest of the app's own work, for requests most of which end well before
# any client could be seen leaving. A client that leaves in the first WATCH_DELAY costs
# the upstream at most that much work for nothing; after it, it is seen at once.
WATCH_DELAY = 0.02


class WatchStarts:
    """The watches waiting for their delay, started by one ticker task per event loop.

    A timer per request (``loop.call_later``) costs a handle and a heap entry, and under
    uvloop a libuv timer, made and cancelled at every request, nearly all of which end
    before it fires. Here a waiting watch costs a dict entry; the ticker runs while any
    waits and starts the due ones, so a watch starts between ``delay`` and
    ``delay + delay / 2`` after it was made."""

    def __init__(self, delay: float = WATCH_DELAY) -> None:
        self.delay = delay
        self._tick_every = delay / 2
        self._due: dict[ClientWatch, float] = {}
        self._ticker: asyncio.Task[None] | None = None

    def add(self, watch: ClientWatch) -> None:
        loop = asyncio.get_running_loop()
        self._due[watch] = loop.time() + self.delay
        if self._ticker is None:
            self._ticker = loop.create_task(self._tick(loop))

    def discard(self, watch: ClientWatch) -> None:
        self._due.pop(watch, None)

    def __len__(self) -> int:
        return len(self._due)

    async def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            while self._due:
                await asyncio.sleep(self._tick_every)
                now = loop.time()
                for watch, due in list(self._due.items()):
                    if due <= now:
                        del self._due[watch]
                        watch.start()
        finally:
            self._ticker = None


class ClientWatch:
    """Once the request body is complete, the next ASGI message can only be a disconnect
    (an HTTP/2 client's RST_STREAM arrives as one too). It is awaited for the rest of the
    request: the upstream stream of the moment is cancelled, so the upstream stops working
    for nobody, and a request whose client left before it was forwarded is never sent.

    With ``later`` (the app's WatchStarts) the watch starts only after its delay
    (WATCH_DELAY): a request done by then never pays for it. Without, it starts now."""

    def __init__(
        self, receive: Receive, body: RequestBody, *, later: WatchStarts | None = None
    ) -> None:
        self.stream: UpstreamStream | None = None
        self.has_left = False
        # Made only when someone waits for it: most requests never do.
        self._left: asyncio.Event | None = None
        self._body = body
        self._receive = receive
        self._task: asyncio.Task[None] | None = None
        self._starts: WatchStarts | None = None
        if later is not None:
            self._starts = later
            later.add(self)
        else:
            self.start()

    @property
    def started(self) -> bool:
        return self._task is not None

    @property
    def left(self) -> asyncio.Event:
        """Set once the client left (made on first use)."""
        if self._left is None:
            self._left = asyncio.Event()
            if self.has_left:
                self._left.set()
        return self._left

    def start(self) -> None:
        self._starts = None
        self._task = asyncio.get_running_loop().create_task(self._watch(self._receive))

    async def _watch(self, receive: Receive) -> None:
        try:
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                # The empty body of an HTTP/1.x request the app did not fetch (its framing
                # said empty): what comes next is the disconnect.
                message = await receive()
        except asyncio.CancelledError:
            raise
        except Exception:  # the server has nothing more for this request: the same
            message = {"type": "http.disconnect"}
        if message["type"] == "http.disconnect":
            self._body.disconnected = True
            self.has_left = True
            if self._left is not None:
                self._left.set()
            if self.stream is not None:
                self.stream.cancel()

    async def left_before_forwarding(self, *, burst: bool) -> bool:
        """Rapid reset (CVE-2023-44487): HEADERS and RST_STREAM arrive together, and a
        stream the client reset must not become an upstream stream, or a flood of them
        becomes a flood of upstream work at no cost to the client. hypercorn queues the
        disconnect right behind the request: one turn of the loop shows it. granian
        delivers it from its own thread ~1.5 ms later, so during a burst of new streams
        on one connection (more than BURST_STREAMS at once) each waits up to
        RESET_WAIT for it; a lone request never waits. A watch that has not started yet
        (``later``) has seen nothing: False."""
        if not self.started:
            return False
        await asyncio.sleep(0)
        if burst and not self.has_left:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RESET_WAIT):
                    await self.left.wait()
        return self.has_left

    def close_unstarted(self) -> bool:
        """Close a watch that never started, without a coroutine (most requests end
        before WATCH_DELAY); False if it started: then ``aclose`` must be awaited."""
        if self._task is not None:
            return False
        if self._starts is not None:
            self._starts.discard(self)
            self._starts = None
        return True

    async def aclose(self) -> None:
        if self.close_unstarted():
            return
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
