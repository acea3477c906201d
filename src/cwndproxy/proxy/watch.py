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


class ClientWatch:
    """Once the request body is complete, the next ASGI message can only be a disconnect
    (an HTTP/2 client's RST_STREAM arrives as one too). It is awaited for the rest of the
    request: the upstream stream of the moment is cancelled, so the upstream stops working
    for nobody, and a request whose client left before it was forwarded is never sent.

    With ``delay`` the watch starts only after that many seconds (WATCH_DELAY): a request
    done by then never pays for it."""

    def __init__(self, receive: Receive, body: RequestBody, *, delay: float = 0.0) -> None:
        self.stream: UpstreamStream | None = None
        self.left = asyncio.Event()
        self._body = body
        self._receive = receive
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        loop = asyncio.get_running_loop()
        if delay > 0:
            self._timer = loop.call_later(delay, self._start)
        else:
            self._start()

    @property
    def started(self) -> bool:
        return self._task is not None

    def _start(self) -> None:
        self._timer = None
        self._task = asyncio.get_running_loop().create_task(self._watch(self._receive))

    async def _watch(self, receive: Receive) -> None:
        try:
            message = await receive()
        except asyncio.CancelledError:
            raise
        except Exception:  # the server has nothing more for this request: the same
            message = {"type": "http.disconnect"}
        if message["type"] == "http.disconnect":
            self._body.disconnected = True
            self.left.set()
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
        (``delay``) has seen nothing: False."""
        if not self.started:
            return False
        await asyncio.sleep(0)
        if burst and not self.left.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RESET_WAIT):
                    await self.left.wait()
        return self.left.is_set()

    async def aclose(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
